"""A judge endpoint that is down: found out fast, the run stops with one clear error, and nothing unasked is failed."""

import json
import logging
import socket
import threading
import time
from pathlib import Path

import pytest
from judge_server import JudgeServer, answer
from test_wise import GOOD, PROMPTS, prompt_id_of, run_wise, write_wise_repo

from evals.benchmark import get_benchmark
from evals.judges import JudgeClient, JudgeConfig, JudgeConfigError, JudgeImage, JudgeRequest, JudgeUnreachable
from evals.judges.client import UNREACHABLE_AFTER_SILENT_CALLS

FIX = "start it or fix judge_base_url, then run the same command to resume"


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released: connecting is refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def digit(text):
    return {"value": int(text.strip()[0])}


def jobs(count):
    return [(i, (lambda i=i: JudgeRequest(text=f"item {i}", images=(JudgeImage(b"png bytes"),)))) for i in range(count)]


def records(bench_dir: Path, stage: str) -> dict[str, dict]:
    return {
        json.loads(path.read_text())["id"]: json.loads(path.read_text()) for path in (bench_dir / stage).glob("*.json")
    }


def wise_answer(call, delay_s=0.0):
    return answer(GOOD.get(prompt_id_of(call), "Consistency: 1\nRealism: 1\nAesthetic Quality: 1"), delay_s=delay_s)


def test_closed_port_fails_at_once_without_asking_or_failing_any_item():
    port = closed_port()
    client = JudgeClient(
        JudgeConfig(
            model="judge", base_url=f"http://127.0.0.1:{port}/v1", max_retries=5, backoff_base_s=1.0, concurrency=4
        )
    )
    started = time.monotonic()
    yielded = []
    with pytest.raises(JudgeUnreachable) as error:
        for pair in client.judge_many(jobs(20), digit):
            yielded.append(pair)
    assert time.monotonic() - started < 2.0  # retrying each of 20 items with 1 s backoff would take minutes
    assert yielded == []
    assert str(error.value).startswith(f"judge at http://127.0.0.1:{port} unreachable (") and FIX in str(error.value)
    assert isinstance(error.value, ConnectionError)  # the CLI maps it to one line and exit code 2
    with pytest.raises(JudgeUnreachable, match="unreachable"):
        client.check_reachable()


def test_wise_run_against_a_closed_port_stops_fast_and_records_no_judge_failure(tmp_path):
    data = write_wise_repo(tmp_path / "WISE")

    class Closed:  # what run_wise needs of a server: its address
        base_url = f"http://127.0.0.1:{closed_port()}/v1"

    started = time.monotonic()
    with pytest.raises(JudgeUnreachable, match="unreachable") as error:
        run_wise(
            data,
            tmp_path / "run",
            Closed(),
            judge_max_retries=5,
            judge_config={"backoff_base_s": 1.0, "backoff_max_s": 4.0},
        )
    assert time.monotonic() - started < 10.0
    assert FIX in str(error.value)
    bench_dir = tmp_path / "run" / "wise@legacy"
    assert len(records(bench_dir, "produce")) == len(PROMPTS)  # generation finished and is kept
    assert records(bench_dir, "judge") == {}  # every item stays to do: no judge_error for unasked items


def test_judge_going_down_mid_run_stops_it_keeps_what_was_judged_and_the_rerun_asks_the_rest(tmp_path, caplog):
    data = write_wise_repo(tmp_path / "WISE")
    answered = []
    server = JudgeServer(lambda call: wise_answer(call))

    def responder(call):
        answered.append(call.key)
        if len(answered) == 3:  # the third answer goes out, then the server is gone
            threading.Thread(target=server.stop).start()
        return wise_answer(call, delay_s=0.02)

    server.responder = responder
    caplog.set_level(logging.WARNING)
    with server:
        started = time.monotonic()
        with pytest.raises(JudgeUnreachable) as error:
            run_wise(data, tmp_path / "run", server, judge_concurrency=2, judge_max_retries=4)
        elapsed = time.monotonic() - started
    assert elapsed < 5.0, elapsed
    assert "no HTTP response to the last" in str(error.value) and FIX in str(error.value)
    assert "judging stopped, judge unreachable" in caplog.text
    bench_dir = tmp_path / "run" / "wise@legacy"
    judged = records(bench_dir, "judge")
    assert all(record["status"] == "ok" for record in judged.values())  # the others stay to do, not failed
    assert 0 < len(judged) <= len(answered) < len(PROMPTS)
    first_keys = set(server.calls)

    # The judge is back (another address: the endpoint is not part of the spec); the same command resumes.
    with JudgeServer(wise_answer) as again:
        results, _, adapter = run_wise(data, tmp_path / "run", again, judge_concurrency=2)
    assert adapter.calls == []  # no image made again
    assert results["coverage"]["ok"] == len(PROMPTS) and results["failures"] == {}
    # No request the first server answered is asked again (kept as records or in the answer cache).
    assert first_keys.isdisjoint(again.calls) and len(first_keys | set(again.calls)) == len(PROMPTS)


