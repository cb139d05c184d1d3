"""TPU programs compiled on this CPU machine (libtpu describes the devices of a TPU slice; XLA
compiles for them; nothing runs): the tiny config's train step and sampler on one slice and over
two slices, and the evaluation's feature network, so a TPU-only lowering failure shows here.

The backend of the suite stays the CPU (conftest: `JAX_PLATFORMS=cpu`): the topology's devices
are compiled for and never run on, and an installed libtpu changes nothing else (measured:
`import jax` and a first CPU op take the same 4 s with or without it).
"""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from tests.helpers import ROOT, tiny
from vfjax import sharding
from vfjax.bench import tpu
from vfjax.evaluation import features, i3d, protocols

TOPOLOGY = "v5e:2x2"  # 4 chips, one device each.


def _tiny(**fields):
    return tiny(**{"mesh.data": 2, "mesh.fsdp": 2, **fields})


def test_tiny_train_step_and_sampler_compile_for_a_tpu_slice():
    out = tpu.analyse(_tiny(), TOPOLOGY, [8], slices=1)
    assert out["devices"] == out["chips"] == 4 and out["chip"] == "TPU v5e"
    (case,) = out["cases"]
    train, sample = case["train"], case["sample_step"]
    assert 0 < train["memory"]["peak_bytes"] < 1e9 and train["fits"]
    assert train["model_flops"] > 0 and train["xla_flops_per_device"] > 0
    assert train["bytes_accessed_per_device"] > 0
    shares = train["bytes_by_kind"]  # Where the bytes go (vfjax.bench.hlo).
    assert shares["convolution"] > 0 and np.isclose(sum(shares.values()), 1.0)
    assert any(source.startswith("vfjax/models/") for source in train["bytes_by_source"])
    roof = train["roofline"]
    assert roof["step_lower_bound_s"] >= max(roof["compute_bound_s"], roof["memory_bound_s"]) > 0
    assert 0 < roof["mfu_ceiling"] <= 1
    assert sample["memory"]["peak_bytes"] > 0
    per_chip = 8 / 4
    assert train["config_run"]["chips"] == int(np.ceil(out["config_batch"] / per_chip))
    assert f"| {TOPOLOGY} (4) | 8 | no |" in tpu.table([{"config": "tiny", **out}])


def test_tiny_train_step_compiles_over_two_slices():
    """Two slices (8 devices): `data` spans the slices, fsdp stays inside one."""
    devices = tpu.topology_devices(TOPOLOGY, slices=2)
    assert len(devices) == 8 and {d.slice_index for d in devices} == {0, 1}
    config = _tiny(**{"mesh.data": 4, "mesh.fsdp": 2})
    mesh = sharding.make_mesh(config.mesh, devices)
    for row in mesh.devices:  # Each fsdp group lies inside one slice.
        assert len({d.slice_index for d in row}) == 1
    train = tpu.compile_train(config, devices, 8)
    assert train["memory"]["peak_bytes"] > 0 and train["model_flops"] > 0
    with pytest.raises(ValueError, match="does not split over the 2 slices"):
        sharding.make_mesh(_tiny(**{"mesh.data": 1, "mesh.fsdp": 8}).mesh, devices)


def test_a_program_compiled_before_is_not_compiled_again(tmp_path):
    """A train step whose program a case JSON in `reuse_dir` (the table's OUT) holds takes that
    result instead of compiling: configs that differ where the program does not (seed, run
    length at a constant learning rate) share one compile, as `sky_128` and `taichi_128` share
    `ucf101_128`'s; their own run's figures are still their own. A case's own earlier JSON comes
    back as it was; a JSON written before results named their program, and another network,
    match nothing."""
    folder = tmp_path / "out"
    folder.mkdir()
    first_json = str(folder / "first.json")
    first = tpu.analyse(_tiny(), TOPOLOGY, [8], sample=False)
    compiled = dict(first["cases"][0]["train"])
    assert len(compiled["program"]) == 16 and "same_program_as" not in compiled
    (folder / "first.json").write_text(json.dumps(first))
    other = _tiny(**{"seed": 7, "total_steps": 2 * first["total_steps"]})
    again = tpu.analyse(other, TOPOLOGY, [8], sample=False, reuse_dir=str(folder))
    train = again["cases"][0]["train"]
    assert train["same_program_as"] == "first" and train["program"] == compiled["program"]
    assert train["compile_s"] == compiled["compile_s"]
    assert train["memory"] == compiled["memory"]
    assert train["chip_hours"] == pytest.approx(2 * compiled["chip_hours"])
    assert "(train: the program of first, not compiled again)" in tpu.table(
        [{"config": "other", **again}]
    )
    rerun = tpu.analyse(
        _tiny(), TOPOLOGY, [8], sample=False, reuse_dir=str(folder), own_json=first_json
    )
    assert rerun["cases"][0]["train"] == compiled  # Its own result, not a copy naming itself.

    devices = tpu.topology_devices(TOPOLOGY)
    same_as = tpu.earlier_programs(str(folder), TOPOLOGY, 1, False)
    assert same_as(compiled["program"], 8)["same_program_as"] == "first"
    assert same_as(compiled["program"], 16) is None  # Another batch.
    _, _, lowered = tpu.lower_train(_tiny(**{"model.residual.channels": 32}), devices, 8)
    assert same_as(tpu.program_id(lowered, TOPOLOGY, 1), 8) is None
    del first["cases"][0]["train"]["program"]  # As written before results carried ids.
    (folder / "first.json").write_text(json.dumps(first))
    assert same_as(compiled["program"], 8) is None


