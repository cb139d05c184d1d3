"""Named evaluation protocols: every choice that moves FVD/KVD/IS, as data.

Published video FVDs differ in sample counts, clip sampling, resizing and the covariance
normaliser, and the numbers are not comparable across those choices. A protocol fixes them all,
and ``describe`` turns one into the record a result JSON carries next to its numbers.

Presets (from the public evaluation code of each; every field is spelled out below):

- ``stylegan_v`` (universome/stylegan-v, ``fvd2048_16f`` and ``isv2048_ucf``): 2048 generated and
  2048 real clips of 16 consecutive frames, one window at a random offset per real video, at the
  training resolution; frames stored as uint8; covariance normalised by N; IS with 2048 samples
  in 10 splits. The resize to 224 happens inside its TorchScript I3D, whose source is not
  published; bilinear with half-pixel centres (PyTorch's default) is our reading of it.
- ``tats`` (songweige/TATS, after VideoGPT): 2048 + 2048 clips of 16 frames at resolution 128
  (every 4th frame on TaiChi-HD), real clips drawn at random from the shuffled training clips,
  stored as uint8, resized to 224 with ``F.interpolate(bilinear, align_corners=False)``;
  covariance normalised by N - 1; KVD with the polynomial kernel over all clips. Its IS settings
  are those of TGANv2's script for the same C3D (10 runs of 2048 samples, one split each).
"""

import dataclasses
from collections.abc import Sequence
from typing import Any

from vfjax.evaluation.features import FeatureNetwork
from vfjax.evaluation.i3d import MIN_FRAMES
from vfjax.evaluation.resize import RESIZE_METHODS

REAL_CLIP_SAMPLINGS = ("random_window", "random_clip")


@dataclasses.dataclass(frozen=True)
class EvalProtocol:
    """How generated and real clips are drawn, prepared and compared.

    Attributes:
        name: Preset name recorded in results.
        num_generated: Generated clips for FVD/KVD.
        num_real: Real clips for FVD/KVD.
        num_frames: Frames per clip (I3D needs at least 9).
        stride: Frame step inside a real clip, unless ``stride_overrides`` names the data set.
        stride_overrides: ``(data set, stride)`` pairs, e.g. ``(('taichi', 4),)``.
        resolution: Input size of the feature network (I3D: 224).
        clip_resolution: Size clips are brought to before that resize (the training resolution of
            the compared models); ``None`` means the data config's resolution.
        resize_method: Convention of the resize to ``resolution`` (``resize.RESIZE_METHODS``).
        quantize: Round clips to 8 bits before the network, as the references store samples.
        covariance_ddof: Covariance normaliser N - ddof (0 or 1).
        compute_kvd: Report KVD alongside FVD.
        compute_is: Report the C3D Inception Score (UCF-101 only: the classifier knows its classes).
        is_num_generated: Generated clips for the Inception Score.
        is_splits: Splits of those clips (mean and std over splits).
        real_clip_sampling: ``'random_window'`` (one window at a random offset per video) or
            ``'random_clip'`` (windows drawn at random among all windows of all videos).
        split: Data split the real clips come from; None: the split the run trained on
            (`data.split`, e.g. 'train+test' for unconditional UCF101), as both presets' code
            draws its real clips from the training data.
        comparable: Whether results can be set beside published numbers (the presets of the
            papers' code); False for the small CPU preset.
    """

    name: str
    num_generated: int
    num_real: int
    num_frames: int
    stride: int
    stride_overrides: tuple[tuple[str, int], ...]
    resolution: int
    clip_resolution: int | None
    resize_method: str
    quantize: bool
    covariance_ddof: int
    compute_kvd: bool
    compute_is: bool
    is_num_generated: int
    is_splits: int
    real_clip_sampling: str
    split: str | None
    comparable: bool = True

    def __post_init__(self):
        if self.resize_method not in RESIZE_METHODS:
            raise ValueError(
                f"resize_method {self.resize_method!r} is not one of {RESIZE_METHODS}."
            )
        if self.real_clip_sampling not in REAL_CLIP_SAMPLINGS:
            raise ValueError(
                f"real_clip_sampling {self.real_clip_sampling!r} is not one of "
                f"{REAL_CLIP_SAMPLINGS}."
            )
        if self.num_frames < MIN_FRAMES:
            raise ValueError(f"num_frames must be >= {MIN_FRAMES} for I3D, got {self.num_frames}.")
        if self.covariance_ddof not in (0, 1):
            raise ValueError(f"covariance_ddof must be 0 or 1, got {self.covariance_ddof}.")
        counts = (self.num_generated, self.num_real, self.stride, self.is_num_generated)
        if min(counts) < 1 or not 1 <= self.is_splits <= self.is_num_generated:
            raise ValueError(
                f"Protocol {self.name!r} needs positive counts and 1 <= is_splits <= N."
            )

    def stride_for(self, dataset: str) -> int:
        """The frame stride of real clips of ``dataset``."""
        return dict(self.stride_overrides).get(dataset, self.stride)

    def split_for(self, training_split: str) -> str:
        """The split of the real clips of a run trained on ``training_split``."""
        return self.split or training_split


