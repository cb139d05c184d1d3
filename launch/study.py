"""A study: the runs of a sweep config's `get_sweep()`, each trained and evaluated, its result in a
small JSON, and a report over them (`get_study()`: the questions, their arms and the finding each
is checked against). Used by `launch/sweep.py --evaluate --report`; see `configs/study.py`.

A result JSON (`result_record`) holds the run's config file and fields, seed, steps, wall times
and every measure its evaluation and sampling steps wrote. The report (`write_report`) reads only
those JSONs, so it can be written again from a folder of them, anywhere, without the workdirs.
"""

import json
import math
import os

import numpy as np

from vfjax import fileio

# The measures of a result, how to read them, and whether higher is better (None: nearer 1).
MEASURES = {
    "fvd": ("FVD", False),
    "kvd": ("KVD", False),
    "law": ("data law share", True),
    "law_real": ("real videos' law share", True),
    "jump": ("key-frame jump", None),
    "brightness_gap": ("max frame brightness gap", False),
    "boundary": ("clip boundary ratio", None),
    "repeats": ("repeated frames", False),
    "appearance_change": ("appearance change", False),
    "real_appearance_change": ("real videos' appearance change", False),
}


def load_study(config_arg: str) -> dict:
    """`get_study(arg)` of the sweep config: `{'title', 'questions': [...]}`, each question
    `{'id', 'question', 'finding', 'arms': {arm: label}, 'comparisons': [(better, worse)],
    'measures': [...]}` (the paper's finding: `better` beats `worse`)."""
    from vfjax import config as vfc

    path, _, arg = config_arg.partition(":")
    module = vfc.load_module(path)
    if not hasattr(module, "get_study"):
        raise ValueError(f"{path} has no get_study(); --report needs a study config.")
    return module.get_study(arg or None)


def _newest(paths):
    paths = sorted(paths, key=lambda p: p.stat().mtime)
    return paths[-1] if paths else None


def _final_step(workdir) -> int | None:
    ckpt = fileio.path(workdir) / "checkpoints"
    steps = [int(p.name) for p in ckpt.iterdir() if p.name.isdigit()] if ckpt.exists() else []
    return max(steps) if steps else None


def evaluation_path(workdir, fields: dict | None = None):
    """The evaluation JSON a run's evaluation writes (`vfjax.evaluation.evaluate`), or None if
    it is not there: of its final checkpoint (`_gen<seed>` with `eval.generated_seed` among the
    run's `fields`), or the real-against-real floor (`eval.real_floor`)."""
    fields = fields or {}
    eval_dir = fileio.path(workdir) / "eval"
    if not eval_dir.exists():
        return None
    if fields.get("eval.real_floor"):
        return _newest(list(eval_dir.glob(f"*_real_floor_seed{fields.get('eval.seed', 0)}.json")))
    step = _final_step(workdir)
    if step is None:
        return None
    seed = fields.get("eval.generated_seed")
    suffix = "" if seed is None else f"_gen{seed}"
    return _newest(list(eval_dir.glob(f"*_{step}{suffix}.json")))


def has_evaluation(workdir, fields: dict | None = None) -> bool:
    return evaluation_path(workdir, fields) is not None


def _samples_index(workdir) -> dict:
    path = fileio.join(workdir, "study_samples.json")
    return fileio.read_json(path) if path.exists() else {}


def has_sample(workdir, sampling: dict) -> bool:
    """Whether the sampling step `sampling` ({'name', 'fields'}) of the run is done: recorded
    when its `--mode=sample` finished (`record_sample`)."""
    return sampling["name"] in _samples_index(workdir)


def record_sample(workdir, sampling: dict) -> None:
    """Notes the newest sample JSON of the run as the output of sampling step `sampling`."""
    newest = _newest(list((fileio.path(workdir) / "samples").glob("sample_*.json")))
    if newest is None:
        raise FileNotFoundError(f"no sample JSON in {workdir}/samples after {sampling['name']}")
    index = _samples_index(workdir)
    index[sampling["name"]] = newest.name
    fileio.write_json(fileio.join(workdir, "study_samples.json"), index)


