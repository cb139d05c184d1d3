"""The synthetic set's law, as a score of each clip: does it show what the data holds?

A real clip of `vfjax.data.synthetic` (one object) holds one object of one shape kind, of one
size and one brightness, moving at a constant velocity and bouncing off the walls. The
frame-consistency measures (`vfjax.consistency`) compare the frames of a clip with each other;
this module compares a clip with that law, so a smooth clip of a blob that grows, dims or turns
from a circle into a triangle fails here.

Each frame is fitted with the data's own renderer (`synthetic.coverage`): for every shape kind,
the centre, half-size and brightness that draw the frame best (Levenberg-Marquardt on all frames
at once, NumPy). A clip is then checked on five criteria:

- `one_object`: every frame holds exactly one bright connected region;
- `shape`: every frame is drawn well (relative residual under `shape_residual`) by one and the
  same shape kind, the one that fits it best;
- `size`: the fitted half-size stays within `size_tolerance` of the clip's median, which lies in
  the data's size range (widened by the same tolerance);
- `brightness`: the fitted brightness of every channel stays within `brightness_tolerance` of
  the clip's median, and the object is at least as bright as the data's dimmest (less the
  tolerance);
- `track`: the fitted centres follow the data's bouncing path (constant velocity, reflected at
  the walls the object's size leaves) to within `track_rms` pixels, at a speed inside the data's
  range widened by `speed_margin`.

A clip obeys the law when it passes all five. The tolerances are calibrated on real clips (at
least 95% pass) and on clips broken on purpose (a frame swapped, the object resized, dimmed or
reshaped mid-clip, a second object), which fail: `tests/test_synthetic_law.py`.
"""

import dataclasses

import numpy as np
from scipy import ndimage

from vfjax.data import config as config_lib
from vfjax.data import synthetic

CRITERIA = ("one_object", "shape", "size", "brightness", "track")
# The two halves of `shape`, reported beside the criteria to say which one fails: the best kind
# is the same in every frame (`one_kind`), and every frame is drawn well by its best kind
# (`drawn_well`). An undertrained model draws crisp shapes whose kind changes over the clip.
SHAPE_PARTS = ("one_kind", "drawn_well")
KINDS = synthetic.SHAPES

# Area of each shape kind in units of its half-size squared, as `synthetic.coverage` draws it:
# the fit starts from the size that a frame's total brightness implies.
_AREA = {
    "square": (2 * 0.8) ** 2,
    "circle": np.pi,
    "triangle": 2.0,
    "cross": 2 * (2 * 0.66) - 0.66**2,
}
# Centroid of each kind below its centre, in half-sizes (the triangle's apex points up).
_CENTROID_Y = {"square": 0.0, "circle": 0.0, "triangle": 1.0 / 3.0, "cross": 0.0}
# The dimmest palette colour's luma (255, 90, 90): 0.545.
_MIN_LUMA = float((synthetic.PALETTE @ synthetic._LUMA).min() / 255.0)


@dataclasses.dataclass(frozen=True)
class Law:
    """The data's law (sizes and speeds in pixels) and the tolerance of each criterion."""

    resolution: int
    size_range: tuple[float, float]
    speed_range: tuple[float, float]
    # A pixel belongs to an object where its luma (0-1) exceeds this: under half the dimmest
    # colour's (0.545), so the anti-aliased arms of the smallest cross stay connected.
    threshold: float = 0.25
    # Connected regions holding less light than this (in fully lit pixels) are specks.
    min_mass: float = 0.75
    shape_residual: float = 0.12
    size_tolerance: float = 0.12
    brightness_tolerance: float = 0.12
    track_rms: float = 0.35
    speed_margin: float = 0.25

    @classmethod
    def of(cls, data_config, **tolerances) -> "Law":
        """The law of the synthetic data set that `data_config` (`config.data`) describes."""
        source = synthetic.synthetic_source(data_config)
        if source.num_objects != 1:
            raise ValueError(
                "The synthetic law is defined for clips of one object; "
                f"data.synthetic.num_objects={source.num_objects}."
            )
        return cls(
            resolution=source.resolution,
            size_range=tuple(float(x) for x in source.size_range),
            speed_range=tuple(float(x) for x in source.speed_range),
            **tolerances,
        )


