"""The benchmark suite: the toy suite end to end on the CPU (every field of its report), cases
that fail, run out of memory or overrun their limit, and the peer scripts' result lines."""

import json
import os
import subprocess
import sys

import pytest

from tests.helpers import ROOT
from vfjax.bench import isolate, report, suite

# The toy suite's cases run here: each kind of case, and both sides of each ratio. Left out: the
# peer architecture's sampling and its second train case (the same program as its first at the
# toy size), each a process, a compile and a run of code that the cases here run already.
TINY_CASES = (
    "env",
    "peer_check",
    "train_vf",
    "train_vdm",
    "peer_arch_b4",
    "peer_train",
    "sample_vf",
    "sample_vdm",
    "peer_sample",
)


def test_tiny_suite_reports_every_field(tmp_path):
    out = tmp_path / "suite"
    # As `python -m vfjax.bench suite --tiny --cases=...` runs them (every case: ~100 s alone).
    cases = f"--cases={','.join(TINY_CASES)}"
    cmd = [sys.executable, "-m", "vfjax.bench", "suite", "--tiny", f"--out={out}", cases]
    run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    r = json.loads((out / "suite.json").read_text())
    print(f"tiny suite: {r['wall_s']:.0f} s")
    assert r["suite"] == "tiny" and r["complete"] and r["wall_s"] > 0

    env = r["environment"]
    assert env["device"].startswith("cpu") and env["num_devices"] >= 1
    assert env["peak_tflops_per_device"] is None  # No bf16 peak is known for a CPU.
    assert {"python", "jax", "jaxlib", "flax", "numpy"} <= set(env["versions"])
    assert "--xla_backend_optimization_level=0" in env["xla_env"]["XLA_FLAGS"]
    # torch and diffusers import, or the reason they do not.
    assert (
        {"cuda", "torch", "diffusers"} <= set(r["peer"])
        if r["peer"]["imports"]
        else r["peer"]["error"]
    )

    selected = [c.name for c in suite.cases(tiny=True) if c.name.startswith(TINY_CASES)]
    assert [c["name"] for c in r["cases"]] == selected
    assert "sample_peer_arch" not in selected and "peer_arch_b16" not in selected
    peer_can_run = r["peer"]["imports"] and r["peer"]["cuda"]
    for case in r["cases"]:
        assert {"kind", "what", "batch", "config", "status", "error", "wall_s"} <= set(case)
        if case["kind"] == "info":
            assert case["status"] == "ok", case
            continue
        assert set(report.FIELDS) <= set(case), case["name"]
        if case["kind"].startswith("peer") and not peer_can_run:
            assert case["status"] == "skipped" and case["error"], case
            assert all(case[f] is None for f in report.FIELDS)
            continue
        assert case["status"] == "ok", case
        for field in ("time_s", "videos_per_s", "peak_memory_gib"):
            assert case[field] > 0, (case["name"], field)
        if not case["kind"].startswith("peer"):
            assert case["compile_s"] > 0 and case["tflops"] > 0 and case["mfu"] is None
            assert case["videos_per_s"] == pytest.approx(case["batch"] / case["time_s"])
            result = json.loads((out / "cases" / f"{case['name']}.json").read_text())
            assert result["device"].startswith("cpu")

    # The cases' own reports (`python -m vfjax.bench`, as run on its own): timings, FLOPs and
    # memory of the train step, and sampling latency, each consistent with the others.
    train = json.loads((out / "cases" / "train_vf.json").read_text())
    assert train["device"].startswith("cpu") and len(train["step_times_s"]) == 2
    assert train["model_flops_per_step"] > 0 and train["step_time_s"] > 0
    assert train["videos_per_s"] == pytest.approx(train["batch_size"] / train["step_time_s"])
    tflops = train["model_flops_per_step"] / train["step_time_s"] / 1e12
    assert train["achieved_tflops"] == pytest.approx(tflops)
    assert train["mfu"] is None and train["peak_memory_bytes"] > 0 and train["compile_s"] > 0
    log = (out / "cases" / "train_vf.log").read_text()
    assert "videos/s" in log and "TFLOP/step" in log
    sampled = json.loads((out / "cases" / "sample_vf.json").read_text())
    assert sampled["sample_latency_s"] > 0 and sampled["sample_videos_per_s"] > 0

    ratios = {q["name"]: q for q in r["ratios"]}
    assert len(ratios) == len(report.RATIOS)
    for q in ratios.values():
        assert (q["value"] is None) == (q["why_none"] is not None), q
    assert ratios["VideoFusion/VDM train peak memory"]["value"] > 0
    assert ratios["VideoFusion/VDM sampling latency"]["paper"] == report.PAPER_LATENCY_RATIO
    assert ratios["VideoFusion/VDM sampling latency"]["value"] > 0

    md = (out / "suite.md").read_text()
    assert "| case | what |" in md and "| ratio | value | paper |" in md
    measured = [c["name"] for c in r["cases"] if c["kind"] != "info"]
    assert all(f"| {name} |" in md for name in measured)
    assert "[train_vf] ok" in run.stderr  # Progress, case by case.