def test_table_run_takes_a_case_again_only_while_its_program_is_the_same(tmp_path, monkeypatch):
    """The table's resume: a case JSON that names its program is taken again where the case
    still lowers to that program (no compile), and compiled again where it does not (the code,
    libtpu or its flags changed it: here its id is altered)."""
    spec = tmp_path / "tiny_tpu.py"
    spec.write_text(
        "from tests.helpers import tiny\n\n\ndef get_config(arg=None):\n"
        '    return tiny(**{"mesh.data": 2, "mesh.fsdp": 2})\n'
    )
    out = tmp_path / "out"
    monkeypatch.setenv("PYTHONPATH", ROOT)  # The config file imports tests.helpers.

    def table():
        (result,) = tpu.run_table([str(spec)], [TOPOLOGY], [8], str(out), sample=False)
        return result["cases"][0]["train"]

    first = table()
    assert first["compile_s"] > 0 and len(first["program"]) == 16
    assert table() == first  # Taken again: lowered, the same program, not compiled.
    path = out / (tpu.case_name(str(spec), TOPOLOGY, 1, 8) + ".json")
    stale = json.loads(path.read_text())
    stale["cases"][0]["train"]["program"] = "0" * 16
    stale["cases"][0]["train"]["compile_s"] = -1.0
    path.write_text(json.dumps(stale))
    again = table()
    assert again["program"] == first["program"] and again["compile_s"] > 0  # Compiled again.


def test_feature_network_compiles_for_a_tpu_slice():
    """I3D with the `cpu` protocol's resize, on 16x16 9-frame videos split over the slice."""
    protocol = protocols.get_protocol("cpu")
    network = i3d.with_preprocess(i3d.load_i3d(), protocol.resize_method)
    mesh = sharding.make_mesh(None, tpu.topology_devices(TOPOLOGY))
    compiled = features.lower(network, mesh, (4, 9, 16, 16, 3)).compile()
    assert compiled.memory_analysis().temp_size_in_bytes > 0
    out_shapes = jax.tree.leaves(compiled.out_info)
    assert out_shapes[0].shape == (4, 400)


def test_topology_names_and_the_largest_batch():
    with pytest.raises(ValueError, match="Unknown TPU topology 'v9:2x2'"):
        tpu.chip_of("v9:2x2")
    chip = tpu.CHIPS["v5e"]
    gb = 1e9
    small = {"batch": 8, "memory": {"peak_bytes": 2 * gb}}
    large = {"batch": 16, "memory": {"peak_bytes": 3 * gb}}
    # 1 GB fixed + 0.125 GB per video on each of 4 devices of 16 GiB.
    expected = int((0.9 * 16 * 2**30 - 1 * gb) / (0.125 * gb)) // 4 * 4
    assert tpu.largest_batch(small, large, chip, 4, 4) == expected
    assert tpu.largest_batch(small, {**large, "memory": small["memory"]}, chip, 4, 4) is None
    assert np.isclose(tpu.CHIPS["v6e"].peak_flops, 918e12)
    # The config's own run (64 videos a step) at this case's 2 videos a chip: 32 chips.
    train = {"batch": 8, "roofline": {"step_lower_bound_s": 0.5}}
    run = tpu.config_run(train, {"chips": 4, "config_batch": 64, "total_steps": 1000})
    assert run == {"videos_per_chip": 2.0, "chips": 32, "chip_hours": 1000 * 0.5 * 32 / 3600}
    assert tpu.config_run(train, {"chips": 4, "total_steps": 1000}) is None


def test_a_v4_slice_is_one_device_a_chip_and_takes_the_runs_mesh():
    """libtpu's default description of v4 lists each of a chip's two TensorCores as a device,
    over which jax builds no mesh ("requires one device per chip"); described as a v4 runtime
    runs ("megacore"), its 4 chips are 4 devices and the tiny config's train step lowers there."""
    devices = tpu.topology_devices("v4:2x2x1")
    assert len(devices) == tpu.chips_in(devices) == 4
    assert {d.device_kind for d in devices} == {"TPU v4"}
    tpu.lower_train(_tiny(), devices, 8)


