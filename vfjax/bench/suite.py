"""The GPU benchmark suite: one command, one report.

    python -m vfjax.bench suite --out=DIR [--tiny] [--cases=train_vf,peer_] [--budget_s=480]

Every case runs in its own process with its own time limit (`vfjax.bench.isolate`): a crash, an
out-of-memory or a timeout is recorded and the suite goes on. The cases: the environment (device,
library versions, XLA settings); the `ucf101_64` train step (VideoFusion, then `:vdm`) at batch
16; the peer's architecture (`configs/peer_unet3d.py:vdm`) at batch 4 and 16; 50-step DDIM
sampling at batch 16 of VideoFusion, VDM and the peer's architecture; and the peer's own scripts
(torch + diffusers; `--peer_dir`, by default `vfjax/bench/peer/`) when they import and a CUDA
device is there. DIR/suite.json and DIR/suite.md are rewritten after every case (a suite cut
short still leaves its report), with each case's log and result under DIR/cases/. `--tiny` runs
every case at a toy size on the CPU.
"""

import dataclasses
import datetime
import json
import os
import sys
import time

from vfjax.bench import isolate
from vfjax.bench import report as report_lib

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# The peer's scripts (torch + diffusers), kept beside this module: `--peer_dir`'s default.
PEER_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "peer")
_PEER_CHECK = """
import json
try:
    import diffusers, torch
except Exception as e:
    print(json.dumps({"imports": False, "error": f"{type(e).__name__}: {e}"}))
else:
    cuda = torch.cuda.is_available()
    print(json.dumps({"imports": True, "torch": torch.__version__, "cuda": cuda,
                      "diffusers": diffusers.__version__,
                      "device": torch.cuda.get_device_name(0) if cuda else None}))
"""


# `--tiny`: every config shrunk to a toy (`runlocal`, then one UNet level, no spatial attention).
TINY_FIELDS = {
    "model.base.channel_mult": (1,),
    "model.base.attn_resolutions": (),
    "model.base.mid_attention": False,
    "model.residual.channel_mult": (1,),
    "model.residual.attn_resolutions": (),
    "model.residual.temporal_attn_resolutions": (16,),
    "model.residual.temporal_conv_layers": 1,
    "model.residual.temporal_input_dim": 0,
}
PEER_TRAIN, PEER_SAMPLE = "diffusers_unet3d_bench.py", "diffusers_unet3d_sample_bench.py"
# Batch 2 for every case: the peer architecture's two train cases then share one program (the
# second finds it in the compilation cache).
TINY_BATCH = {4: 2, 16: 2}
# Default limits on the whole suite, seconds (`--budget_s`): cases that would start later are
# skipped, so that a GPU's scarce minutes end with a report.
BUDGET_S = {"full": 480, "tiny": 600}


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    kind: str  # 'info', 'train', 'sample', 'peer_train' or 'peer_sample'
    what: str
    timeout_s: float
    batch: int = 0
    config: str = ""  # our cases: the config spec
    script: str = ""  # peer cases: the script's file name
    source: str = ""  # a rerun at a smaller batch: the case it repeats
    halvings: int = 0  # of the source's batch, after running out of memory


