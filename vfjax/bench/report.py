"""The suite's report: each case's figures in one set of fields, the ratios between cases, and
the markdown table (`vfjax.bench.suite` runs the cases)."""

import re

from vfjax.bench import isolate

# What each measured case reports (None where it does not apply).
FIELDS = ("compile_s", "time_s", "videos_per_s", "tflops", "mfu", "peak_memory_gib")
# The paper's VideoFusion / VDM ratios (memory 21.8% lower, latency 57.5% lower).
PAPER_MEMORY_RATIO, PAPER_LATENCY_RATIO = 0.782, 0.425

# Ratios the report computes: (name, numerator case, denominator case, field, paper's value).
_VPS, _MEM = "videos_per_s", "peak_memory_gib"
RATIOS = (
    ("ours/peer train videos/s, batch 4", "peer_arch_b4", "peer_train_b4", _VPS, None),
    ("ours/peer train videos/s, batch 16", "peer_arch_b16", "peer_train_b16", _VPS, None),
    ("ours/peer sampling videos/s", "sample_peer_arch", "peer_sample_b16", _VPS, None),
    ("VideoFusion/peer sampling videos/s", "sample_vf", "peer_sample_b16", _VPS, None),
    ("VideoFusion/VDM train peak memory", "train_vf", "train_vdm", _MEM, PAPER_MEMORY_RATIO),
    ("VideoFusion/VDM sampling latency", "sample_vf", "sample_vdm", "time_s", PAPER_LATENCY_RATIO),
)


def parse_peer(kind: str, batch: int, output: str) -> dict | None:
    """The figures of a peer script's result line (None when it printed none)."""
    if kind == "peer_train":
        m = re.search(
            r"step=([\d.]+)ms .*model_TFLOP/step=([\d.]+) achieved=([\d.]+)TFLOP/s "
            r"peak_mem=([\d.]+)GiB",
            output,
        )
        if not m:
            return None
        step = float(m.group(1)) / 1e3
        return {
            "time_s": step,
            "videos_per_s": batch / step,
            "tflops": float(m.group(3)),
            "model_tflop_per_step": float(m.group(2)),
            "peak_memory_gib": float(m.group(4)),
        }
    m = re.search(r"batch=\S+: ([\d.]+)s, videos/s=[\d.]+, peak_mem=([\d.]+)GiB", output)
    if not m:
        return None
    latency = float(m.group(1))
    return {
        "time_s": latency,
        "videos_per_s": batch / latency,
        "peak_memory_gib": float(m.group(2)),
    }


def figures(kind: str, result: dict, peak_tflops: float | None) -> dict:
    """A case's result in the report's `FIELDS`."""
    row = dict.fromkeys(FIELDS)
    if kind == "train":
        row.update(
            compile_s=result["compile_s"],
            time_s=result["step_time_s"],
            videos_per_s=result["videos_per_s"],
            tflops=result["achieved_tflops"],
            mfu=result["mfu"],
            peak_memory_gib=result["peak_memory_bytes"] / 2**30,
        )
    elif kind == "sample":
        tflops = result["sample_achieved_tflops"]
        per_device = tflops / result["num_devices"]
        row.update(
            compile_s=result["sample_compile_s"],
            time_s=result["sample_latency_s"],
            videos_per_s=result["sample_videos_per_s"],
            tflops=tflops,
            mfu=per_device / peak_tflops if peak_tflops else None,
            peak_memory_gib=result["sample_peak_memory_bytes"] / 2**30,
        )
    elif kind.startswith("peer"):
        row.update({k: v for k, v in result.items() if k in FIELDS})
        if row["tflops"] is not None and peak_tflops:
            row["mfu"] = row["tflops"] / peak_tflops
    return row


def _pair(rows: list[dict], num: str, den: str) -> tuple[dict, dict] | None:
    """The measured rows of cases `num` and `den` at the same batch (the largest such batch:
    a case that ran out of memory may have been measured again at a smaller one)."""

    def measured(case):
        return {r["batch"]: r for r in rows if r["case"] == case and r["status"] == isolate.OK}

    a, b = measured(num), measured(den)
    same = sorted(set(a) & set(b))
    return (a[same[-1]], b[same[-1]]) if same else None


def ratios(rows: list[dict]) -> list[dict]:
    out = []
    for name, num, den, field, paper in RATIOS:
        pair = _pair(rows, num, den)
        out.append(
            {
                "name": name,
                "numerator": pair[0]["name"] if pair else num,
                "denominator": pair[1]["name"] if pair else den,
                "field": field,
                "value": pair[0][field] / pair[1][field] if pair else None,
                "paper": paper,
                "why_none": None if pair else f"no results of {num} and {den} at one batch",
            }
        )
    return out


def _fmt(value, spec: str = ".3g") -> str:
    return "" if value is None else format(value, spec)


def markdown(report: dict) -> str:
    """The report as markdown: environment, one row per case, the ratios, then the errors."""
    env = report["environment"] or {}
    lines = [
        f"Suite `{report['suite']}`, started {report['started']}"
        + ("" if report["complete"] else " (incomplete)")
        + (f", {report['wall_s']:.0f} s" if "wall_s" in report else ""),
        "",
        f"- device: {env.get('device', '?')} x{env.get('num_devices', '?')}, bf16 peak "
        f"{_fmt(env.get('peak_tflops_per_device')) or '?'} TFLOP/s per device",
        f"- versions: {', '.join(f'{k} {v}' for k, v in env.get('versions', {}).items())}",
        f"- XLA settings: {env.get('xla_env') or 'none'}",
        f"- peer: {report['peer']}",
        "",
        "| case | what | batch | status | compile s | time s | videos/s | TFLOP/s | MFU | "
        "peak GiB | wall s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["cases"]:
        if r["kind"] == "info":
            continue
        lines.append(
            f"| {r['name']} | {r['what']} | {r['batch']} | {r['status']} | "
            f"{_fmt(r['compile_s'], '.1f')} | {_fmt(r['time_s'], '.4g')} | "
            f"{_fmt(r['videos_per_s'])} | {_fmt(r['tflops'])} | {_fmt(r['mfu'], '.1%')} | "
            f"{_fmt(r['peak_memory_gib'], '.2f')} | {r['wall_s']:.0f} |"
        )
    lines += ["", "| ratio | value | paper | of |", "|---|---|---|---|"]
    for q in report["ratios"]:
        value = _fmt(q["value"]) or q["why_none"]
        of = f"{q['numerator']} / {q['denominator']}"
        lines.append(f"| {q['name']} | {value} | {_fmt(q['paper'])} | {of} |")
    errors = [r for r in report["cases"] if r["error"]]
    if errors:
        lines += ["", "Not measured:"]
        lines += [f"- {r['name']} ({r['status']}): {r['error']}" for r in errors]
    return "\n".join(lines) + "\n"