def test_a_blip_shorter_than_one_requests_retries_does_not_stop_judging():
    with JudgeServer(lambda call: answer("1", delay_s=0.02)) as server:
        client = JudgeClient(
            JudgeConfig(
                model="judge",
                base_url=server.base_url,
                max_retries=6,
                backoff_base_s=0.1,
                backoff_max_s=0.4,
                concurrency=2,
            )
        )
        results = {}
        for tag, judgement in client.judge_many(jobs(8), digit):
            results[tag] = judgement
            if len(results) == 1:  # down for 0.3 s, back at the same address within one request's retries
                server.stop()
                threading.Timer(0.3, server.start).start()
    assert sorted(results) == list(range(8)) and all(j.ok for j in results.values())
    assert max(j.http_calls for j in results.values()) > 1  # some requests did meet the outage


def test_silence_needs_several_calls_so_one_failed_request_alone_is_a_judge_error():
    # One request with one retry meets a closed port: 2 silent calls, fewer than the threshold.
    assert UNREACHABLE_AFTER_SILENT_CALLS == 3
    with JudgeServer(lambda call: answer("1")) as server:
        client = JudgeClient(
            JudgeConfig(model="judge", base_url=server.base_url, max_retries=1, backoff_base_s=0.01, backoff_max_s=0.02)
        )
        assert client.judge(JudgeRequest(text="warm-up"), digit).ok
        server.stop()
        judgement = client.judge(JudgeRequest(text="after"), digit)
        assert judgement.state == "judge_error" and "no response" in judgement.error
        with pytest.raises(JudgeUnreachable):  # the next request makes it 4 silent calls in a row
            client.judge(JudgeRequest(text="again"), digit)


def test_preflight_refuses_a_missing_key_and_only_warns_about_a_judge_that_is_down(tmp_path, monkeypatch, caplog):
    for name in ("UNILIP_JUDGE_API_KEY", "OPENAI_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    data = write_wise_repo(tmp_path / "WISE")
    bench, variant = get_benchmark("wise@legacy")
    remote = bench.resolve(variant, {"data": str(data), "judge_base_url": "https://judge.example.org/v1"}, None)
    with pytest.raises(JudgeConfigError, match="no API key for the judge at https://judge.example.org"):
        remote.preflight()
    monkeypatch.setenv("UNILIP_JUDGE_API_KEY", "sk-one\nsk-two-pasted-from-a-file")
    with pytest.raises(JudgeConfigError, match="UNILIP_JUDGE_API_KEY contains a line break") as error:
        remote.preflight()
    assert "sk-one" not in str(error.value) and "\n" not in str(error.value)
    monkeypatch.delenv("UNILIP_JUDGE_API_KEY")
    caplog.set_level(logging.WARNING)
    port = closed_port()
    local = bench.resolve(variant, {"data": str(data), "judge_base_url": f"http://127.0.0.1:{port}/v1"}, None)
    local.preflight()  # a loopback judge needs no key; down now is a warning, not a refusal
    assert f"judge at http://127.0.0.1:{port} unreachable" in caplog.text
    with JudgeServer(lambda call: answer("1")) as server:
        up = bench.resolve(variant, {"data": str(data), "judge_base_url": server.base_url}, None)
        caplog.clear()
        up.preflight()
        assert server.probes == 1 and server.total_calls == 0 and "unreachable" not in caplog.text