def _measures_of(result: dict) -> dict:
    """The measures of an evaluation or sample JSON, by the names of `MEASURES`."""
    out = {}
    if "fvd" in result:
        out["fvd"] = float(result["fvd"])
    if "kvd" in result:
        out["kvd"] = float(result["kvd"])
    law = result.get("data_law")
    if law:
        out["law"] = float(law["generated"]["share"])
        out["law_criteria"] = law["generated"]["criteria"]
        out["law_real"] = float(law["real"]["share"])
    cons = result.get("consistency")
    if cons:
        jump = cons["generated"].get("key_frame_jump_ratio")
        if jump is not None:
            out["jump"] = float(jump)
        out["brightness_gap"] = float(cons["max_frame_mean_gap_to_real"])
    long = result.get("long_video")
    if long:
        out["boundary"] = float(long["boundary_to_within_ratio"])
        out["repeats"] = float(long["repeated_frames"])
        for key in ("appearance_change", "real_appearance_change"):
            if key in long:
                out[key] = float(long[key])
    return out


def result_record(run: dict, config_arg: str) -> dict:
    """The small JSON of a finished run: what it was, how long it took, every measure."""
    workdir = fileio.path(run["workdir"])
    if (workdir / "config.json").exists():
        config = fileio.read_json(workdir / "config.json")
    else:  # Nothing trained there (the real-against-real floor): the sweep's own config.
        from vfjax import config as vfc

        path, _, arg = config_arg.partition(":")
        resolved = vfc.load_config(path, arg or None)
        resolved.update_from_flattened_dict(run["fields"])
        config = resolved.to_dict()
    metrics = fileio.read_jsonl(workdir / "metrics.jsonl")
    times_path = workdir / "sweep_times.json"
    times = fileio.read_json(times_path) if times_path.exists() else {}
    record = {
        "name": run["name"],
        "arm": run.get("arm", run["name"]),
        "config": config_arg,
        "fields": {k: list(v) if isinstance(v, tuple) else v for k, v in run["fields"].items()},
        "seed": config["seed"],
        "steps": metrics[-1]["step"] if metrics else 0,
        "final_loss": metrics[-1].get("loss") if metrics else None,
        "model_kind": config["model"]["kind"],
        "seconds": {k: round(v, 1) for k, v in times.items()},
    }
    evaluation = evaluation_path(workdir, run["fields"])
    if evaluation is not None:
        result = fileio.read_json(evaluation)
        record["evaluation"] = {
            "file": evaluation.name,
            "protocol": result.get("protocol"),
            "num_generated": result.get("num_generated"),
            "num_real": result.get("num_real"),
            "num_frames": result.get("num_frames"),
            **_measures_of(result),
        }
    index = _samples_index(workdir)
    record["samples"] = {}
    for name, file in index.items():
        result = fileio.read_json(workdir / "samples" / file)
        record["samples"][name] = {"file": file, **_measures_of(result)}
    return record


def read_results(results_dir, names=None) -> list[dict]:
    """The result JSONs in `results_dir` (of the runs `names`, when given)."""
    folder = fileio.path(results_dir)
    records = (
        [fileio.read_json(p) for p in sorted(folder.glob("*.json"))] if folder.exists() else []
    )
    return [r for r in records if "arm" in r and (names is None or r["name"] in names)]


# ------------------------------------------------------------------------------ aggregation


def arm_stats(records: list[dict], measure: str, where: str = "evaluation") -> dict:
    """Per arm: the values over its seeds of `measure`, their mean and standard deviation (ddof
    1; 0 for one seed)."""
    values: dict[str, list[float]] = {}
    for r in records:
        part = r.get(where, {}) if where == "evaluation" else r.get("samples", {}).get(where, {})
        if measure in part and part[measure] is not None:
            values.setdefault(r["arm"], []).append(float(part[measure]))
    out = {}
    for arm, v in values.items():
        sd = float(np.std(v, ddof=1)) if len(v) > 1 else 0.0
        out[arm] = {"values": v, "mean": float(np.mean(v)), "sd": sd, "n": len(v)}
    return out


