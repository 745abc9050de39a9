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


def test_no_silent_non_strict_loading_or_unsafe_unpickling():
    for path in (ROOT / "unilip").rglob("*.py"):
        text = path.read_text()
        assert "strict=False" not in text, path
        for line in text.splitlines():
            if "torch.load(" in line:
                assert "weights_only=True" in line, f"{path}: {line.strip()}"