def cases(tiny: bool) -> list[Case]:
    """The suite's cases in the order they run (the two sides of a ratio close together)."""

    def ours(name, kind, what, batch, path, *words):
        words = (*words, "runlocal") if tiny else words
        config = f"configs/{path}" + (f":{','.join(words)}" if words else "")
        limit = 240 if kind == "train" else 180
        return Case(name, kind, what, limit, TINY_BATCH[batch] if tiny else batch, config)

    def peer(name, kind, what, batch):
        script = PEER_TRAIN if kind == "peer_train" else PEER_SAMPLE
        return Case(name, kind, what, 180, TINY_BATCH[batch] if tiny else batch, script=script)

    u64, arch, ddim = "ucf101_64.py", ("peer_unet3d.py", "vdm"), "50-step DDIM sampling"
    return [
        Case("env", "info", "device, library versions, XLA settings", 90),
        Case("peer_check", "info", "torch and diffusers import, a CUDA device", 90),
        ours("train_vf", "train", "ucf101_64 train step, VideoFusion", 16, u64),
        ours("train_vdm", "train", "ucf101_64 train step, VDM", 16, u64, "vdm"),
        ours("peer_arch_b4", "train", "peer's architecture, our train step", 4, *arch),
        peer("peer_train_b4", "peer_train", "peer's script, train step", 4),
        ours("sample_vf", "sample", f"ucf101_64 VideoFusion, {ddim}", 16, u64),
        ours("sample_vdm", "sample", f"ucf101_64 VDM, {ddim}", 16, u64, "vdm"),
        ours("sample_peer_arch", "sample", f"peer's architecture, our {ddim}", 16, *arch),
        peer("peer_sample_b16", "peer_sample", "peer's script, 50 network evaluations", 16),
        ours("peer_arch_b16", "train", "peer's architecture, our train step", 16, *arch),
        peer("peer_train_b16", "peer_train", "peer's script, train step", 16),
    ]


def smaller(case: Case) -> Case | None:
    """One of our cases again at half its batch after it ran out of memory, so that a batch too
    large for the device (see `python -m vfjax.bench fit`) still gives a measurement; twice at
    most (None: no more)."""
    if case.kind not in ("train", "sample") or case.batch < 2 or case.halvings >= 2:
        return None
    source, batch = case.source or case.name, case.batch // 2
    what = f"{case.what.split(', after')[0]}, after running out of memory at batch {case.batch}"
    return dataclasses.replace(
        case,
        name=f"{source}_b{batch}",
        what=what,
        batch=batch,
        source=source,
        halvings=case.halvings + 1,
    )


def _argv(case: Case, tiny: bool, peer_dir: str, json_path: str) -> list[str]:
    bench = [sys.executable, "-m", "vfjax.bench"]
    if case.name == "env":
        return [*bench, "env", f"--json={json_path}"]
    if case.name == "peer_check":
        return [sys.executable, "-c", _PEER_CHECK]
    if case.kind.startswith("peer"):
        small = ["--frames", "4", "--size", "16", "--steps", "2"] if tiny else []
        script = os.path.join(peer_dir, case.script)
        return [sys.executable, script, "--batch", str(case.batch), *small]
    common = [f"--config={case.config}", f"--json={json_path}"]
    common += [f"--config.{k}={v!r}" for k, v in TINY_FIELDS.items()] if tiny else []
    if case.kind == "train":
        timed = ["--steps=2", "--warmup=1"] if tiny else ["--steps=20", "--warmup=3"]
        return [*bench, *common, f"--config.batch_size={case.batch}", *timed, "--sample=false"]
    return [
        *bench,
        *common,
        "--train=false",
        f"--sample_batch={case.batch}",
        f"--config.sampling.batch_size={case.batch}",
        f"--config.sampling.num_steps={2 if tiny else 50}",
    ]


