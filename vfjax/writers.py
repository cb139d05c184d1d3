"""Where a run's metrics go: TensorBoard, the log, and `metrics.jsonl` (the contract of
docs/design.md, section 5.6: one JSON object per logged step with at least `step` and `loss`).

`create_writers` gives process 0 clu's default writer (TensorBoard events and the log) plus a
`JsonlWriter`, and every other process writers that only log. Every file goes through
`vfjax.fileio`, so a workdir on a bucket gets them too.
"""

import json

import numpy as np
from clu import metric_writers

from vfjax import fileio


class JsonlWriter(metric_writers.MetricWriter):
    """Appends one JSON object per step to a file, at each flush (images and the rest are not
    its business)."""

    def __init__(self, path):
        self._path = fileio.path(path)
        self._rows: dict[int, dict] = {}

    def write_scalars(self, step: int, scalars) -> None:
        row = self._rows.setdefault(int(step), {"step": int(step)})
        row.update({k: float(np.asarray(v)) for k, v in scalars.items()})

    def write_summaries(self, step, values, metadata=None):
        return None  # The JSONL file keeps scalars only (clu's MetricWriter asks for all).

    def write_images(self, step, images):
        return None  # The JSONL file keeps scalars only (clu's MetricWriter asks for all).

    def write_videos(self, step, videos):
        return None  # The JSONL file keeps scalars only (clu's MetricWriter asks for all).

    def write_audios(self, step, audios, *, sample_rate):
        return None  # The JSONL file keeps scalars only (clu's MetricWriter asks for all).

    def write_texts(self, step, texts):
        return None  # The JSONL file keeps scalars only (clu's MetricWriter asks for all).

    def write_histograms(self, step, arrays, num_buckets=None):
        return None  # The JSONL file keeps scalars only (clu's MetricWriter asks for all).

    def write_pointcloud(self, step, point_clouds, *, point_colors=None, configs=None):
        return None  # The JSONL file keeps scalars only (clu's MetricWriter asks for all).

    def write_hparams(self, hparams):
        return None  # The JSONL file keeps scalars only (clu's MetricWriter asks for all).

    def flush(self) -> None:
        if self._rows:
            lines = "".join(json.dumps(self._rows[s]) + "\n" for s in sorted(self._rows))
            fileio.append_text(self._path, lines)
            self._rows = {}

    def close(self) -> None:
        self.flush()


def trim_metrics(path, last_step: int) -> None:
    """Drops rows after `last_step` (logged after the checkpoint a run resumes from), so the
    file of a resumed run holds each step once."""
    rows = fileio.read_jsonl(path)
    kept = [r for r in rows if r["step"] <= last_step]
    if len(kept) != len(rows):
        fileio.write_text(path, "".join(json.dumps(r) + "\n" for r in kept))


def create_writers(workdir, is_main: bool):
    """`(metrics, summaries)`: `metrics` for the logged training metrics (TensorBoard, the log and
    `metrics.jsonl`), `summaries` for everything else (TensorBoard and the log: preview strips and
    their measures). On processes other than 0, both only log."""
    if not is_main:
        log = metric_writers.LoggingWriter()
        return log, log
    default = metric_writers.create_default_writer(str(workdir), asynchronous=False)
    jsonl = JsonlWriter(fileio.join(workdir, "metrics.jsonl"))
    return metric_writers.MultiWriter([default, jsonl]), default
