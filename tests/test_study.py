"""The study's pipeline end to end at toy size (`configs/study.py:tiny`): the sweep trains every
arm, evaluates it (FVD, KVD, the data law, long videos), writes one result JSON per run, the
report and its plots, and a second call resumes instead of training again."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.helpers import ROOT

EVALUATION_FIELDS = {
    "fvd",
    "kvd",
    "law",
    "law_criteria",
    "law_real",
    "jump",
    "brightness_gap",
    "num_generated",
    "num_real",
    "num_frames",
    "protocol",
    "file",
}
RUN_FIELDS = {
    "name",
    "arm",
    "config",
    "fields",
    "seed",
    "steps",
    "final_loss",
    "model_kind",
    "seconds",
    "evaluation",
    "samples",
}


def _sweep(workdir, results, *extra):
    cmd = [
        sys.executable,
        os.path.join(ROOT, "launch", "sweep.py"),
        "--config=configs/study.py:tiny",
        f"--workdir={workdir}",
        "--evaluate",
        f"--results={results}",
        "--jobs=1",
        "--report",
        *extra,
    ]
    run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, (run.stdout + run.stderr)[-4000:]
    return run.stdout + run.stderr


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    base = tmp_path_factory.mktemp("study")
    workdir, results = base / "runs", base / "results"
    log = _sweep(workdir, results)
    return workdir, results, log


def test_every_run_writes_its_result(study):
    _, results, _ = study
    runs = {p.stem: json.loads(p.read_text()) for p in results.glob("*_s*.json")}
    assert set(runs) == {"vf_s0", "vdm_steps_s0", "floor_real_s0"}
    # The floor: no model, FVD between two disjoint sets of real clips; nothing trained.
    floor = runs.pop("floor_real_s0")
    assert floor["arm"] == "floor_real" and floor["steps"] == 0 and "train" not in floor["seconds"]
    assert floor["evaluation"]["fvd"] > 0 and floor["evaluation"]["law"] >= 0.95
    for name, run in runs.items():
        assert RUN_FIELDS <= set(run), (name, RUN_FIELDS - set(run))
        assert run["name"] == name and run["seed"] == 0 and run["steps"] == 6
        assert run["model_kind"] == ("vdm" if name.startswith("vdm") else "videofusion")
        assert np.isfinite(run["final_loss"]) and run["seconds"]["train"] > 0
        ev = run["evaluation"]
        assert EVALUATION_FIELDS <= set(ev), (name, EVALUATION_FIELDS - set(ev))
        assert ev["fvd"] > 0 and np.isfinite(ev["kvd"]) and ev["num_generated"] == 4
        assert 0 <= ev["law"] <= 1 and ev["law_real"] >= 0.95  # Real clips obey their law.
        assert set(ev["law_criteria"]) == {"one_object", "shape", "size", "brightness", "track"}
    # The VideoFusion arm also draws its long videos, with their measures beside real ones.
    (long,) = runs["vf_s0"]["samples"].values()
    assert "_8f_" in long["file"] and 0 <= long["law"] <= 1 and long["law_real"] >= 0.95
    assert long["boundary"] > 0 and 0 <= long["repeats"] <= 1


def test_report_plots_and_resume(study):
    workdir, results, _ = study
    report = (results / "report.md").read_text()
    assert "## RQ1" in report and "| VideoFusion |" in report and "| VDM, as many steps |" in report
    assert "configs/study.py:tiny" in report
    summary = json.loads((results / "report.json").read_text())
    assert set(summary) == {"runs", "floor", "RQ1", "RQ5"} and summary["runs"] == 3
    assert set(summary["floor"]) == {"floor_real"}  # No resampled runs in the tiny study.
    assert summary["floor"]["floor_real"]["fvd"]["n"] == 1
    rq1 = summary["RQ1"]
    assert set(rq1) == {"question", "finding", "stats", "train_seconds", "comparisons"}
    assert set(rq1["stats"]) == {"fvd", "kvd", "law", "jump", "brightness_gap"}
    for measure, arms in rq1["stats"].items():
        assert set(arms) == {"vf", "vdm_steps"}, measure
        for stat in arms.values():
            assert set(stat) == {"values", "mean", "sd", "n"} and stat["n"] == 1, measure
            assert stat["mean"] == stat["values"][0] and stat["sd"] == 0.0
    assert set(rq1["train_seconds"]) == {"vf", "vdm_steps"}
    (comparison,) = rq1["comparisons"]
    assert set(comparison["verdicts"].values()) == {"one seed: no spread"}
    long = summary["RQ5"]["stats"]["long_continue"]  # The tiny study's one method.
    assert long["law"]["n"] == 1 and long["boundary"]["mean"] > 0
    for name in ("fvd_against_time.png", "grid_vf.png", "grid_vdm_steps.png"):
        png = (results / name).read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000, name
    assert f"![{name}]({name})" in report
    # Again: every run's result is there, so nothing trains and the results stay as they were.
    before = {p.name: p.read_bytes() for p in results.glob("*_s*.json")}
    log = _sweep(workdir, results)
    assert {p.name: p.read_bytes() for p in results.glob("*_s*.json")} == before
    assert "sweep: 3 of 3 runs done, 0 to go" in log