def applies(data_config) -> bool:
    """Whether `data_config` (`config.data`) is data the law describes: synthetic clips of one
    object."""
    if data_config.name != "synthetic":
        return False
    synthetic_config = data_config.get("synthetic", None)
    return synthetic_config is None or synthetic_config.get("num_objects", 1) == 1


# ------------------------------------------------------------------------------ one frame


def _luma(frames: np.ndarray) -> np.ndarray:
    """`[F, H, W, C]` in [-1, 1] -> luma `[F, H, W]` in [0, 1] (grey scale is its own luma)."""
    x = (np.asarray(frames, np.float32) + 1.0) / 2.0
    if x.shape[-1] == 1:
        return x[..., 0]
    return x @ synthetic._LUMA


def _regions(luma: np.ndarray, law: Law) -> tuple[np.ndarray, np.ndarray]:
    """Per frame: how many objects (connected bright regions, specks left out) and the mask of
    the one holding the most light `[F, H, W]`."""
    counts = np.zeros(luma.shape[0], np.int32)
    largest = np.zeros(luma.shape, bool)
    eight = np.ones((3, 3), bool)
    for f, frame in enumerate(luma):
        labels, n = ndimage.label(frame > law.threshold, structure=eight)
        if n == 0:
            continue
        mass = ndimage.sum_labels(frame, labels, index=np.arange(1, n + 1))
        counts[f] = int(np.sum(mass >= law.min_mass))
        largest[f] = labels == 1 + int(np.argmax(mass))
    return counts, largest


def _render(kind: str, params: np.ndarray, res: int) -> np.ndarray:
    """`brightness * coverage` `[F, H, W]` for per-frame `params [F, 4]` = (cx, cy, size, a)."""
    pixels = np.arange(res, dtype=np.float32) + 0.5
    size = np.maximum(params[:, 2], 0.1)[:, None, None]
    cov = synthetic.coverage(
        kind, params[:, :2], size, pixels[None, None, :], pixels[None, :, None]
    )
    return params[:, 3, None, None] * cov


def _fit_kind(kind: str, luma: np.ndarray, start: np.ndarray, res: int, iterations: int = 25):
    """Levenberg-Marquardt fit of one kind to every frame at once. Returns `(params [F, 4],
    squared residual [F])`. The Jacobian is by central differences: coverage is piecewise
    linear in the centre and size (and linear in the brightness)."""
    params = start.astype(np.float64)
    target = luma.reshape(luma.shape[0], -1).astype(np.float64)

    def residual(p):
        return target - _render(kind, p.astype(np.float32), res).reshape(target.shape)

    r = residual(params)
    cost = np.sum(r * r, axis=1)
    damping = np.full(params.shape[0], 1e-2)
    h = 0.02
    for _ in range(iterations):
        cols = []
        for j in range(3):
            step = np.zeros_like(params)
            step[:, j] = h
            cols.append((residual(params - step) - residual(params + step)) / (2 * h))
        cols.append(-(target - r) / np.maximum(params[:, 3:4], 1e-3))  # d model / d brightness
        jac = -np.stack(cols, axis=-1)  # d residual / d params: [F, P, 4]
        jtj = np.matmul(jac.transpose(0, 2, 1), jac)  # Batched BLAS: far faster than einsum.
        jtr = np.matmul(jac.transpose(0, 2, 1), r[..., None])[..., 0]
        scaled = jtj + damping[:, None, None] * (
            np.eye(4)[None] * np.diagonal(jtj, axis1=1, axis2=2)[:, None, :] + 1e-6 * np.eye(4)
        )
        delta = -np.linalg.solve(scaled, jtr[..., None])[..., 0]
        trial = params + delta
        trial[:, 2] = np.clip(trial[:, 2], 0.3, res / 2)
        r_trial = residual(trial)
        cost_trial = np.sum(r_trial * r_trial, axis=1)
        better = cost_trial < cost
        params = np.where(better[:, None], trial, params)
        r = np.where(better[:, None], r_trial, r)
        cost = np.where(better, cost_trial, cost)
        damping = np.where(better, damping / 3, damping * 4)
    return params.astype(np.float32), cost


