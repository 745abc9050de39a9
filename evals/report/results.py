"""Finding and reading saved results (``results.json``) in run directories."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from evals.files import read_json
from evals.runtime.runner import RESULTS, RESULTS_SCHEMA_VERSION

SCHEMA_FILE = Path(__file__).with_name("results.schema.json")


def check_schema_version(result: Any, path: str | Path) -> None:
    """Refuse a results.json of another major schema version (or not a JSON object at all), naming the fix.

    One without ``schema_version`` was written before it was recorded (version 0): read as before.
    """
    if not isinstance(result, dict):
        raise ValueError(f"{path} is not a results.json (it holds a JSON {type(result).__name__}, not an object)")
    version = result.get("schema_version")
    if version is None:
        return
    major = str(version).split(".", 1)[0]
    if major != RESULTS_SCHEMA_VERSION.split(".", 1)[0]:
        raise ValueError(
            f"{path} has results schema {version}; this unilip reads {RESULTS_SCHEMA_VERSION.split('.')[0]}.x "
            f"(schema {SCHEMA_FILE.name}): read it with the unilip version that wrote it, or upgrade"
        )


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
    """Every result under the given run directories or files, each with its ``_path`` (the results.json) and
    ``_run`` (the argument it was found under, as given: what ``unilip eval compare --label RUN=NAME`` names)."""
    results = []
    for path in paths:
        for file in find_results(path):
            result = read_json(file)
            check_schema_version(result, file)
            result["_path"] = str(file)
            result["_run"] = str(path)
            results.append(result)
    return results


def model_reference(result: dict[str, Any]) -> str:
    """The model's reference as given to ``unilip eval run`` (``tiny``, ``folder:out/x``), without digest."""
    return str(result["model"].get("model", "?"))


def model_digest(result: dict[str, Any]) -> str:
    """The first 8 hex digits of the model's weights sha256 ("" when the run recorded none)."""
    return str(result["model"].get("weights_sha256") or "")[:8]


def model_label(result: dict[str, Any]) -> str:
    """A model named unambiguously: its reference plus a short weights digest (``tiny [f163c4c7]``)."""
    return f"{model_reference(result)} [{model_digest(result)}]"
