"""House rules that code review alone would miss."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_model_package_never_imports_the_harness():
    offenders = [str(p.relative_to(ROOT)) for p in (ROOT / "unilip").rglob("*.py") if "evals" in _imports(p)]
    assert not offenders, f"unilip must not import evals: {offenders}"


def test_model_package_never_runs_the_harness():
    """No `unilip eval ...` subprocess from the model package: studies that evaluate live in evals/studies."""
    offenders = []
    for path in (ROOT / "unilip").rglob("*.py"):
        tree = ast.parse(path.read_text())
        runs_processes = any(
            isinstance(node, (ast.Import, ast.ImportFrom)) and "subprocess" in ast.unparse(node)
            for node in ast.walk(tree)
        )
        mentions_eval = any(
            isinstance(node, ast.Constant) and node.value in ("eval", "evals") for node in ast.walk(tree)
        )
        if runs_processes and mentions_eval:
            offenders.append(str(path.relative_to(ROOT)))
    assert not offenders, f"unilip must not run the harness: {offenders}"


def _calls(path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call):
            yield node, {k.arg: k.value for k in node.keywords}


def test_no_silent_non_strict_loading_or_unsafe_unpickling():
    for path in [*(ROOT / "unilip").rglob("*.py"), *(ROOT / "evals").rglob("*.py")]:
        for call, keywords in _calls(path):
            where = f"{path.relative_to(ROOT)}:{call.lineno}"
            strict = keywords.get("strict")
            assert not (isinstance(strict, ast.Constant) and strict.value is False), (
                f"non-strict state-dict loading at {where}"
            )
            name = ast.unparse(call.func)
            if name.endswith("torch.load") or name == "load" and "torch" in ast.unparse(call):
                only = keywords.get("weights_only")
                assert isinstance(only, ast.Constant) and only.value is True, (
                    f"torch.load without weights_only at {where}"
                )


# ------------------------------------------------------------------------------------------ the import graph
PACKAGES = ("unilip", "evals")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _project_modules() -> dict[str, Path]:
    return {_module_name(p): p for package in PACKAGES for p in (ROOT / package).rglob("*.py")}


def _import_graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports anywhere in its file, inside functions too.

    ``from a.b import c`` is an edge to the module ``a.b.c`` when there is one, else to ``a.b``. A
    package's ``__init__`` is an edge only when it is imported by name (as Python runs it implicitly
    for its sub-modules, but an ``__init__`` that imports nothing of its own cannot close a cycle).
    """
    modules = _project_modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join(anchor + ([base] if base else []))
                targets = [
                    f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names
                ]
            for target in targets:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    edges.add(target)
        graph[name] = edges
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_cycle_finder_finds_a_cycle_through_a_function_level_import():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_among_the_project_modules():
    cycles = _cycles(_import_graph())
    assert not cycles, "import cycles (imports inside functions count): " + "; ".join(" <-> ".join(c) for c in cycles)


def test_judge_client_knows_nothing_of_benchmarks_or_runs():
    graph = _import_graph()
    offenders = {
        module: sorted(t for t in targets if t.startswith(("evals.benchmarks", "evals.runtime", "evals.benchmark")))
        for module, targets in graph.items()
        if module.startswith("evals.judges")
    }
    offenders = {module: targets for module, targets in offenders.items() if targets}
    assert not offenders, f"evals.judges must not import the benchmarks or the runtime: {offenders}"


def test_model_package_imports_nothing_of_the_harness_even_lazily():
    graph = _import_graph()
    offenders = {
        m: sorted(t for t in targets if t.startswith("evals")) for m, targets in graph.items() if m.startswith("unilip")
    }
    assert not {m: t for m, t in offenders.items() if t}, offenders


def test_every_data_file_of_the_harness_ships_by_a_package_data_glob():
    """A new benchmark folder's README, data and templates are packaged with no pyproject edit."""
    import fnmatch

    import tomllib

    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert not [key for key in package_data if key.startswith("evals.benchmarks.")], (
        "benchmark data must ship through the evals.benchmarks globs, not one entry per benchmark"
    )
    unshipped = []
    for path in (ROOT / "evals").rglob("*"):
        if not path.is_file() or path.suffix in (".py", ".pyc") or "__pycache__" in path.parts:
            continue
        relative = path.relative_to(ROOT)
        shipped = False
        for package, patterns in package_data.items():
            package_dir = Path(*package.split("."))
            if relative.is_relative_to(package_dir):
                inside = relative.relative_to(package_dir).as_posix()
                shipped |= any(
                    fnmatch.fnmatchcase(inside, pattern) and inside.count("/") == pattern.count("/")
                    for pattern in patterns
                )
        if not shipped:
            unshipped.append(str(relative))
    assert not unshipped, f"not matched by any package-data glob in pyproject.toml: {unshipped}"