def run_suite(
    out: str,
    *,
    tiny: bool = False,
    only=(),
    budget_s: float = 0,
    timeout_s: float = 0,
    peer_dir: str = PEER_DIR,
    compilation_cache: str = "",
) -> dict:
    """Runs the cases (`only`: names or name prefixes) and writes the report; returns it."""
    selected = [c for c in cases(tiny) if not only or any(c.name.startswith(p) for p in only)]
    if not selected:
        known = ", ".join(c.name for c in cases(tiny))
        raise ValueError(f"--cases={','.join(only)} matches no case; the cases are {known}.")
    size = "tiny" if tiny else "full"
    budget_s = budget_s or BUDGET_S[size]
    peer_dir = os.path.abspath(peer_dir)
    os.makedirs(os.path.join(out, "cases"), exist_ok=True)
    env = dict(os.environ)
    if compilation_cache:
        env["JAX_COMPILATION_CACHE_DIR"] = os.path.abspath(compilation_cache)
    if tiny:
        # On the CPU, compiling dominates the toy cases: XLA's LLVM optimisation level 0
        # compiles 1.4-3x faster, and a compilation cache shares programs between cases.
        env.setdefault("JAX_PLATFORMS", "cpu")
        env.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.abspath(os.path.join(out, "jax_cache")))
        flags = env.get("XLA_FLAGS", "")
        env["XLA_FLAGS"] = f"{flags} --xla_backend_optimization_level=0".strip()
    report = {
        "suite": size,
        "out": out,
        "budget_s": budget_s,
        "started": datetime.datetime.now().isoformat(timespec="seconds"),
        "complete": False,
        "environment": None,
        "peer": None,
        "cases": [],
        "ratios": [],
    }
    start = time.perf_counter()
    checked = any(c.name == "peer_check" for c in selected)
    queue = list(selected)
    while queue:
        case = queue.pop(0)
        remaining = budget_s - (time.perf_counter() - start)
        blocked = _peer_blocked(case, report["peer"], peer_dir, checked)
        if remaining < 10:
            record = isolate.skipped(case.name, f"the suite's budget of {budget_s:.0f} s is spent")
        elif blocked:
            record = isolate.skipped(case.name, blocked)
        else:
            limit = min(timeout_s or case.timeout_s, remaining)
            record = _run(case, tiny, peer_dir, out, env, limit)
        if record["status"] == isolate.OOM and smaller(case):
            queue.insert(0, smaller(case))
        _add(report, case, record)
        _write(report)
    report["wall_s"] = time.perf_counter() - start
    report["complete"] = True
    _write(report)
    return report


def _peer_blocked(case: Case, peer: dict | None, peer_dir: str, checked: bool) -> str | None:
    """Why a peer case cannot run (None: it can)."""
    if not case.kind.startswith("peer"):
        return None
    if not os.path.exists(os.path.join(peer_dir, case.script)):
        return f"no peer script {case.script} in {peer_dir}"
    if checked and not (peer and peer.get("imports")):
        return "torch and diffusers do not import here" + (f" ({peer['error']})" if peer else "")
    if checked and not peer.get("cuda"):
        return "no CUDA device for the peer's scripts"
    return None


def _run(case, tiny, peer_dir, out, env, timeout_s) -> dict:
    json_path = os.path.join(out, "cases", f"{case.name}.json")
    if case.name == "peer_check":
        collect = isolate.last_json_line
    elif case.kind.startswith("peer"):

        def collect(output):
            return report_lib.parse_peer(case.kind, case.batch, output)
    else:
        collect = isolate.json_file(json_path)
    argv = _argv(case, tiny, peer_dir, json_path)
    log_path = os.path.join(out, "cases", f"{case.name}.log")
    return isolate.run_case(
        case.name, argv, timeout_s=timeout_s, log_path=log_path, collect=collect, env=env, cwd=ROOT
    )


def _add(report: dict, case: Case, record: dict) -> None:
    result = record.pop("result")
    if case.name == "env" and result:
        report["environment"] = result
    if case.name == "peer_check":
        report["peer"] = result or {"imports": False, "error": record["error"]}
    row = {
        "name": case.name,
        "case": case.source or case.name,
        "kind": case.kind,
        "what": case.what,
        "batch": case.batch,
        "config": case.config or case.script,
        **record,
    }
    if case.kind != "info":
        env = report["environment"] or {}
        row.update(dict.fromkeys(report_lib.FIELDS))
        if result:
            row.update(report_lib.figures(case.kind, result, env.get("peak_tflops_per_device")))
    report["cases"].append(row)
    report["ratios"] = report_lib.ratios(report["cases"])
    fields = report_lib.FIELDS
    fig = ", ".join(f"{k} {row[k]:.3g}" for k in fields if row.get(k) is not None)
    if fig:
        isolate.log(f"[{case.name}] {fig}")


def _write(report: dict) -> None:
    out = report["out"]
    with open(os.path.join(out, "suite.json"), "w") as f:
        json.dump(report, f, indent=2)
    with open(os.path.join(out, "suite.md"), "w") as f:
        f.write(report_lib.markdown(report))
