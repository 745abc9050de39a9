"""Finding and reading saved results (``results.json``) in run directories."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from evals.files import read_json
from evals.runtime.runner import RESULTS


def find_results(path: str | Path) -> list[Path]:
    """``results.json`` files under a run directory (or the file itself)."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such run directory or results file")
    found = sorted(path.glob(f"*/{RESULTS}")) + sorted(path.glob(RESULTS))
    if not found:
        raise FileNotFoundError(
            f"{path}: holds no {RESULTS} (has the run finished its aggregate step? see `unilip eval status {path}`)"
        )
    return found


def load_results(paths: list[str | Path]) -> list[dict[str, Any]]:
    """Every result under the given run directories or files, each with its ``_path``."""
    results = []
    for path in paths:
        for file in find_results(path):
            result = read_json(file)
            result["_path"] = str(file)
            results.append(result)
    return results


def model_label(result: dict[str, Any]) -> str:
    """How a model is named in tables: its reference plus a short weights digest."""
    model = result["model"]
    return f"{model.get('model', '?')} [{model.get('weights_sha256', '')[:8]}]"
