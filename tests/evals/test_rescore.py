"""A changed judge re-judges in place and never regenerates (`unilip eval run --rescore`)."""

from pathlib import Path

import pytest
from judge_server import JudgeServer
from test_wise import FakeGenerator, run_wise, wise_judge, write_wise_repo

from evals.benchmark import get_benchmark
from evals.runtime.distributed import World
from evals.runtime.runner import RunDirectoryError, run_benchmark


def test_rescore_redoes_judging_only(tmp_path):
    data = write_wise_repo(tmp_path / "WISE")
    with JudgeServer(wise_judge) as server:
        first, spec, adapter = run_wise(data, tmp_path / "run", server, judge_model="judge-a")
        calls_before = server.total_calls
        assert adapter.calls and first["coverage"]["ok"] > 0
        bench, variant = get_benchmark("wise@legacy")
        options = {
            "data": str(data),
            "judge_base_url": server.base_url,
            "judge_max_retries": 1,
            "judge_config": {"backoff_base_s": 0.01, "backoff_max_s": 0.02},
            "judge_model": "judge-b",
        }
        again = FakeGenerator()
        changed = bench.resolve(variant, options, again)
        assert changed.spec.fingerprint != spec.fingerprint

        def run(**kw):
            return run_benchmark(
                changed,
                again,
                Path(tmp_path / "run") / changed.name,
                World(0, 1),
                1,
                tmp_path / "run" / "cache",
                progress=False,
                **kw,
            )

        with pytest.raises(RunDirectoryError, match="--rescore"):
            run()
        second = run(rescore=True)
    assert again.calls == []  # not one image generated again
    # Every item judged again by the new judge: the same calls as the first run's judging (same scripted answers).
    assert server.total_calls - calls_before == calls_before
    assert second["spec"]["fingerprint"] == changed.spec.fingerprint
    assert second["coverage"]["ok"] == first["coverage"]["ok"]
