"""Comparison tables and the regression gate."""

import copy
import io
import json

import pandas as pd
import pytest

import unilip.cli as unilip_cli
from evals.report.compare import build_comparison, render
from evals.report.gate import FAIL, PASS, REFUSED, judge, load_rules

RULES = {"benchmark": "recon@standard", "metrics": {"psnr": {"max_drop": 0.05}, "ssim": {"max_drop": 0.002}}}


def _result(psnr=20.0, ssim=0.6, fingerprint="f" * 16, variant="standard", model="tiny", missing=0):
    return {
        "benchmark": f"recon@{variant}",
        "spec": {"fingerprint": fingerprint, "knobs": {"resolution": 56}},
        "model": {"model": model, "weights_sha256": "ab" * 32},
        "coverage": {
            "expected": 10,
            "ok": 10 - missing,
            "failed": 0,
            "missing": missing,
            "fraction": (10 - missing) / 10,
        },
        "metrics": {
            "psnr": {"value": psnr, "se": 0.1, "n": 10},
            "ssim": {"value": ssim, "se": 0.01, "n": 10},
            "rfid": {"status": "not_computed", "reason": "no Inception weights here"},
        },
        "metric_order": ["psnr", "ssim", "rfid"],
        "metric_directions": {"psnr": "higher", "ssim": "higher", "rfid": "lower"},
        "_path": f"runs/{model}-{variant}-{fingerprint[:4]}/recon@{variant}/results.json",
        "_run": f"runs/{model}-{variant}-{fingerprint[:4]}",
    }


def test_gate_passes_identical_run():
    verdict = judge(_result(), _result(), RULES)
    assert verdict.code == PASS and all(c["ok"] for c in verdict.checks)


def test_gate_fails_degraded_run():
    verdict = judge(_result(psnr=19.9), _result(), RULES)
    assert verdict.code == FAIL
    assert [c["metric"] for c in verdict.checks if not c["ok"]] == ["psnr"]
    assert "BROKEN" in verdict.markdown()


def test_gate_tolerates_change_within_rule():
    assert judge(_result(psnr=19.96, ssim=0.599), _result(), RULES).code == PASS


def test_gate_refuses_incomplete_or_mismatched_runs():
    assert judge(_result(missing=1), _result(), RULES).code == REFUSED
    other = judge(_result(fingerprint="0" * 16), _result(), RULES)
    assert other.code == REFUSED and "fingerprint" in other.reasons[0]
    rules = copy.deepcopy(RULES)
    rules["metrics"]["rfid"] = {"max_increase": 0.05}
    refused = judge(_result(), _result(), rules)
    assert refused.code == REFUSED and "rfid is not computed" in refused.reasons[0]


def test_rules_are_validated(tmp_path):
    path = tmp_path / "rules.yaml"
    path.write_text("metrics:\n  psnr: {max_fall: 0.1}\n")
    with pytest.raises(ValueError, match="max_drop or max_increase"):
        load_rules(path)


def _wise(model="tiny", overall=0.61):
    """A WISE result as results.json stores it: keys sorted, so ``overall`` is not first but for metric_order."""
    metrics = {
        "chemistry": {"value": 0.5, "se": 0.02, "n": 100},
        "cultural": {"value": 0.7, "se": 0.02, "n": 400},
        "overall": {"value": overall, "se": 0.015, "n": 1000, "warnings": ["prompts differ from the release"]},
        "space": {"value": 0.6, "se": 0.03, "n": 100},
    }
    return {
        "benchmark": "wise@legacy",
        "spec": {"fingerprint": "c" * 16, "version": "1", "knobs": {}},
        "model": {"model": model, "weights_sha256": "ab" * 32},
        "coverage": {"expected": 1000, "ok": 1000, "failed": 0, "missing": 0, "fraction": 1.0},
        "metrics": metrics,
        "metric_order": ["overall", "cultural", "space", "chemistry"],
        "metric_directions": dict.fromkeys(metrics, "higher"),
        "_path": f"runs/{model}/wise@legacy/results.json",
        "_run": f"runs/{model}",
    }


def _md_rows(text):
    return [line for line in text.splitlines() if line.startswith("|")]


