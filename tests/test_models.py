"""The two generators and the composite models: shapes, frame embedding, dtypes, gradients,
and learning on one tiny video."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from vfjax.diffusion.process import Diffusion
from vfjax.models import init
from vfjax.models import videofusion as vf
from vfjax.models.architecture import UNet2DConfig, UNet3DConfig
from vfjax.models.unet2d import UNet2D
from vfjax.models.unet3d import UNet3D

TINY = dict(channels=16, channel_mult=(1, 2), num_res_blocks=1, head_dim=8, num_groups=8)


def tiny2d(**kw):
    return UNet2DConfig(**{**TINY, "image_size": 16, "attn_resolutions": (8,), **kw})


def tiny3d(**kw):
    base = {
        **TINY,
        "image_size": 16,
        "attn_resolutions": (8,),
        "temporal_attn_resolutions": (16, 8),
    }
    return UNet3DConfig(**{**base, **kw})


def _out_shape(build, *args):
    graphdef, params = init.abstract_model(build)
    return jax.eval_shape(lambda p, *a: nnx.merge(graphdef, p)(*a), params, *args).shape


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"image_size": 32, "channel_mult": (1, 2, 2), "attn_resolutions": (16, 8)},
        {"attn_type": "transformer", "text_dim": 12, "num_classes": 5},
        {"scale_shift": True, "mid_attention": False, "attn_resolutions": ()},
        # ADM-512's half-width first level, DDPM's one-sided downsampling pad, rescaled t.
        {"channels": 32, "channel_mult": (0.5, 1), "downsample_padding": 0, "timestep_scale": 0.25},
        # 2x2-pixel patches: an 8x8 grid with attention on it.
        {"patch_size": 2},
    ],
)
def test_unet2d_shapes(kw):
    cfg = tiny2d(**kw)
    s = cfg.image_size
    cond = {"label": jnp.zeros((2,), jnp.int32), "text": jnp.zeros((2, 7, 12))}
    x, t = jnp.zeros((2, s, s, 3)), jnp.zeros((2,), jnp.int32)
    assert _out_shape(lambda rngs: UNet2D(cfg, rngs=rngs), x, t, cond) == (2, s, s, 3)


@pytest.mark.parametrize(
    "frames,kw",
    [
        (4, {}),
        (8, {"image_size": 32, "channel_mult": (1, 2, 2), "temporal_attn_resolutions": (8,)}),
        (3, {"attn_type": "transformer", "temporal_input_attention": True, "text_dim": 12}),
        (16, {"temporal_conv_layers": 0, "num_classes": 4, "out_channels": 6}),
        (8, {"patch_size": 2, "key_frame_input": True, "key_frame_attn_resolutions": (8,)}),
        (4, {"patch_size": 4, "out_channels": 2}),
    ],
)
def test_unet3d_shapes(frames, kw):
    cfg = tiny3d(**kw)
    s = cfg.image_size
    x = jnp.zeros((2, frames, s, s, 3))
    cond = {"label": jnp.zeros((2,), jnp.int32), "text": jnp.zeros((2, 7, 12))}
    out = _out_shape(lambda rngs: UNet3D(cfg, rngs=rngs), x, jnp.zeros((2,), jnp.int32), cond)
    assert out == (2, frames, s, s, cfg.out_channels)


def test_patches_tile_the_image_and_set_the_levels_resolutions():
    """`patch_size` p: pixel (p i + a, p j + b) is grid cell (i, j)'s channels of slot a p + b,
    `from_patches` undoes it, and the levels count patches: attention listed at 8 sits on the
    first level of a 16-pixel network with 2-pixel patches, on the second without patches."""
    from vfjax.models import blocks

    x = np.arange(2 * 4 * 6 * 3, dtype=np.float32).reshape(2, 4, 6, 3)
    y = np.asarray(blocks.to_patches(x, 2))
    assert y.shape == (2, 2, 3, 12)
    for a in range(2):
        for b in range(2):
            np.testing.assert_array_equal(
                y[:, :, :, (2 * a + b) * 3 : (2 * a + b + 1) * 3], x[:, a::2, b::2]
            )
    np.testing.assert_array_equal(np.asarray(blocks.from_patches(y, 2)), x)
    with pytest.raises(ValueError, match="patch_size=3 must be a positive divisor"):
        blocks.patch_grid(16, 3)

    def attention_levels(**kw):
        _, params = init.abstract_model(lambda r: UNet2D(tiny2d(mid_attention=False, **kw), rngs=r))
        tree = nnx.to_pure_dict(params)
        return (
            sorted(i for i, level in tree["down_blocks"].items() if level.get("attentions")),
            tree["conv_in"]["kernel"].shape,
            tree["conv_out"]["kernel"].shape,
        )

    assert attention_levels() == ([1], (3, 3, 3, 16), (3, 3, 16, 3))
    assert attention_levels(patch_size=2) == ([0], (3, 3, 12, 16), (3, 3, 16, 12))


def test_parameters_carry_logical_axes_and_counts():
    _, params = init.abstract_model(lambda rngs: vf.VideoFusion(tiny2d(), tiny3d(), rngs=rngs))
    leaves = jax.tree.leaves(params, is_leaf=lambda x: isinstance(x, nnx.Variable))
    for v in leaves:
        axes = v.get_metadata()["logical_axes"]
        assert len(axes) == len(v.shape)
    counts = vf.count_params(nnx.to_pure_dict(params))
    assert counts["total"] == counts["base"] + counts["residual"] > 0
    assert counts["total"] == sum(int(np.prod(v.shape)) for v in leaves)
    # The VDM baseline is the residual architecture alone.
    _, vdm = init.abstract_model(lambda rngs: vf.VDM(tiny3d(), rngs=rngs))
    assert vf.count_params(nnx.to_pure_dict(vdm)) == {
        "residual": counts["residual"],
        "total": counts["residual"],
    }


def test_init_params_follow_their_metadata():
    model = init.create_model(lambda r: UNet2D(tiny2d(), rngs=r), jax.random.key(0))
    kernel = model.conv_in.kernel[...]
    assert kernel.dtype == jnp.float32
    np.testing.assert_allclose(np.std(kernel), 27**-0.5, rtol=0.25)
    np.testing.assert_array_equal(model.conv_out.kernel[...], 0.0)  # zero-initialised output
    np.testing.assert_array_equal(model.conv_norm_out.scale[...], 1.0)


@functools.cache
def _video_net(frame_embedding: bool, dtype: str = "float32"):
    # One level at 8x8 (both attentions on): what these checks need, and quick to compile.
    cfg = tiny3d(
        zero_init=False,
        frame_embedding=frame_embedding,
        dtype=dtype,
        image_size=8,
        channel_mult=(1,),
        temporal_attn_resolutions=(8,),
    )
    return init.create_model(lambda r: UNet3D(cfg, rngs=r), jax.random.key(1))


def _forward(net, x, t):
    return nnx.jit(lambda m, x, t: m(x, t))(net, x, t)


def test_frame_embedding_makes_frames_differ():
    frame = jax.random.normal(jax.random.key(0), (1, 1, 8, 8, 3))
    x = jnp.broadcast_to(frame, (1, 4, 8, 8, 3))
    t = jnp.array([500])
    out = _forward(_video_net(True), x, t)
    assert float(jnp.abs(out[:, 0] - out[:, 1]).max()) > 1e-3
    assert float(jnp.abs(out[:, 1] - out[:, 2]).max()) > 1e-3
    # Control: without the frame-index embedding identical frames give identical outputs.
    same = _forward(_video_net(False), x, t)
    np.testing.assert_allclose(same[:, 0], same[:, 2], atol=1e-5)


# What can make frames meet or tell them apart, each switched on alone: the layers that see
# several frames (the rest of the network works frame by frame), and the frame-index embedding
# (it tells frames apart, but carries nothing from one to another). The middle block's temporal
# attention comes with `mid_attention`, not with `temporal_attn_resolutions`.
_NO_TEMPORAL = dict(
    temporal_conv_layers=0,
    temporal_attn_resolutions=(),
    mid_attention=False,
    temporal_input_attention=False,
    frame_embedding=False,
)
_FRAME_PATHS = {
    "none": {},
    "temporal_conv": {"temporal_conv_layers": 2},
    "temporal_attention": {"temporal_attn_resolutions": (8,)},
    "spacetime_attention": {"spacetime_attn_resolutions": (8,)},
    "mid_attention": {"mid_attention": True},
    "input_attention": {"temporal_input_attention": True},
    "frame_embedding": {"frame_embedding": True},
}


@functools.cache
def _perturbed_video_net(path: str):
    """A one-level 8x8 video UNet with one frame path of `_FRAME_PATHS` and every parameter moved
    by noise: the temporal layers (and the output convolution) start at zero, the identity, and a
    fresh network would show nothing of them."""
    cfg = tiny3d(
        dtype="float32", image_size=8, channel_mult=(1,), **{**_NO_TEMPORAL, **_FRAME_PATHS[path]}
    )
    net = init.create_model(lambda r: UNet3D(cfg, rngs=r), jax.random.key(1))
    leaves, treedef = jax.tree.flatten(nnx.state(net, nnx.Param))
    keys = jax.random.split(jax.random.key(2), len(leaves))
    noisy = [
        p + 0.1 * jax.random.normal(k, p.shape, p.dtype) for p, k in zip(leaves, keys, strict=True)
    ]
    nnx.update(net, jax.tree.unflatten(treedef, noisy))
    return net


@pytest.mark.parametrize("path", list(_FRAME_PATHS))
def test_frames_meet_only_in_the_temporal_layers(path):
    """A change to one frame reaches the other frames' outputs through each temporal layer, and
    through nothing else; permuting the frames permutes the outputs unless a layer knows the
    order: the temporal convolution and the frame embedding do, attention over frames (no
    position encoding) does not."""
    n, changed, order = 4, 3, np.array([2, 0, 3, 1])
    x = jax.random.normal(jax.random.key(0), (1, n, 8, 8, 3))
    x_changed = x.at[:, changed].set(jax.random.normal(jax.random.key(5), (8, 8, 3)))
    batch = jnp.concatenate([x, x_changed, x[:, order]])
    out = _forward(_perturbed_video_net(path), batch, jnp.full((3,), 500))
    out, out_changed, out_permuted = np.asarray(out[:1]), np.asarray(out[1:2]), out[2:]
    others = [i for i in range(n) if i != changed]
    # Each other frame's output: how far the change to frame `changed` moved it.
    reached = np.abs(out_changed - out)[0, others].max(axis=(1, 2, 3))
    assert np.abs(out).mean() > 0.1  # The perturbed network outputs something.
    assert np.abs(out_changed - out)[0, changed].max() > 1e-2  # Its own frame moves.
    if path in ("none", "frame_embedding"):
        np.testing.assert_allclose(reached, 0.0, atol=1e-6)
    else:
        assert reached.min() > 1e-3, reached
    permutation_error = float(np.abs(out_permuted - out[:, order]).max())
    if path in ("temporal_conv", "frame_embedding"):
        assert permutation_error > 1e-2
    else:
        assert permutation_error < 1e-5


def _perturbed_frame_wise_net(**fields) -> UNet3D:
    """An 8x8 one-level UNet3D with no temporal layer (frames meet only through `fields`), its
    parameters moved off their initial values (zero-initialised projections made non-zero)."""
    cfg = tiny3d(dtype="float32", image_size=8, channel_mult=(1,), **fields, **_NO_TEMPORAL)
    net = init.create_model(lambda r: UNet3D(cfg, rngs=r), jax.random.key(1))
    leaves, treedef = jax.tree.flatten(nnx.state(net, nnx.Param))
    keys = jax.random.split(jax.random.key(2), len(leaves))
    nnx.update(
        net,
        jax.tree.unflatten(
            treedef,
            [
                p + 0.1 * jax.random.normal(k, p.shape, p.dtype)
                for p, k in zip(leaves, keys, strict=True)
            ],
        ),
    )
    return net


@pytest.mark.parametrize(
    "fields", [{"key_frame_input": True}, {"key_frame_attn_resolutions": (8,)}], ids=str
)
def test_key_frame_reaches_every_frame_from_the_key_frame_only(fields):
    """`key_frame_input` or key-frame attention with no temporal layer: a change to the key frame
    (N // 2) moves every frame's output, a change to another frame moves only its own."""
    net = _perturbed_frame_wise_net(**fields)
    n, key = 4, 2
    x = jax.random.normal(jax.random.key(0), (1, n, 8, 8, 3))
    noise = jax.random.normal(jax.random.key(5), (8, 8, 3))
    batch = jnp.concatenate([x, x.at[:, key].set(noise), x.at[:, 3].set(noise)])
    out = np.asarray(_forward(net, batch, jnp.full((3,), 500)))
    moved_by_key = np.abs(out[1] - out[0]).max(axis=(1, 2, 3))
    moved_by_other = np.abs(out[2] - out[0]).max(axis=(1, 2, 3))
    assert moved_by_key.min() > 1e-2, moved_by_key
    assert moved_by_other[3] > 1e-2
    np.testing.assert_allclose(moved_by_other[:3], 0.0, atol=1e-6)


def test_key_reference_replaces_the_key_frame_in_the_attention_only():
    """`cond['key_reference']` R (a long video's first key frame): with frames meeting only
    through the attention to the key frame, every other frame's output is the one it has when R
    sits in the key frame's slot, while the key frame's own path still starts from its own value;
    R equal to the clip's key frame changes nothing. Without that attention it is refused."""
    net = _perturbed_frame_wise_net(key_frame_attn_resolutions=(8,))
    n, key = 4, 2
    x = jax.random.normal(jax.random.key(0), (2, n, 8, 8, 3))
    reference = jax.random.normal(jax.random.key(5), (2, 8, 8, 3))
    t = jnp.full((2,), 500)
    run = nnx.jit(lambda m, x, t, r: m(x, t, {"key_reference": r}))
    plain = np.asarray(_forward(net, x, t))
    in_slot = np.asarray(_forward(net, x.at[:, key].set(reference), t))
    referenced = np.asarray(run(net, x, t, reference))
    others = [i for i in range(n) if i != key]
    np.testing.assert_allclose(referenced[:, others], in_slot[:, others], atol=1e-5)
    assert np.abs(referenced[:, others] - plain[:, others]).max() > 1e-2
    # The key frame's own convolutions read its value: neither the plain nor the in-slot output.
    assert np.abs(referenced[:, key] - in_slot[:, key]).max() > 1e-2
    assert np.abs(referenced[:, key] - plain[:, key]).max() > 1e-2
    np.testing.assert_allclose(np.asarray(run(net, x, t, x[:, key])), plain, atol=1e-5)
    without = _perturbed_frame_wise_net()
    with pytest.raises(ValueError, match="key_reference needs attention to the key frame"):
        without(x, t, {"key_reference": reference})


def test_held_flags_change_only_the_flagged_frames_and_none_is_no_flag():
    """`held_frames`: with frames that do not meet (no temporal layer), flagging
    frame 0 as held changes frame 0's output and leaves the others' as they were; all flags
    False is the same as no `cond['held']`."""
    net = _perturbed_frame_wise_net(held_frames=True)
    x = jax.random.normal(jax.random.key(0), (2, 4, 8, 8, 3))
    t = jnp.full((2,), 500)
    run = nnx.jit(lambda m, x, t, h: m(x, t, {"held": h}))
    plain = np.asarray(_forward(net, x, t))
    none = np.asarray(run(net, x, t, jnp.zeros((2, 4), bool)))
    np.testing.assert_allclose(none, plain, atol=1e-6)
    first = np.asarray(run(net, x, t, jnp.arange(4)[None].repeat(2, 0) < 1))
    assert np.abs(first[:, 0] - plain[:, 0]).max() > 1e-2
    np.testing.assert_allclose(first[:, 1:], plain[:, 1:], atol=1e-6)


@pytest.mark.parametrize("shape", [(2, 5, 8, 8, 64), (3, 16, 16, 128), (2, 4, 4, 3)])
def test_group_norm_is_flax_group_norm(shape):
    """`layers.GroupNorm` reduces its statistics per channel first (lane-dense on a TPU) and
    normalises as flax's GroupNorm does (two-pass variance, the same scale and bias), for clips,
    frames, and fewer channels than groups; its values and gradients agree to float32 rounding."""
    from vfjax.models import layers

    channels = shape[-1]
    norm = layers.GroupNorm(channels, layers.LayerOpts(dtype=jnp.float32), nnx.Rngs(0))
    norm.scale[...] = 1 + jax.random.normal(jax.random.key(1), (channels,))
    norm.bias[...] = jax.random.normal(jax.random.key(2), (channels,))
    # An offset mean, per-channel spreads: what a one-pass variance would get wrong.
    x = 5 + jax.random.normal(jax.random.key(3), shape) * jnp.linspace(0.5, 2, channels)
    flax_norm = functools.partial(nnx.GroupNorm.__call__, norm)

    def ours(v):
        return layers.group_norm(v, norm.scale[...], norm.bias[...], norm.num_groups, norm.epsilon)

    np.testing.assert_allclose(ours(x), flax_norm(x), rtol=0, atol=2e-5)
    stats = (
        ours(x).reshape(shape[0], -1, norm.num_groups, norm.group_size)
        - norm.bias[...].reshape(norm.num_groups, -1)
    ) / norm.scale[...].reshape(norm.num_groups, -1)
    np.testing.assert_allclose(stats.mean(axis=(1, 3)), 0, atol=1e-4)
    np.testing.assert_allclose(stats.var(axis=(1, 3)), 1, atol=1e-3)

    def grad(fn):
        return jax.grad(lambda v: jnp.sum(jnp.sin(fn(v))))(x)

    np.testing.assert_allclose(grad(ours), grad(flax_norm), rtol=0, atol=1e-4)
    # The whole layer (normalisation, the timestep's scale-shift, SiLU; rematerialised in the
    # backward pass) against the same steps on flax's GroupNorm.
    ts = jax.random.normal(jax.random.key(4), (2, shape[0], *(1,) * (len(shape) - 2), channels))

    def flax_layer(v):
        return jax.nn.silu(flax_norm(v) * (1 + ts[0]) + ts[1])

    def layer(v):
        return norm(v, act=True, scale_shift=(ts[0], ts[1]))

    np.testing.assert_allclose(layer(x), flax_layer(x), rtol=0, atol=5e-5)
    np.testing.assert_allclose(grad(layer), grad(flax_layer), rtol=0, atol=2e-4)


def test_bf16_compute_runs_with_fp32_params():
    net = _video_net(True, "bfloat16")
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(nnx.state(net, nnx.Param)))
    out = _forward(net, jnp.ones((2, 4, 8, 8, 3)), jnp.array([10, 900]))
    assert out.dtype == jnp.float32 and out.shape == (2, 4, 8, 8, 3)
    assert bool(jnp.all(jnp.isfinite(out))) and float(jnp.abs(out).max()) > 0