def fit_frames(frames: np.ndarray, law: Law) -> dict[str, np.ndarray]:
    """Fits every frame `[F, H, W, C]` (in [-1, 1]) with each shape kind.

    Returns per frame: `objects [F]` (bright regions), `kind [F]` (index into `KINDS` of the
    best fit), `residual [F]` (its squared error over the frame's energy), `centre [F, 2]`
    (x, y in pixels), `size [F]` (half-size in pixels), `brightness [F, C]` (per channel, 0-1).
    """
    frames = np.asarray(frames, np.float32)
    num, res = frames.shape[0], frames.shape[1]
    luma = _luma(frames)
    objects, largest = _regions(luma, law)
    # Starting point from the brightest region and its one-pixel rim (its anti-aliased edge).
    region = ndimage.binary_dilation(largest, structure=np.ones((1, 3, 3), bool))
    weights = np.where(region, luma, 0.0)
    mass = weights.sum(axis=(1, 2))
    pixels = np.arange(res, dtype=np.float32) + 0.5
    safe = np.maximum(mass, 1e-6)
    cx = (weights.sum(axis=1) * pixels).sum(axis=1) / safe
    cy = (weights.sum(axis=2) * pixels).sum(axis=1) / safe
    peak = np.maximum(np.where(largest, luma, 0.0).max(axis=(1, 2)), law.threshold)
    energy = np.maximum(np.sum(np.square(luma), axis=(1, 2)), 1e-6)

    fits, costs = [], []
    for kind in KINDS:
        size = np.sqrt(mass / (peak * _AREA[kind]))
        start = np.stack([cx, cy - _CENTROID_Y[kind] * size, size, peak], axis=-1)
        params, cost = _fit_kind(kind, luma, start, res)
        fits.append(params)
        costs.append(cost / energy)
    costs = np.stack(costs, axis=-1)  # [F, kinds]
    best = np.argmin(costs, axis=-1)
    params = np.stack(fits, axis=1)[np.arange(num), best]  # [F, 4]
    # Per-channel brightness under the best fit's coverage (grey scale: the luma itself).
    unit = params.copy()
    unit[:, 3] = 1.0
    cover = np.stack([_render(KINDS[k], unit[f : f + 1], res)[0] for f, k in enumerate(best)])
    channels = (frames + 1.0) / 2.0
    norm = np.maximum(np.sum(cover * cover, axis=(1, 2)), 1e-6)
    brightness = np.einsum("fhw,fhwc->fc", cover, channels) / norm[:, None]
    return {
        "objects": objects,
        "kind": best.astype(np.int32),
        "residual": costs[np.arange(num), best].astype(np.float32),
        "centre": params[:, :2],
        "size": params[:, 2],
        "brightness": brightness.astype(np.float32),
    }


# ------------------------------------------------------------------------------ one clip


