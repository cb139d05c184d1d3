"""The study's report from result JSONs alone (`launch/study.py`): the numbers it aggregates over
seeds, its verdicts, the floor, the long-video section and every field of `report.json`, on
records made up here with known values (the pipeline that writes real ones: test_study.py)."""

import json
import os
import sys

import pytest

from tests.helpers import ROOT

sys.path.insert(0, os.path.join(ROOT, "launch"))

import study  # noqa: E402  (launch/study.py)

CONFIG = os.path.join(ROOT, "configs", "study.py")


def _record(name, arm, seed, fvd, law, train=100.0, samples=None, **extra):
    return {
        "name": name,
        "arm": arm,
        "config": "configs/study.py",
        "fields": {"seed": seed},
        "seed": seed,
        "steps": 500,
        "final_loss": 0.1,
        "model_kind": "vdm" if arm.startswith("vdm") else "videofusion",
        "seconds": {"train": train, "evaluate": 50.0},
        "evaluation": {
            "fvd": fvd,
            "kvd": fvd / 20,
            "law": law,
            "law_real": 1.0,
            "jump": 1.0 + law / 10,
            "brightness_gap": 0.01,
            **extra,
        },
        "samples": samples or {},
    }


def _long(law, appearance):
    return {
        "long_continue": {
            "law": law,
            "law_real": 1.0,
            "boundary": 1.0,
            "repeats": 0.0,
            "appearance_change": appearance,
        },
        "long_shared_base": {
            "law": law / 2,
            "law_real": 1.0,
            "boundary": 1.5,
            "repeats": 0.0,
            "appearance_change": appearance * 2,
        },
    }


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    folder = tmp_path_factory.mktemp("results")
    records = [
        # vf: FVD 50 and 52, clearly under vdm_steps' 100 and 104: the paper's finding holds.
        _record("vf_s0", "vf", 0, 50.0, 0.6, samples=_long(0.5, 0.02)),
        _record("vf_s1", "vf", 1, 52.0, 0.5, samples=_long(0.7, 0.04)),
        _record("vdm_steps_s0", "vdm_steps", 0, 100.0, 0.2, train=80.0),
        _record("vdm_steps_s1", "vdm_steps", 1, 104.0, 0.3, train=84.0),
        # lam05 worse than vf by far more than the spread: RQ3's finding reversed on FVD.
        _record("lam05_s0", "lam05", 0, 90.0, 0.55),
        _record("lam05_s1", "lam05", 1, 92.0, 0.55),
        # Within the spread of vf.
        _record("key_latent_s0", "key_latent", 0, 40.0, 0.5),
        _record("key_latent_s1", "key_latent", 1, 64.0, 0.6),
        # The floor and vf_s0 resampled (its own evaluation joins them).
        _record("floor_real_s0", "floor_real", 0, 10.0, 1.0),
        _record("floor_real_s1", "floor_real", 1, 14.0, 1.0),
        _record("vf_resampled_g1", "vf_resampled", 0, 54.0, 0.6),
    ]
    for r in records:
        (folder / f"{r['name']}.json").write_text(json.dumps(r))
    paths = study.write_report(CONFIG, folder)
    return folder, paths


