"""results.json has a schema: a version every writer records, a JSON Schema file in the package, and readers
that refuse another major version. (tests/conftest.py validates every results.json any test writes.)"""

import json

import jsonschema
import pytest

import evals
from evals.report.results import SCHEMA_FILE, load_results
from evals.runtime.runner import RESULTS_SCHEMA_VERSION


def test_the_schema_is_a_valid_json_schema_and_ships_in_the_package():
    schema = json.loads(SCHEMA_FILE.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["properties"]["schema_version"]["pattern"].startswith("^" + RESULTS_SCHEMA_VERSION.split(".")[0])


def test_a_run_writes_the_version_and_validates(tmp_path):
    (result,) = evals.run("tiny", "recon@standard", tmp_path / "run", data="builtin", no_progress=True)
    written = json.loads((tmp_path / "run" / "recon@standard" / "results.json").read_text())
    assert written["schema_version"] == RESULTS_SCHEMA_VERSION == result["schema_version"]
    jsonschema.validate(written, json.loads(SCHEMA_FILE.read_text()), cls=jsonschema.Draft202012Validator)
    # The schema has teeth: a metric without a value or a reason, or a wrong direction, is refused.
    broken = {**written, "metrics": {**written["metrics"], "psnr": {"se": 0.1}}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, json.loads(SCHEMA_FILE.read_text()), cls=jsonschema.Draft202012Validator)
    broken = {**written, "metric_directions": {"psnr": "up"}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, json.loads(SCHEMA_FILE.read_text()), cls=jsonschema.Draft202012Validator)


def test_readers_refuse_another_major_version_and_read_older_files(tmp_path):
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "results.json").write_text(json.dumps({"schema_version": "2.0", "benchmark": "recon@standard"}))
    with pytest.raises(ValueError, match=r"has results schema 2\.0; this unilip reads 1\.x"):
        load_results([tmp_path / "new"])
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "results.json").write_text(json.dumps({"benchmark": "recon@standard"}))
    assert load_results([tmp_path / "old"])[0]["benchmark"] == "recon@standard"
    (tmp_path / "list").mkdir()
    (tmp_path / "list" / "results.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="not a results.json"):
        load_results([tmp_path / "list"])