def fit_track(centres: np.ndarray, sizes: np.ndarray, law: Law) -> tuple[np.ndarray, np.ndarray]:
    """The bouncing paths closest to clips' centres `[B, N, 2]` for objects of half-sizes
    `sizes [B]`: their RMS distance from the centres (pixels) and their speeds (pixels per
    frame), each `[B]`.

    Per axis, `synthetic.bouncing_path`'s law: the centre is `size + fold(u0 + v t)`, with `fold`
    the triangle wave of the room `L = resolution - 2 size`. A grid over the start `u0` and the
    velocity `v`, then two finer ones around the best: the fold makes the error many-valleyed, so
    a local search from one guess would stop in the wrong valley.
    """
    centres = np.asarray(centres, np.float32)
    b, n = centres.shape[:2]
    t = np.arange(n, dtype=np.float32)
    sizes = np.asarray(sizes, np.float32)
    room = np.maximum(law.resolution - 2.0 * sizes, 1e-3)  # [B]
    vmax = 1.5 * law.speed_range[1]
    du, dv = 0.1, min(0.04, 0.5 / max(n - 1, 1))
    coarse_v = np.arange(-vmax, vmax + dv, dv)
    # The path starts near the first centre: at `u0 = p` moving one way or `2L - p` the other.
    offsets = np.arange(-0.6, 0.6 + du / 2, du)

    def best(u0, v, observed):
        """`u0 [B, U]`, `v [B, V]` -> the best pair per clip and its mean squared error."""
        free = u0[:, :, None, None] + v[:, None, :, None] * t  # [B, U, V, N]
        r = room[:, None, None, None]
        path = sizes[:, None, None, None] + r - np.abs(np.mod(free, 2 * r) - r)
        err = np.mean(np.square(path - observed[:, None, None, :]), axis=-1)
        flat = err.reshape(b, -1).argmin(axis=1)
        i, j = np.unravel_index(flat, err.shape[1:])
        rows = np.arange(b)
        return u0[rows, i], v[rows, j], err[rows, i, j]

    squared, velocity = [], []
    for axis in range(2):
        observed = centres[:, :, axis]
        p = (observed[:, 0] - sizes)[:, None]
        u0 = np.concatenate([p + offsets, 2 * room[:, None] - p + offsets], axis=1)
        v = np.broadcast_to(coarse_v, (b, coarse_v.size))
        step_u, step_v = du, dv
        for _ in range(3):
            u_best, v_best, err = best(u0, v, observed)
            u0 = u_best[:, None] + np.linspace(-step_u, step_u, 11)[None]
            v = v_best[:, None] + np.linspace(-step_v, step_v, 11)[None]
            step_u, step_v = step_u / 5, step_v / 5
        squared.append(err)
        velocity.append(v_best)
    return np.sqrt(np.mean(squared, axis=0)), np.hypot(*velocity)


def fit_clips(videos: np.ndarray, law: Law) -> dict[str, np.ndarray]:
    """`fit_frames` of clips `[B, N, H, W, C]` (in [-1, 1]), each value shaped `[B, N, ...]`: what
    `score_fits` and `turns` read, so that one fit serves every span of a long video."""
    videos = np.asarray(videos, np.float32)
    if videos.ndim != 5:
        raise ValueError(f"need videos [B, N, H, W, C], got shape {videos.shape}")
    b, n = videos.shape[:2]
    fit = fit_frames(videos.reshape((b * n,) + videos.shape[2:]), law)
    return {k: v.reshape((b, n) + v.shape[1:]) for k, v in fit.items()}


def score_clips(videos: np.ndarray, law: Law) -> dict[str, np.ndarray]:
    """Scores clips `[B, N, H, W, C]` (in [-1, 1]) on the law: `score_fits(fit_clips(...))`."""
    return score_fits(fit_clips(videos, law), law)