def test_stop_gradient_rule():
    """Base generator: gradient from the key frame's term only; residual: none from it."""
    # Which loss term reaches which generator does not depend on their insides: one level, no
    # attention (quick to compile).
    one_level = dict(
        image_size=8,
        channel_mult=(1,),
        zero_init=False,
        dtype="float32",
        attn_resolutions=(),
        mid_attention=False,
    )
    cfg2 = tiny2d(**one_level)
    cfg3 = tiny3d(**one_level, temporal_attn_resolutions=())
    model = init.create_model(lambda r: vf.VideoFusion(cfg2, cfg3, rngs=r), jax.random.key(2))
    n = 4
    diffusion = Diffusion.create("videofusion", n, 0.5)
    x0 = jax.random.uniform(jax.random.key(4), (2, n, 8, 8, 3), minval=-1, maxval=1)
    key = jnp.zeros((n,)).at[diffusion.key_frame].set(1.0)
    graphdef, params = nnx.split(model, nnx.Param)

    @jax.jit
    def grads(w):  # Gradients of the loss with per-frame weights w.
        def loss(p):
            return nnx.merge(graphdef, p).loss(x0, jax.random.key(3), diffusion, frame_weights=w)[0]

        return jax.grad(loss)(params)

    def norms(g):
        return [float(jnp.max(jnp.abs(x))) for x in jax.tree.leaves(g)]

    only_key = grads(key)
    only_others = grads((1.0 - key) / (n - 1))
    assert max(norms(only_key["residual"])) == 0.0
    assert max(norms(only_key["base"])) > 0.0
    assert max(norms(only_others["base"])) == 0.0
    assert max(norms(only_others["residual"])) > 0.0