def verdict(better: dict | None, worse: dict | None, higher_is_better: bool | None) -> str:
    """The paper says `better` beats `worse`: 'holds', 'reversed' or 'within the spread' (a
    difference counts only where it exceeds the two arms' standard deviations added)."""
    if not better or not worse:
        return "not run"
    a, b = better["mean"], worse["mean"]
    if higher_is_better is None:  # Nearer 1 is better.
        a, b = -abs(a - 1.0), -abs(b - 1.0)
    elif not higher_is_better:
        a, b = -a, -b
    spread = better["sd"] + worse["sd"]
    if better["n"] < 2 or worse["n"] < 2:
        return "one seed: no spread"
    if abs(a - b) <= spread:
        return "within the spread"
    return "holds" if a > b else "reversed"


def _fmt(stat: dict | None) -> str:
    if not stat:
        return "-"
    digits = 3 if abs(stat["mean"]) < 10 else 1
    text = f"{stat['mean']:.{digits}f}"
    return text + (f" ± {stat['sd']:.{digits}f}" if stat["n"] > 1 else "") + f" (n={stat['n']})"


def question_summary(question: dict, records: list[dict]) -> dict:
    """A question's numbers: per measure, each arm's stats over seeds (`arm_stats`), each arm's
    mean training wall time, and one verdict per comparison and measure."""
    where = question.get("where", "evaluation")
    measures = question.get("measures", ["fvd", "law"])
    mine = [r for r in records if r["arm"] in question["arms"]]
    stats = {m: arm_stats(mine, m, where) for m in measures}
    times: dict[str, list[float]] = {}
    for r in records:
        times.setdefault(r["arm"], []).append(r["seconds"].get("train", math.nan))
    verdicts = [
        {
            "better": better,
            "worse": worse,
            "verdicts": {
                m: verdict(stats[m].get(better), stats[m].get(worse), MEASURES[m][1])
                for m in measures
            },
        }
        for better, worse in question["comparisons"]
    ]
    return {
        "question": question["question"],
        "finding": question["finding"],
        "stats": stats,
        "train_seconds": {
            arm: float(np.nanmean(times[arm])) for arm in question["arms"] if arm in times
        },
        "comparisons": verdicts,
    }