def test_a_failing_case_is_recorded_and_the_next_one_runs(tmp_path):
    def case(name, code, timeout_s=60):
        return isolate.run_case(
            name,
            [sys.executable, "-c", code],
            timeout_s=timeout_s,
            log_path=str(tmp_path / f"{name}.log"),
            collect=isolate.last_json_line,
        )

    crash = case("crash", "import sys; print('ValueError: bad shape'); sys.exit(3)")
    assert crash["status"] == "failed" and crash["error"] == "ValueError: bad shape"
    oom = case("oom", "raise RuntimeError('RESOURCE_EXHAUSTED: Out of memory allocating 9 GiB')")
    assert oom["status"] == "oom" and "RESOURCE_EXHAUSTED" in oom["error"]
    slow = case("slow", "import time; time.sleep(30)", timeout_s=1)
    assert slow["status"] == "timeout" and slow["wall_s"] < 20
    silent = case("silent", "print('no json here')")
    assert silent["status"] == "failed" and "without a result" in silent["error"]
    ok = case("ok", "import json; print(json.dumps({'x': 1}))")
    assert ok["status"] == "ok" and ok["result"] == {"x": 1} and ok["error"] is None


def test_peer_result_lines_parse():
    # The lines vfjax/bench/peer/diffusers_unet3d_bench.py and *_sample_bench.py print.
    train = (
        "peer diffusers UNet3D params=148.7M batch=4x16x64x64 compile=False step=555.6ms "
        "videos/s=7.2 model_TFLOP/step=45.60 achieved=82TFLOP/s peak_mem=72.0GiB"
    )
    got = report.parse_peer("peer_train", 4, train)
    assert got["time_s"] == pytest.approx(0.5556) and got["videos_per_s"] == pytest.approx(
        7.2, 0.01
    )
    assert got["tflops"] == 82 and got["peak_memory_gib"] == 72.0
    sample = (
        "peer diffusers UNet3D sampling 50 steps batch=16x16x64x64: 24.70s, videos/s=0.65, "
        "peak_mem=20.6GiB"
    )
    got = report.parse_peer("peer_sample", 16, sample)
    assert got["time_s"] == 24.7 and got["videos_per_s"] == pytest.approx(16 / 24.7)
    assert report.parse_peer("peer_sample", 16, "Traceback ...") is None


def test_the_peer_scripts_ship_beside_the_suite():
    """The peer cases find their scripts by default in any clone: `--peer_dir` defaults to
    `vfjax/bench/peer/`, resolved from the package, not from the working directory."""
    assert suite.PEER_DIR == os.path.join(ROOT, "vfjax", "bench", "peer")
    scripts = {c.script for c in suite.cases(tiny=False) if c.kind.startswith("peer")}
    assert scripts == {suite.PEER_TRAIN, suite.PEER_SAMPLE}
    peer = {"imports": True, "cuda": True}
    for case in suite.cases(tiny=False):
        if case.kind.startswith("peer"):
            assert suite._peer_blocked(case, peer, suite.PEER_DIR, checked=True) is None, case


