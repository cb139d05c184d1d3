"""The benchmark harness on the CPU: FLOP counts, the efficiency pair and the fit table. (The
bench command itself runs in the toy suite: test_bench_suite.py.)"""

import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

from tests.helpers import ROOT
from vfjax import flops
from vfjax.bench import compiled


def test_flop_counter_known_answers():
    a, b = jnp.ones((4, 8)), jnp.ones((8, 16))
    assert flops.model_flops(lambda x, y: x @ y, a, b) == 2 * 4 * 8 * 16
    x, w = jnp.ones((2, 10, 10, 3)), jnp.ones((3, 3, 3, 5))

    def conv(x, w):
        return jax.lax.conv_general_dilated(
            x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )

    forward = 2 * 2 * 10 * 10 * 5 * 9 * 3
    assert flops.model_flops(conv, x, w) == forward
    # Backward: gradients of the input and of the kernel cost one forward each.
    grad = jax.grad(lambda x, w: conv(x, w).sum(), argnums=(0, 1))
    assert flops.model_flops(grad, x, w) == 3 * forward

    def loop(x):
        return jax.lax.fori_loop(0, 7, lambda i, x: x @ jnp.ones((4, 4)), x)

    assert flops.model_flops(loop, jnp.ones((3, 4))) == 7 * 2 * 3 * 4 * 4


def test_efficiency_pair_at_toy_size(tmp_path):
    out = tmp_path / "efficiency.json"
    cmd = [sys.executable, "-m", "vfjax.bench", "efficiency", "--tiny", f"--json={out}"]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    r = json.loads(out.read_text())
    vf, vdm = r["arms"]["videofusion"], r["arms"]["vdm"]
    assert vf["params"]["base"] > 0 and "base" not in vdm["params"]
    # The pair's point: a light residual generator beside the base, a full-width VDM.
    assert vf["params"]["residual"] < vdm["params"]["residual"]
    for arm in (vf, vdm):
        for key in (
            "train_model_flops",
            "sample_step_model_flops",
            "train_peak_bytes_per_device",
            "sample_peak_bytes_per_device",
        ):
            assert arm[key] > 0, key
        assert arm["latency"]["latency_s"] > 0 and arm["latency"]["device"].startswith("cpu")
    q = r["ratios"]
    assert q["sampling_latency_cpu"] == pytest.approx(
        vf["latency"]["latency_s"] / vdm["latency"]["latency_s"]
    )
    assert q["train_peak_memory"] == pytest.approx(
        vf["train_peak_bytes_per_device"] / vdm["train_peak_bytes_per_device"]
    )
    assert r["paper"] == {"memory": 0.782, "latency": 0.425}
    assert "| VideoFusion | VDM | VideoFusion / VDM | paper |" in result.stdout


def test_fit_table_says_what_fits():
    gb = 1e9
    analytic = {
        "state_bytes_per_device": 2 * gb,
        "grad_bytes_per_device": 1 * gb,
        "saved_activation_bytes": 640 * gb,  # 10 GB per video per device on 8 devices
        "estimate_bytes_per_device": 83 * gb,
    }
    row = {
        "config": "configs/ucf101_64.py",
        "status": "ok",
        "num_devices": 8,
        "batch": 64,
        "train": {
            "model_flops": 2e14,
            "xla_flops_per_device": 2.5e13,
            "compile_s": 100,
            "memory": {"peak_bytes": 100 * gb},
            "analytic": analytic,
        },
        "sample_step": {
            "model_flops": 6e13,
            "xla_flops_per_device": 7e12,
            "compile_s": 10,
            "memory": {"peak_bytes": 5 * gb},
        },
    }
    table = compiled.fit_table([row, {**row, "status": "timeout", "error": "no result"}])
    # 0.9 * 80 GB holds 3 GB + 6.9 videos per device, 0.9 * 141 GB 12.39: 6 and 12 per device.
    assert (
        "| configs/ucf101_64.py | 8 | 64 | 200.0 / 25.0 | 60.0 / 7.0 | 100.0 / 83.0 | 5.0 | "
        "H200 141GB | 48 / 96 | 100 + 10 |"
    ) in table
    assert "| timeout: no result |" in table
    assert compiled.fits(70 * gb) == "H100 80GB, H200 141GB"
    assert compiled.fits(130 * gb) == "neither"