def score_fits(fit: dict[str, np.ndarray], law: Law) -> dict[str, np.ndarray]:
    """Scores clips on the law from their frames' fits (`fit_clips`, or a span of its frames).

    Returns per clip `[B]`: a boolean per criterion (`CRITERIA`), `obeys` (all of them), the two
    halves of `shape` (`SHAPE_PARTS`), and the fitted values behind them: `kind` (the most
    frequent best kind), `half_size` (pixels), `luma` (of the median colour), `speed`,
    `track_rms`, `shape_residual` (worst frame), `size_change`, `brightness_change` (largest
    relative departure from the clip's median).
    """
    b = fit["kind"].shape[0]
    out = {name: np.zeros(b, bool) for name in CRITERIA}
    parts = {name: np.zeros(b, bool) for name in SHAPE_PARTS}
    values = {
        name: np.full(b, np.nan, np.float32)
        for name in (
            "half_size",
            "luma",
            "speed",
            "track_rms",
            "shape_residual",
            "size_change",
            "brightness_change",
        )
    }
    kinds = np.zeros(b, np.int32)
    sizes = np.median(fit["size"], axis=1)
    values["track_rms"], values["speed"] = fit_track(fit["centre"], sizes, law)
    lo_size, hi_size = law.size_range
    lo_speed, hi_speed = law.speed_range
    for i in range(b):
        kind = fit["kind"][i]
        kinds[i] = np.bincount(kind, minlength=len(KINDS)).argmax()
        out["one_object"][i] = bool(np.all(fit["objects"][i] == 1))
        values["shape_residual"][i] = fit["residual"][i].max()
        parts["one_kind"][i] = bool(np.all(kind == kind[0]))
        parts["drawn_well"][i] = bool(fit["residual"][i].max() <= law.shape_residual)
        out["shape"][i] = parts["one_kind"][i] and parts["drawn_well"][i]

        size = fit["size"][i]
        median_size = float(np.median(size))
        values["half_size"][i] = median_size
        values["size_change"][i] = np.max(np.abs(size / max(median_size, 1e-6) - 1.0))
        tol = law.size_tolerance
        out["size"][i] = bool(
            values["size_change"][i] <= tol
            and lo_size * (1 - tol) <= median_size <= hi_size * (1 + tol)
        )

        colour = fit["brightness"][i]  # [N, C]
        median_colour = np.median(colour, axis=0)
        change = np.abs(colour / np.maximum(median_colour, 1e-3) - 1.0)
        values["brightness_change"][i] = change.max()
        luma = float(
            median_colour.mean() if colour.shape[1] == 1 else median_colour @ synthetic._LUMA
        )
        values["luma"][i] = luma
        tol = law.brightness_tolerance
        out["brightness"][i] = bool(change.max() <= tol and luma >= _MIN_LUMA * (1 - tol))

        rms, speed = values["track_rms"][i], values["speed"][i]
        margin = law.speed_margin
        out["track"][i] = bool(
            rms <= law.track_rms and lo_speed * (1 - margin) <= speed <= hi_speed * (1 + margin)
        )
    out["obeys"] = np.all(np.stack([out[c] for c in CRITERIA]), axis=0)
    return {**out, **parts, **values, "kind": kinds}