def test_compare_never_mixes_variants_in_a_column():
    results = [
        _result(variant="standard", fingerprint="a" * 16),
        _result(variant="upstream", fingerprint="b" * 16),
        _result(model="other", variant="standard", fingerprint="a" * 16, psnr=21.0),
    ]
    comparison = build_comparison(results)
    assert comparison.groups == ["recon@standard", "recon@upstream"]
    assert comparison.rows == ["tiny", "other"]  # one row per model, named without the digest
    for fmt in ("md", "csv", "tex", "html"):
        text = render(results, fmt)
        assert "recon@upstream" in text and "21" in text
    table = render(results, "md")
    assert len(_md_rows(table)) == 5  # groups, rule, metrics, two models
    assert "aaaaaaaa" not in "".join(_md_rows(table)) and "spec aaaaaaaa" in table  # fingerprints in a footnote


def test_two_fingerprints_of_one_variant_are_two_groups_with_what_differs():
    other = _result(fingerprint="b" * 16)
    other["spec"]["knobs"]["resolution"] = 256
    comparison = build_comparison([_result(fingerprint="a" * 16), other])
    assert comparison.groups == ["recon@standard (1)", "recon@standard (2)"]
    assert any("resolution (56 / 256)" in note and "aaaaaaaa" in note for note in comparison.notes)


def test_headline_first_and_directions():
    results = [_wise(), _result()]
    comparison = build_comparison(results)
    wise = [c.metric for c in comparison.columns if c.group == "wise@legacy"]
    assert wise == ["overall", "cultural", "space", "chemistry"]
    metrics_row = _md_rows(render(results, "md"))[2]
    assert "psnr ↑" in metrics_row and "rfid ↓" in metrics_row and "overall ↑" in metrics_row
    tex = render(results, "tex")
    assert r"rfid $\downarrow$" in tex and r"psnr $\uparrow$" in tex
    # An older results.json (no metric_order, no directions): the stored order, higher is better.
    old = _wise()
    del old["metric_order"], old["metric_directions"]
    assert [c.metric for c in build_comparison([old]).columns][0] == "chemistry"
    assert all(c.direction == "higher" for c in build_comparison([old]).columns)


def test_labels_and_disambiguation():
    results = [_result(), _result(model="vae")]
    assert build_comparison(results, labels=["runs/vae-standard-ffff=SD VAE"]).rows == ["tiny", "SD VAE"]
    other_weights = _result(model="tiny")
    other_weights["model"]["weights_sha256"] = "cd" * 32
    other_weights["_run"] = "runs/elsewhere"
    rows = build_comparison([_result(), other_weights]).rows
    assert rows == ["tiny [abababab]", "tiny [cdcdcdcd]"]  # two models, one reference: the digest tells
    with pytest.raises(ValueError, match="none of the runs given"):
        build_comparison(results, labels=["runs/nowhere=x"])


def test_metrics_selection_and_unknown_names():
    results = [_wise(), _result()]
    comparison = build_comparison(results, metrics="ssim,wise@legacy:overall,psnr")
    assert [c.qualified for c in comparison.columns] == [
        "wise@legacy:overall",
        "recon@standard:ssim",
        "recon@standard:psnr",
    ]
    with pytest.raises(ValueError, match="did you mean psnr"):
        build_comparison(results, metrics="psnrr")
    only_wise = build_comparison([_wise(), _result(model="vae")], metrics=["overall"])
    assert only_wise.rows == ["tiny"] and [c.group for c in only_wise.columns] == ["wise@legacy"]


def test_one_footnote_per_shared_reason():
    comparison = build_comparison([_result(), _result(model="vae"), _wise(), _wise(model="vae")])
    reasons = [note for note in comparison.notes if "no Inception weights here" in note]
    assert reasons == ["recon@standard rfid: not computed for tiny, vae: no Inception weights here"]
    assert [note for note in comparison.notes if "prompts differ" in note] == [
        "wise@legacy (tiny, vae): prompts differ from the release"
    ]


def test_csv_loads_as_numbers():
    results = [_result(), _result(model="vae", psnr=21.5), _wise()]
    frame = pd.read_csv(io.StringIO(render(results, "csv")))
    for column in ("recon@standard:psnr:value", "recon@standard:psnr:se", "wise@legacy:overall:value"):
        assert frame[column].dtype == float, column
    assert frame["recon@standard:psnr:value"].tolist() == [20.0, 21.5]
    assert frame["recon@standard:rfid:value"].isna().all()  # not computed: empty
    assert frame["recon@standard:coverage_ok"].tolist() == [10, 10]
    rounded = pd.read_csv(io.StringIO(render([_result(psnr=20.123456)], "csv", precision=["psnr=2"])))
    assert rounded["recon@standard:psnr:value"].tolist() == [20.12]


