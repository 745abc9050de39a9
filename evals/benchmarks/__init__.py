"""One folder per benchmark; each registers itself with ``evals.benchmark.register_benchmark``.

A folder's name is its benchmark's name. ``kit.py`` (statistics, PNG outputs, release files, limits, safe
paths) and ``judged.py`` (the base of judge-scored benchmarks) are what benchmarks share; they are
modules, not folders, so the registry never takes them for benchmarks.
"""