def test_report_json_fields_and_numbers(report):
    folder, paths = report
    assert paths[0] == str(folder / "report.md")
    summary = json.loads((folder / "report.json").read_text())
    assert set(summary) == {"runs", "floor", "RQ1", "RQ2", "RQ3", "RQ4", "ours", "RQ5"}
    assert summary["runs"] == 11
    rq1 = summary["RQ1"]
    assert set(rq1) == {"question", "finding", "stats", "train_seconds", "comparisons"}
    assert set(rq1["stats"]) == {"fvd", "kvd", "law", "jump", "brightness_gap"}
    assert set(rq1["stats"]["fvd"]) == {"vf", "vdm_steps", "lam05"}  # Its arms that ran, only.
    vf = rq1["stats"]["fvd"]["vf"]
    assert set(vf) == {"values", "mean", "sd", "n"}
    assert vf["values"] == [50.0, 52.0] and vf["mean"] == 51.0 and vf["n"] == 2
    assert vf["sd"] == pytest.approx(2**0.5)
    assert rq1["train_seconds"] == {"vf": 100.0, "vdm_steps": 82.0, "lam05": 100.0}
    first = rq1["comparisons"][0]
    assert (first["better"], first["worse"]) == ("vf", "vdm_steps")
    assert first["verdicts"]["fvd"] == "holds" and first["verdicts"]["law"] == "holds"
    # An arm with no runs: 'not run', never a verdict.
    assert rq1["comparisons"][1]["verdicts"]["fvd"] == "not run"
    rq3 = {(c["better"], c["worse"]): c["verdicts"] for c in summary["RQ3"]["comparisons"]}
    assert rq3[("lam05", "vf")]["fvd"] == "reversed"
    ours = summary["ours"]["comparisons"][0]["verdicts"]
    assert ours["fvd"] == "within the spread"
    # The floor: real against real over its draws; the resampled arm counts vf_s0's own FVD.
    assert summary["floor"]["floor_real"]["fvd"]["values"] == [10.0, 14.0]
    assert sorted(summary["floor"]["vf_resampled"]["fvd"]["values"]) == [50.0, 54.0]
    # Long videos: per method over the vf runs that drew them; continue beats shared_base.
    rq5 = summary["RQ5"]
    assert rq5["stats"]["long_continue"]["law"]["values"] == [0.5, 0.7]
    assert rq5["stats"]["long_shared_base"]["appearance_change"]["mean"] == pytest.approx(0.06)
    (long,) = rq5["comparisons"]
    assert long["verdicts"]["boundary"] == "reversed"  # The paper's method is the better.


def test_report_markdown_and_plots(report):
    folder, paths = report
    text = (folder / "report.md").read_text()
    assert "11 finished runs" in text
    assert "| VideoFusion | 51.000 ± 1.414 (n=2)" not in text  # Two digits past 10: 51.0.
    assert "| VideoFusion | 51.0 ± 1.4 (n=2) |" in text
    assert "- VideoFusion against VDM, as many steps: FVD: holds" in text
    assert "| two disjoint sets of real clips, three draws (10.0, 14.0) | 12.0 ± 2.8 (n=2)" in text
    assert "docs/miniature" in text
    # The headline: one row per comparison, first in the report.
    assert text.index("## Headline") < text.index("## What difference is noise")
    assert (
        "| RQ1 | VideoFusion beats the VDM baseline (lower FVD). | VideoFusion | VDM, as many "
        "steps | 51.0 ± 1.4 (n=2) vs 102.0 ± 2.8 (n=2): **holds** | 0.550 ± 0.071 (n=2) vs "
        "0.250 ± 0.071 (n=2): **holds** |" in text
    )
    assert "| RQ5 |" in text and "appearance 0.060 ± 0.028 (n=2) vs 0.030 ± 0.014" in text
    for name in ("fvd_against_lambda.png", "fvd_against_time.png"):
        assert str(folder / name) in paths
        png = (folder / name).read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000
        assert f"![{name}]({name})" in text


def test_verdict_rules():
    one = {"mean": 1.0, "sd": 0.0, "n": 1}
    a, b = {"mean": 10.0, "sd": 1.0, "n": 3}, {"mean": 20.0, "sd": 1.0, "n": 3}
    assert study.verdict(a, b, False) == "holds"  # Lower FVD is better.
    assert study.verdict(b, a, False) == "reversed"
    assert study.verdict(a, {**b, "sd": 9.5}, False) == "within the spread"
    assert study.verdict(a, one, False) == "one seed: no spread"
    assert study.verdict(None, a, False) == "not run"
    # Nearer 1 is better (a jump ratio): 1.1 beats 0.7.
    near = {"mean": 1.1, "sd": 0.05, "n": 3}
    assert study.verdict(near, {**near, "mean": 0.7}, None) == "holds"
    assert study.verdict({**near, "mean": 0.7}, near, None) == "reversed"