def test_precision():
    table = render([_result(psnr=20.123456)], "md", precision=["4", "ssim=1"])
    assert "20.1235 ± 0.1000" in table and "0.6 ± 0.0" in table
    assert "20.1 ± 0.10" in render([_result(psnr=20.123456)], "md")  # 3 significant digits, 2 for se
    with pytest.raises(ValueError, match="did you mean"):
        render([_result()], "md", precision=["psnx=2"])
    with pytest.raises(ValueError, match="digits after the point"):
        render([_result()], "md", precision=["psnr=two"])


def test_latex_is_booktabs_and_escaped():
    tricky = "a&b%c$d#e_f{g}h~i^j"
    results = [_result(), _result(model="vae")]
    tex = render(results, "tex", labels=[f"runs/vae-standard-ffff={tricky}"])
    for rule in (r"\toprule", r"\midrule", r"\bottomrule", r"\multicolumn{3}{c}{recon@standard}"):
        assert rule in tex
    row = next(line for line in tex.splitlines() if line.startswith("a\\&"))
    label = row.split(" & ")[0]
    assert label == r"a\&b\%c\$d\#e\_f\{g\}h\textasciitilde i\textasciicircum j"
    assert "&" not in label.replace(r"\&", "")  # no raw & in the label cell
    assert r"$20.0 \pm 0.10$" in tex
    assert r"a\&b\%c" in tex.split(r"\end{tabular}")[1]  # the footnotes are escaped too


def test_html_groups_columns():
    page = render([_result(), _wise()], "html")
    assert 'colspan="3"' in page and 'colspan="4"' in page and "psnr ↑" in page


def test_cli_compare(tmp_path, capsys):
    for name, result in (("a", _result()), ("b", _result(model="vae"))):
        folder = tmp_path / name / "recon@standard"
        folder.mkdir(parents=True)
        (folder / "results.json").write_text(json.dumps(result))
    runs = [str(tmp_path / "a"), str(tmp_path / "b")]
    code = unilip_cli.main(["eval", "compare", *runs, "--label", f"{runs[1]}=SD VAE", "--metrics", "psnr"])
    out = capsys.readouterr().out
    assert code == 0 and "| SD VAE | 20.0 ± 0.10 |" in out and "ssim" not in _md_rows(out)[2]
    code = unilip_cli.main(["eval", "compare", *runs, "--metrics", "psnrr"])
    err = capsys.readouterr().err
    assert code == 2 and "did you mean psnr" in err and len(err.strip().splitlines()) == 1


def test_results_json_keeps_the_benchmarks_order_and_directions(tmp_path):
    from evals.benchmark import Benchmark, BenchmarkSpec, ResolvedBenchmark
    from evals.files import read_json
    from evals.runtime.runner import RESULTS, aggregate_run

    class Distances(Benchmark):
        name, version, variants, capability = "distances", "1", {"v": None}, "reconstruct"
        lower_is_better = frozenset({"fid"})

        def build(self, variant, options, model):
            raise NotImplementedError

        def produce_fingerprint(self, resolved, model):
            return "p"

        def produce(self, resolved, items, ctx):
            raise NotImplementedError

        def score(self, resolved, items, ctx):
            raise NotImplementedError

        def aggregate(self, resolved, records, bench_dir):
            return {"psnr": {"value": 1.0}, "fid": {"value": 2.0}, "is": {"value": 3.0}}

    resolved = ResolvedBenchmark(Distances(), BenchmarkSpec("distances", "v", "1", {}), ())
    aggregate_run(resolved, [], tmp_path, {"adapter": "fake", "model": "m", "weights_sha256": "0" * 64}, {})
    saved = read_json(tmp_path / RESULTS)
    assert list(saved["metrics"]) == ["fid", "is", "psnr"]  # written with sorted keys
    assert saved["metric_order"] == ["psnr", "fid", "is"]
    assert saved["metric_directions"] == {"psnr": "higher", "fid": "lower", "is": "higher"}
    assert [c.metric for c in build_comparison([{**saved, "_path": "x"}]).columns] == ["psnr", "fid", "is"]
