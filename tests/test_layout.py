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
        runs_processes = any(isinstance(node, (ast.Import, ast.ImportFrom)) and "subprocess" in ast.unparse(node)
                             for node in ast.walk(tree))
        mentions_eval = any(isinstance(node, ast.Constant) and node.value in ("eval", "evals") for node in ast.walk(tree))
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
            assert not (isinstance(strict, ast.Constant) and strict.value is False), f"non-strict state-dict loading at {where}"
            name = ast.unparse(call.func)
            if name.endswith("torch.load") or name == "load" and "torch" in ast.unparse(call):
                only = keywords.get("weights_only")
                assert isinstance(only, ast.Constant) and only.value is True, f"torch.load without weights_only at {where}"