def question_section(question: dict, summary: dict) -> list[str]:
    """A question's table (one row per arm, one column per measure, mean ± sd over seeds) and
    its verdicts (`question_summary`)."""
    measures = list(summary["stats"])
    lines = [f"## {question['id']}: {question['question']}", ""]
    lines.append(f"Paper: {question['finding']}")
    lines.append("")
    header = ["arm", *(MEASURES[m][0] for m in measures), "train wall time (s)"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for arm, label in question["arms"].items():
        cells = [label] + [_fmt(summary["stats"][m].get(arm)) for m in measures]
        t = summary["train_seconds"].get(arm)
        cells.append("-" if t is None or math.isnan(t) else f"{t:.0f}")
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    for comparison in summary["comparisons"]:
        parts = [f"{MEASURES[m][0]}: {v}" for m, v in comparison["verdicts"].items()]
        arms = question["arms"]
        lines.append(
            f"- {arms[comparison['better']]} against {arms[comparison['worse']]}: "
            + "; ".join(parts)
        )
    lines.append("")
    return lines


def long_summary(question: dict, records: list[dict]) -> dict:
    """Long videos of one arm's runs, one entry per way of making them (a sampling step of
    those runs): stats per measure, and the verdicts of the paper's method against ours."""
    runs = [r for r in records if r["arm"] == question["arm"]]
    measures = question["measures"]
    stats = {}
    for name in question["methods"]:
        relabelled = [{**r, "arm": name} for r in runs]
        stats[name] = {m: arm_stats(relabelled, m, name).get(name) for m in measures}
    comparisons = [
        {
            "better": better,
            "worse": worse,
            "verdicts": {
                m: verdict(stats[better][m], stats[worse][m], MEASURES[m][1])
                for m in question.get("verdict_measures", measures)
            },
        }
        for better, worse in question["comparisons"]
    ]
    return {
        "question": question["question"],
        "finding": question["finding"],
        "stats": stats,
        "comparisons": comparisons,
    }


def long_section(question: dict, summary: dict) -> list[str]:
    measures = question["measures"]
    lines = [
        f"## {question['id']}: {question['question']}",
        "",
        f"Paper: {question['finding']}",
        "",
    ]
    header = ["method", *(MEASURES[m][0] for m in measures)]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, label in question["methods"].items():
        cells = [label, *(_fmt(summary["stats"][name][m]) for m in measures)]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    for comparison in summary["comparisons"]:
        parts = [f"{MEASURES[m][0]}: {v}" for m, v in comparison["verdicts"].items()]
        methods = question["methods"]
        lines.append(
            f"- {methods[comparison['better']]} against {methods[comparison['worse']]}: "
            + "; ".join(parts)
        )
    lines.append("")
    return lines


# ------------------------------------------------------------------------------ the report


def write_report(config_arg: str, results_dir, runs: list[dict] | None = None) -> list[str]:
    """`report.md`, `report.json` (the same numbers: per question its stats and verdicts, and
    the floor) and the plots in `results_dir`, from the result JSONs there; returns the paths
    written (the report first)."""
    spec = load_study(config_arg)
    names = None if runs is None else {r["name"] for r in runs}
    records = read_results(results_dir, names)
    folder = fileio.path(results_dir)
    lines = [f"# {spec['title']}", "", *spec.get("preamble", []), ""]
    lines += [f"{len(records)} finished runs (result JSONs in this folder).", ""]
    summary = {"runs": len(records), "floor": floor_summary(spec, records)}
    body = []
    if summary["floor"]:
        body += _floor_section(spec, summary["floor"])
    for question in spec["questions"]:
        summary[question["id"]] = question_summary(question, records)
        body += question_section(question, summary[question["id"]])
    if spec.get("long_question"):
        question = spec["long_question"]
        summary[question["id"]] = long_summary(question, records)
        body += long_section(question, summary[question["id"]])
    lines += headline(spec, summary) + body
    plots = _plots(spec, records, folder)
    if runs is not None:
        plots += _grids(spec, runs, folder)
    if plots:
        lines += ["## Plots", ""] + [
            f"![{os.path.basename(p)}]({os.path.basename(p)})" for p in plots
        ]
        lines.append("")
    lines += ["## Commands", "", "```", *spec.get("commands", []), "```", ""]
    report = folder / "report.md"
    fileio.write_text(report, "\n".join(lines))
    fileio.write_text(folder / "report.json", json.dumps(summary, indent=1) + "\n")
    return [str(report), *plots]


def headline(spec: dict, summary: dict) -> list[str]:
    """One row per comparison the paper's findings imply: the two arms' FVD and data-law share
    (mean ± sd over seeds) and the verdict on each. The long-video question compares the law
    and the appearance change instead of FVD."""
    lines = ["## Headline", ""]
    lines += [
        "| question | the paper's finding | better (the paper) | against "
        "| FVD (long: appearance) | law share |",
        "|---|---|---|---|---|---|",
    ]
    questions = [*spec["questions"], *([spec["long_question"]] if "long_question" in spec else [])]
    for question in questions:
        numbers = summary[question["id"]]
        labels = question.get("arms") or question["methods"]
        long = "methods" in question
        for comparison in numbers["comparisons"]:
            better, worse = comparison["better"], comparison["worse"]
            cells = [f"{question['id']}", question["finding"], labels[better], labels[worse]]
            for measure in ("appearance_change", "law") if long else ("fvd", "law"):
                if long:
                    a, b = numbers["stats"][better][measure], numbers["stats"][worse][measure]
                else:
                    a, b = (numbers["stats"][measure].get(arm) for arm in (better, worse))
                said = comparison["verdicts"].get(measure, "-")
                name = "appearance " if measure == "appearance_change" else ""
                cells.append(f"{name}{_fmt(a)} vs {_fmt(b)}: **{said}**")
            lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    return lines


def floor_summary(spec: dict, records: list[dict]) -> dict:
    """What difference is noise: per floor arm (`spec['floor_arms']`), the FVD and KVD over its
    runs; a resampled arm (`spec['resampled_of']`: arm -> the run it samples again) counts the
    run's own evaluation among them."""
    out = {}
    for arm in spec.get("floor_arms", {}):
        runs = [r for r in records if r["arm"] == arm]
        original = spec.get("resampled_of", {}).get(arm)
        if runs and original:  # Resampled: the run's own evaluation is one more sampling seed.
            runs += [{**r, "arm": arm} for r in records if r["name"] == original]
        if runs:
            out[arm] = {m: arm_stats(runs, m).get(arm) for m in ("fvd", "kvd")}
    return out


def _floor_section(spec: dict, floor: dict) -> list[str]:
    lines = ["## What difference is noise", ""]
    lines += ["| | FVD | KVD |", "|---|---|---|"]
    for arm, stats in floor.items():
        values = ", ".join(f"{v:.1f}" for v in (stats["fvd"] or {}).get("values", []))
        label = spec["floor_arms"][arm]
        lines.append(f"| {label} ({values}) | {_fmt(stats['fvd'])} | {_fmt(stats['kvd'])} |")
    lines.append("")
    return lines


def _grids(spec: dict, runs: list[dict], folder) -> list[str]:
    """Per arm, a PNG of the first generated clips of its first run (the evaluation's `.npy`)
    beside as many real clips: `grid_<arm>.png`. Arms whose workdir is not here keep the PNG
    written before."""
    from vfjax import samples
    from vfjax.data import synthetic_law

    data = spec.get("data")
    written, seen = [], set()
    for run in runs:
        arm = run.get("arm", run["name"])
        path = evaluation_path(run["workdir"], run["fields"])
        if arm in seen or path is None or not path.with_suffix(".npy").exists():
            continue
        seen.add(arm)
        videos = np.asarray(fileio.load_npy(path.with_suffix(".npy")), np.float32)[:6]
        if data is not None and synthetic_law.applies(data):
            real = synthetic_law.real_clips(data, len(videos), videos.shape[1])
            image = samples.side_by_side(samples.filmstrips(videos), samples.filmstrips(real))
        else:
            image = samples.filmstrips(videos)
        written.append(samples.write_png(folder / f"grid_{arm}.png", image))
    return written


def _plots(spec: dict, records: list[dict], folder) -> list[str]:
    """The PNG plots `spec['plots']` names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for plot in spec.get("plots", []):
        fig, ax = plt.subplots(figsize=(5, 3.5))
        for series in plot["series"]:
            xs, ys = [], []
            for arm, x in series["arms"].items():
                for r in records:
                    if r["arm"] == arm and plot["measure"] in r.get("evaluation", {}):
                        value = r["evaluation"][plot["measure"]]
                        xs.append(r["seconds"].get("train", math.nan) if x == "time" else x)
                        ys.append(value)
            if xs:
                ax.scatter(xs, ys, label=series["label"], alpha=0.7)
                order = np.argsort(xs)
                means = {}
                for x, y in zip(np.asarray(xs)[order], np.asarray(ys)[order], strict=True):
                    means.setdefault(float(x), []).append(float(y))
                if plot.get("line"):
                    ax.plot(list(means), [np.mean(v) for v in means.values()], "-")
        ax.set_xlabel(plot["xlabel"])
        ax.set_ylabel(MEASURES[plot["measure"]][0])
        ax.set_title(plot["title"], fontsize=9)
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = folder / f"{plot['name']}.png"
        with fileio.local_file_for_writing(str(path)) as local:
            fig.savefig(local, dpi=110, format="png")
        plt.close(fig)
        written.append(str(path))
    return written