def test_two_processes_describe_topologies_at_once():
    """libtpu's machine-wide lock file: while this process holds a topology, another process
    (a second test worker, a sweep's other job) still gets one (CI failed on this once)."""
    held = tpu.topology_devices(TOPOLOGY)
    env = {k: v for k, v in os.environ.items() if k != "ALLOW_MULTIPLE_LIBTPU_LOAD"}
    code = "from vfjax.bench import tpu; print(len(tpu.topology_devices('v5e:2x2', slices=2)))"
    child = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert child.returncode == 0, child.stderr[-2000:]
    assert child.stdout.strip().splitlines()[-1] == "8" and len(held) == 4


def test_table_run_resumes_and_reports_a_failed_case(tmp_path):
    """`python -m vfjax.bench tpu --out=DIR`: a case whose JSON is in DIR is reused, not compiled
    again; a case that fails leaves an error row; both land in tpu.json and tpu.md."""
    out = str(tmp_path)
    done = {
        "config": "configs/a.py",
        "topology": TOPOLOGY,
        "slices": 1,
        "chip": "TPU v5e",
        "devices": 4,
        "chips": 4,
        "hbm_gb_per_chip": 17.18,
        "total_steps": 10,
        "cases": [],
    }
    with open(os.path.join(out, tpu.case_name("configs/a.py", TOPOLOGY, 1, 4) + ".json"), "w") as f:
        json.dump(done, f)
    with pytest.raises(ValueError, match="Unknown TPU topology 'v9:1x1'"):
        tpu.run_table(["configs/a.py"], [TOPOLOGY, "v9:1x1"], [4], out)
    # Only the table: what is in DIR, the rest marked, nothing compiled (no log written).
    only = tpu.run_table(
        ["configs/a.py", "configs/b.py"], [TOPOLOGY], [4], out, compile_missing=False
    )
    assert only[0] == done and only[1]["error"] == "batch 4: not compiled"
    assert not os.path.exists(
        os.path.join(out, tpu.case_name("configs/b.py", TOPOLOGY, 1, 4) + ".log")
    )
    missing = str(tmp_path / "missing.py")
    results = tpu.run_table(["configs/a.py", missing], [TOPOLOGY], [4], out, timeout_s=300)
    assert results[0] == done  # Reused: configs/a.py does not exist, so it was not compiled.
    assert results[1]["config"] == missing and results[1]["error"].startswith("batch 4: failed: ")
    assert tpu.case_name(missing, TOPOLOGY, 1, 4) == "missing_v5e-2x2_b4"
    assert tpu.case_name("configs/u.py:class", "v5p:2x2x1", 2, 8) == "uclass_v5p-2x2x1_x2_b8"
    named = tpu.case_name("configs/u.py", "v5e:2x2", 1, 8, remat="both")
    assert named == "u_v5e-2x2_b8_remat-both"
    with open(os.path.join(out, "tpu.json")) as f:
        assert json.load(f) == results
    with open(os.path.join(out, "tpu.md")) as f:
        table = f.read()
    assert f"| {missing} | {TOPOLOGY} | batch 4: failed: " in table
    # The command line: --out makes the table; here all from the reused case, nothing compiled.
    argv = ["-m", "vfjax.bench", "tpu", f"--out={out}", "--configs=configs/a.py", "--batches=4"]
    cli = subprocess.run(
        [sys.executable, *argv, f"--topology={TOPOLOGY}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert cli.returncode == 0, cli.stderr[-2000:]
    assert "reusing" in cli.stderr and "| config | topology (chips) |" in cli.stdout
    with open(os.path.join(out, "tpu.json")) as f:
        assert json.load(f) == [done]


def test_batches_compiled_apart_give_the_largest_batch_together():
    """The table compiles each batch in its own process; merged, the two batches of each kind of
    train step give the largest batch as one `analyse` call over both would."""
    gb = 1e9

    def case(batch, peak, remat=False):
        return {"train": {"batch": batch, "remat": remat, "memory": {"peak_bytes": peak}}}

    result = {"topology": TOPOLOGY, "devices": 4, "chips": 4}
    merged = tpu.with_largest_batches(
        {**result, "cases": [case(16, 3 * gb), case(8, 2 * gb), case(8, 1.5 * gb, remat=True)]}
    )
    chip = tpu.CHIPS["v5e"]
    small, large = case(8, 2 * gb)["train"], case(16, 3 * gb)["train"]
    assert merged["largest_batch"] == tpu.largest_batch(small, large, chip, 4, 4) > 16
    assert "largest_batch_remat" not in merged  # One remat batch: too few to tell.
