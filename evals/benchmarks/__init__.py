"""One folder per benchmark; each registers itself with ``evals.benchmark.register_benchmark``."""
