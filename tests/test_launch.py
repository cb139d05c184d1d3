"""Launch scripts and sweeps: syntax, shellcheck, dry runs."""

import glob
import os
import shutil
import subprocess
import sys

import pytest

from tests.helpers import ROOT

SCRIPTS = sorted(glob.glob(os.path.join(ROOT, "launch", "*.sh")))


def test_there_are_launch_scripts():
    names = {os.path.basename(s) for s in SCRIPTS}
    assert {"local.sh", "tpu_pod.sh", "gpu_slurm.sh"} <= names


@pytest.mark.parametrize("script", SCRIPTS, ids=os.path.basename)
def test_scripts_pass_bash_n_and_shellcheck(script):
    assert subprocess.run(["bash", "-n", script], capture_output=True).returncode == 0
    shellcheck = shutil.which("shellcheck")
    assert shellcheck, "shellcheck is missing: apt-get install shellcheck (.ci/run does)"
    result = subprocess.run([shellcheck, script], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_tpu_pod_dry_run_prints_the_gcloud_commands():
    env = {
        **os.environ,
        "DRY_RUN": "1",
        "TPU_NAME": "vf-test",
        "ZONE": "us-east5-b",
        "ACCELERATOR_TYPE": "v5litepod-16",
        "SPOT": "1",
    }
    args = ["--config=configs/ucf101_64.py", "--workdir=gs://bucket/runs/u64"]
    result = subprocess.run(
        ["bash", "launch/tpu_pod.sh", *args], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert all(line.startswith("+ ") for line in lines)
    gcloud = [line for line in lines if "gcloud compute tpus tpu-vm" in line]
    verbs = [line.split("tpu-vm ")[1].split()[0] for line in gcloud]
    assert verbs == ["create", "scp", "ssh", "ssh", "delete"]
    assert "--accelerator-type=v5litepod-16" in gcloud[0] and "--spot" in gcloud[0]
    assert "--worker=all" in gcloud[3] and "vfjax.main" in gcloud[3]
    assert "gs://bucket/runs/u64" in gcloud[3]


def test_tpu_pod_refuses_missing_settings():
    env = {k: v for k, v in os.environ.items() if k not in ("TPU_NAME", "ZONE")}
    result = subprocess.run(
        ["bash", "launch/tpu_pod.sh", "--config=x"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0 and "TPU_NAME" in result.stderr


def test_local_sh_usage_error():
    result = subprocess.run(
        ["bash", "launch/local.sh", "two"], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 2 and "usage" in result.stderr


def _sweep(*args):
    cmd = [sys.executable, "launch/sweep.py", "--config=configs/ablation_lambda.py", *args]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_sweep_dry_run_prints_one_command_per_point(tmp_path):
    result = _sweep(f"--workdir={tmp_path}", "--dry-run", "--", "--config.total_steps=10")
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if line.startswith("[")]
    assert len(lines) == 5  # lambda 0, 0.25, 0.5, 0.75 inside VideoFusion, and the VDM baseline
    workdirs = [line.split("--workdir=")[1].split()[0] for line in lines]
    assert len(set(workdirs)) == 5 and all(w.startswith(str(tmp_path)) for w in workdirs)
    assert all("vfjax.main" in line and "--config.total_steps=10" in line for line in lines)
    assert sum("--config.diffusion.lam=" in line for line in lines) == 4
    (vdm,) = [line for line in lines if "--config.model.kind=vdm" in line]
    assert "vdm_matched" in vdm and "--config.model.residual.channels=" in vdm
    assert not os.listdir(tmp_path)  # A dry run starts nothing.


def test_sweep_summary_table_and_bad_sweep(tmp_path):
    run = tmp_path / "lam0.5"
    run.mkdir()
    (run / "metrics.jsonl").write_text(
        '{"step": 10, "loss": 0.5, "loss_key": 0.6, "loss_residual": 0.4}\n'
        '{"step": 20, "loss": 0.25, "loss_key": 0.3, "loss_residual": 0.2}\n'
    )
    result = _sweep(f"--workdir={tmp_path}", "--summary")
    assert result.returncode == 0, result.stderr
    rows = {line.split()[0]: line.split() for line in result.stdout.splitlines()}
    assert rows["lam0.5"][1:4] == ["20", "0.2500", "0.3000"]
    assert rows["lam0.25"][1] == "-"
    bad = subprocess.run(
        [sys.executable, "launch/sweep.py", "--config=configs/default.py", f"--workdir={tmp_path}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2 and "no get_sweep()" in bad.stderr