PROTOCOLS = {
    "stylegan_v": EvalProtocol(
        name="stylegan_v",
        num_generated=2048,
        num_real=2048,
        num_frames=16,
        stride=1,
        stride_overrides=(),
        resolution=224,
        clip_resolution=None,
        resize_method="bilinear_half_pixel",
        quantize=True,
        covariance_ddof=0,
        compute_kvd=False,
        compute_is=True,
        is_num_generated=2048,
        is_splits=10,
        real_clip_sampling="random_window",
        split=None,
    ),
    "tats": EvalProtocol(
        name="tats",
        num_generated=2048,
        num_real=2048,
        num_frames=16,
        stride=1,
        stride_overrides=(("taichi", 4),),
        resolution=224,
        clip_resolution=128,
        resize_method="bilinear_half_pixel",
        quantize=True,
        covariance_ddof=1,
        compute_kvd=True,
        compute_is=True,
        is_num_generated=2048 * 10,
        is_splits=10,
        real_clip_sampling="random_clip",
        split=None,
    ),
}


# A protocol sized for a CPU: I3D's shortest clip (9 frames) and 128 clips a side, minutes on
# two cores. Its FVD is for following a run, not for comparing with published numbers (FVD of
# 128 clips is biased upwards and noisy).
PROTOCOLS["cpu"] = dataclasses.replace(
    PROTOCOLS["stylegan_v"],
    name="cpu",
    num_generated=128,
    num_real=128,
    num_frames=MIN_FRAMES,
    compute_kvd=True,
    compute_is=False,
    is_num_generated=128,
    is_splits=1,
    comparable=False,
)


def get_protocol(name: str, **overrides: Any) -> EvalProtocol:
    """Returns preset ``name`` with fields replaced by ``overrides`` (validated)."""
    if name not in PROTOCOLS:
        raise ValueError(f"Unknown evaluation protocol {name!r}; presets: {sorted(PROTOCOLS)}.")
    return dataclasses.replace(PROTOCOLS[name], **overrides)


def describe(
    protocol: EvalProtocol,
    *,
    dataset: str,
    networks: Sequence[FeatureNetwork],
    seed: int,
    checkpoint_step: int,
    training_split: str = "train",
) -> dict[str, Any]:
    """Everything a result JSON must record about how its numbers were made.

    Args:
        protocol: The protocol used.
        dataset: Data set name (``data.name``), which also picks the stride.
        networks: The feature networks used (I3D; C3D when IS is reported).
        seed: Seed of the sampling and of the real-clip draw.
        checkpoint_step: Training step of the evaluated checkpoint.
        training_split: The split the run trained on (``data.split``).
    """
    return {
        "protocol": protocol.name,
        "dataset": dataset,
        "split": protocol.split_for(training_split),
        "training_split": training_split,
        "num_generated": protocol.num_generated,
        "num_real": protocol.num_real,
        "num_frames": protocol.num_frames,
        "stride": protocol.stride_for(dataset),
        "resolution": protocol.resolution,
        "clip_resolution": protocol.clip_resolution,
        "resize_method": protocol.resize_method,
        "quantize": protocol.quantize,
        "covariance_ddof": protocol.covariance_ddof,
        "real_clip_sampling": protocol.real_clip_sampling,
        "comparable_with_published": protocol.comparable,
        "compute_kvd": protocol.compute_kvd,
        "compute_is": protocol.compute_is,
        "is_num_generated": protocol.is_num_generated if protocol.compute_is else None,
        "is_splits": protocol.is_splits if protocol.compute_is else None,
        "feature_networks": [
            {"name": n.name, "weights": [{"file": f, "sha256": h} for f, h in n.weights]}
            for n in networks
        ],
        "seed": seed,
        "checkpoint_step": checkpoint_step,
    }