def _train(model, diffusion, x0, steps, lr):
    graphdef, params = nnx.split(model, nnx.Param)
    opt = optax.adam(lr)
    opt_state = opt.init(params)
    eval_keys = jax.random.split(jax.random.key(99), 8)

    def loss_fn(p, rng):
        return nnx.merge(graphdef, p).loss(x0, rng, diffusion)[0]

    @jax.jit
    def eval_loss(p):
        return jnp.mean(jax.vmap(lambda k: loss_fn(p, k))(eval_keys))

    @jax.jit
    def train(p, s, rng):
        def step(carry, key):
            p, s = carry
            loss, g = jax.value_and_grad(loss_fn)(p, key)
            updates, s = opt.update(g, s, p)
            return (optax.apply_updates(p, updates), s), loss

        (p, s), _ = jax.lax.scan(step, (p, s), jax.random.split(rng, steps))
        return p

    before = float(eval_loss(params))
    params = train(params, opt_state, jax.random.key(0))
    return before, float(eval_loss(params))


@pytest.mark.parametrize("kind", ["videofusion", "vdm"])
def test_learns_one_tiny_video(kind):
    """A few hundred steps on one 4-frame video (a square moving right) cut the loss tenfold."""
    n, s = 4, 8
    cfg = dict(channels=16, channel_mult=(1,), num_res_blocks=1, head_dim=8, num_groups=8)
    cfg2 = UNet2DConfig(image_size=s, attn_resolutions=(), dtype="float32", **cfg)
    cfg3 = UNet3DConfig(
        image_size=s, attn_resolutions=(), temporal_attn_resolutions=(s,), dtype="float32", **cfg
    )
    if kind == "vdm":
        model = init.create_model(lambda r: vf.VDM(cfg3, rngs=r), jax.random.key(0))
    else:
        model = init.create_model(lambda r: vf.VideoFusion(cfg2, cfg3, rngs=r), jax.random.key(0))
    diffusion = Diffusion.create(kind, n, 0.5)
    yy, xx = np.mgrid[:s, :s]
    square = [(np.abs(xx - 2 - i) < 2) & (np.abs(yy - 3) < 2) for i in range(n)]
    video = np.where(np.stack(square), 1.0, -1.0)[None, :, :, :, None]
    x0 = jnp.asarray(np.broadcast_to(video, (4, n, s, s, 3)), jnp.float32)
    before, after = _train(model, diffusion, x0, steps=250, lr=3e-3)
    assert after < before / 10, (before, after)