def counts(scores: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """How many clips of `score_clips` pass each criterion and the law, and the kinds of those
    that obey it: fixed-size sums, so batches (or processes) add theirs up."""
    obeying = scores["kind"][scores["obeys"]]
    out = {c: np.int64(np.sum(scores[c])) for c in (*CRITERIA, *SHAPE_PARTS, "obeys")}
    out["num_clips"] = np.int64(scores["obeys"].shape[0])
    out["kinds"] = np.bincount(obeying, minlength=len(KINDS)).astype(np.int64)
    return out


def empty_counts() -> dict[str, np.ndarray]:
    """The counts of no clip."""
    out = {c: np.int64(0) for c in (*CRITERIA, *SHAPE_PARTS, "obeys", "num_clips")}
    out["kinds"] = np.zeros(len(KINDS), np.int64)
    return out


def add_counts(a: dict | None, b: dict) -> dict:
    """The counts of two sets of clips together (`a` None: `b`)."""
    return dict(b) if a is None else {k: a[k] + b[k] for k in b}


def report_from_counts(totals: dict, law: Law) -> dict:
    """JSON-ready: the share of clips that obey the law, the share passing each criterion, the
    shape kinds drawn by the clips that obey, the share passing each half of `shape`
    (`shape_parts`), and the tolerances used."""
    num = int(totals["num_clips"])
    share = lambda k: round(float(totals[k]) / max(num, 1), 4)  # noqa: E731
    return {
        "num_clips": num,
        "share": share("obeys"),
        "criteria": {c: share(c) for c in CRITERIA},
        "kinds": {k: int(n) for k, n in zip(KINDS, np.asarray(totals["kinds"]), strict=True)},
        # Counts cached before the parts existed (evaluation's real-clip cache) have none.
        "shape_parts": {p: share(p) for p in SHAPE_PARTS if p in totals},
        "tolerances": {
            f.name: getattr(law, f.name)
            for f in dataclasses.fields(law)
            if f.name not in ("resolution", "size_range", "speed_range")
        },
    }


def reversals(
    videos: np.ndarray, law: Law, min_step: float = 0.15, wall_margin: float = 1.0
) -> np.ndarray:
    """`[B, N]` bool: the frames of clips `[B, N, H, W, C]` where the object turns back along an
    axis away from the walls: its fitted centre moves at least `min_step` pixels one way into the
    frame and as much the other way out of it, while more than `wall_margin` pixels from the
    walls its size leaves. The data's objects turn only at the walls (real clips: none); where a
    long video's track breaks, this says at which frames."""
    return turns(fit_clips(videos, law), law, min_step, wall_margin)


def turns(
    fit: dict[str, np.ndarray], law: Law, min_step: float = 0.15, wall_margin: float = 1.0
) -> np.ndarray:
    """`reversals` from the frames' fits (`fit_clips`)."""
    centre, size = fit["centre"], fit["size"][..., None]
    b, n = centre.shape[:2]
    step = np.diff(centre, axis=1)  # [B, N - 1, 2]
    before, after = step[:, :-1], step[:, 1:]
    turned = (np.abs(before) >= min_step) & (np.abs(after) >= min_step)
    turned &= np.sign(before) != np.sign(after)
    inside = (centre[:, 1:-1] > size[:, 1:-1] + wall_margin) & (
        centre[:, 1:-1] < law.resolution - size[:, 1:-1] - wall_margin
    )
    out = np.zeros((b, n), bool)
    out[:, 1:-1] = np.any(turned & inside, axis=-1)
    return out


def _count_turns(turned: np.ndarray, seams: list[int] | None) -> dict:
    out = {
        "count": int(turned.sum()),
        "per_100_frames": round(100.0 * float(turned.mean()), 3),
    }
    if seams:
        out["at_seams"] = int(turned[:, [s for s in seams if 0 <= s < turned.shape[1]]].sum())
    return out


def reversal_report(videos: np.ndarray, law: Law, seams: list[int] | None = None) -> dict:
    """`reversals` of clips, counted: per 100 frames, and (a long video's `seams`, the last held
    frame before each clip's new ones) how many fall there."""
    return _count_turns(reversals(videos, law), seams)


def long_report(
    videos: np.ndarray, law: Law, clip_length: int, seams: list[int] | None = None
) -> dict:
    """`report` of long videos `[B, F, H, W, C]`, whole, from one fit of their frames, with
    where the law breaks: `by_length`, the share obeying it (and each criterion) over the first
    `clip_length * 2^j` frames; `windows`, over the videos cut into clips of `clip_length`
    frames (how a model's own clips fare inside its long videos); and `reversals`
    (`reversal_report`). Videos of `clip_length` frames or fewer get the report and `reversals`
    alone."""
    fit = fit_clips(videos, law)
    total = fit["kind"].shape[1]
    span = lambda a, b: {k: v[:, a:b] for k, v in fit.items()}  # noqa: E731
    brief = lambda scores: {  # noqa: E731
        "share": round(float(scores["obeys"].mean()), 4),
        "criteria": {c: round(float(scores[c].mean()), 4) for c in CRITERIA},
    }
    out = report_from_counts(counts(score_fits(fit, law)), law)
    out["reversals"] = _count_turns(turns(fit, law), seams)
    if total <= clip_length:
        return out
    lengths, length = [], clip_length
    while length < total:
        lengths.append(length)
        length *= 2
    out["by_length"] = {str(n): brief(score_fits(span(0, n), law)) for n in lengths + [total]}
    starts = range(0, total - clip_length + 1, clip_length)
    windows = {
        k: np.concatenate([v[:, s : s + clip_length] for s in starts]) for k, v in fit.items()
    }
    out["windows"] = {"clip_length": clip_length, **brief(score_fits(windows, law))}
    return out


def report(videos: np.ndarray, law: Law) -> dict:
    """`report_from_counts` of clips `[B, N, H, W, C]`."""
    return report_from_counts(counts(score_clips(videos, law)), law)


def real_clips(data_config, count: int, num_frames: int | None = None) -> np.ndarray:
    """The first `count` clips of the synthetic set of `data_config`, of `num_frames` frames
    (default: the config's), in [-1, 1]: the real side of the law's report (for long videos,
    real videos of the same length)."""
    data = config_lib.with_defaults(data_config)  # A copy.
    if num_frames is not None:
        data.num_frames = num_frames
    source = synthetic.synthetic_source(data)
    clips = np.stack([source[i]["video"] for i in range(min(count, len(source)))])
    return clips.astype(np.float32) / 127.5 - 1.0
