"""The benchmark harness runs on the CPU with the default config and reports its contract."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

from tests.helpers import DEFAULT, ROOT
from vfjax import flops


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


@pytest.mark.xdist_group("default_config")
def test_bench_default_config_on_cpu(tmp_path):
    out = tmp_path / "bench.json"
    cmd = [
        sys.executable,
        "-m",
        "vfjax.bench",
        f"--config={DEFAULT}",
        "--steps=2",
        "--warmup=1",
        f"--json={out}",
        "--config.sampling.num_steps=3",
    ]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    r = json.loads(out.read_text())
    for key in (
        "step_time_s",
        "videos_per_s",
        "model_flops_per_step",
        "achieved_tflops",
        "peak_memory_bytes",
        "device",
        "compile_s",
        "sample_latency_s",
        "sample_videos_per_s",
    ):
        assert key in r, key
    assert r["device"].startswith("cpu")
    assert r["model_flops_per_step"] > 0 and r["step_time_s"] > 0
    assert r["videos_per_s"] == pytest.approx(r["batch_size"] / r["step_time_s"])
    tflops = r["model_flops_per_step"] / r["step_time_s"] / 1e12
    assert r["achieved_tflops"] == pytest.approx(tflops)
    assert r["mfu"] is None  # No bf16 peak is known for a CPU.
    assert r["peak_memory_bytes"] > 0 and len(r["step_times_s"]) == 2
    assert "videos/s" in result.stdout and "TFLOP/step" in result.stdout
    assert os.path.getsize(out) > 0