def test_unknown_case_is_one_line(tmp_path):
    cmd = [sys.executable, "-m", "vfjax.bench", "suite", f"--out={tmp_path}", "--cases=nope"]
    run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 2
    assert run.stderr.strip().endswith(
        "vfjax: error: --cases=nope matches no case; the cases are "
        + ", ".join(c.name for c in suite.cases(tiny=False))
        + "."
    )


def test_out_of_memory_reruns_at_half_the_batch_and_ratios_pair_batches():
    train_vf = next(c for c in suite.cases(tiny=False) if c.name == "train_vf")
    half = suite.smaller(train_vf)
    assert (half.name, half.batch, half.source) == ("train_vf_b8", 8, "train_vf")
    quarter = suite.smaller(half)
    assert (quarter.name, quarter.batch) == ("train_vf_b4", 4)
    assert (
        quarter.what == "ucf101_64 train step, VideoFusion, after running out of memory at batch 8"
    )
    assert suite.smaller(quarter) is None
    peer = next(c for c in suite.cases(tiny=False) if c.name == "peer_train_b16")
    assert suite.smaller(peer) is None

    def row(name, case, batch, status="ok", gib=1.0):
        return {
            "name": name,
            "case": case,
            "batch": batch,
            "status": status,
            "peak_memory_gib": gib,
        }

    rows = [row("train_vf", "train_vf", 16, "oom"), row("train_vf_b8", "train_vf", 8, gib=60)]
    rows.append(row("train_vdm", "train_vdm", 16, gib=150))
    memory = next(q for q in report.ratios(rows) if q["field"] == "peak_memory_gib")
    assert memory["value"] is None and "at one batch" in memory["why_none"]
    rows.append(row("train_vdm_b8", "train_vdm", 8, gib=75))
    memory = next(q for q in report.ratios(rows) if q["field"] == "peak_memory_gib")
    assert memory["value"] == pytest.approx(0.8)
    assert (memory["numerator"], memory["denominator"]) == ("train_vf_b8", "train_vdm_b8")


def test_a_case_killed_by_the_kernel_names_its_own_error_not_libtpus_startup(tmp_path):
    """A deviceless TPU case's output starts with libtpu's own "Error" lines on a host without
    a TPU: they are not what failed. The recorded error names the case's last error line, and a
    SIGKILL says what usually sends it."""

    output = "\n".join(
        [
            "WARNING: could not determine TPU accelerator type, please set env var "
            "`TPU_ACCELERATOR_TYPE` manually",
            "E0000 common_lib.cc:554] INVALID_ARGUMENT: Error: unexpected worker hostname "
            "'WARNING: could not determine TPU worker hostnames' from env var "
            "TPU_WORKER_HOSTNAMES.",
            "=== Source Location Trace: ===",
            "learning/45eac/tfrc/runtime/libtpu_init_utils.cc:327",
        ]
    )
    assert "TPU_WORKER_HOSTNAMES" not in isolate.error_line(output)
    failing = output + "\nValueError: model.num_classes=7 but data set 'synthetic' has 4 classes\n"
    assert isolate.error_line(failing).startswith("ValueError: model.num_classes=7")
    script = tmp_path / "case.py"
    script.write_text(
        "import os, signal, sys\n"
        f"print({output!r}, flush=True)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    case = isolate.run_case(
        "killed",
        [sys.executable, str(script)],
        timeout_s=60,
        log_path=str(tmp_path / "case.log"),
        collect=lambda out: None,
    )
    assert case["error"].startswith("killed by signal 9 (the kernel's out-of-memory killer")
    assert "TPU_WORKER_HOSTNAMES" not in case["error"]
