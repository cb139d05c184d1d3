"""The embedded default: VideoFusion on the built-in synthetic moving-shapes videos.

Trains on a CPU in about ten minutes (2 cores, no download; 10 min 57 s measured) and writes
sample videos of shapes moving and bouncing to `WORKDIR/samples/`:

    python -m vfjax.main --config=configs/default.py --workdir=runs/default

Variants (after a colon): `vdm` (the VDM baseline, same residual network), `image` (the base
generator alone, trained as an image model on the frames), `class` (class-conditional on the
shape kind, sampled with classifier-free guidance at scale 1.5, `config.CLASS_GUIDANCE_SCALE`),
`runlocal` (a smoke run of about a minute, mostly compiling), and `FIELD=VALUE` pairs.
Target: no published number; half of the sampled clips obeying the data's law (`data_law` in
the samples' JSON). Met: 72% of 64 clips after its 1500 steps, 64% with seed 1 (rows HF1 and
HF1' of PERFORMANCE.md, "Quality: does the default learn the data?"; without held frames,
`diffusion.context_rate=0`: 64% and 55%, rows D7 and D7'): one object of steady brightness in
every clip, drawn well in 97%, on the data's track in 84%, keeping its kind in 83%. The `vdm`
variant of D7 at the same wall time (1635 steps): 27% (row V9).
"""

from vfjax import config as vfc


def get_config(arg=None):
    c = vfc.base_config()
    # As many steps as fill about ten minutes of the 2 cores, compile and previews included: 9 min
    # 35 s measured alone on the machine (487 s of steps; PERFORMANCE.md, row D7); with held
    # frames, on another session's machine, 10 min 57 s (565 s of steps; row HF1).
    c.total_steps = 1500
    c.batch_size = 8
    c.log_every_steps = 50
    c.checkpoint_every_steps = 250
    c.sample_every_steps = 250

    c.data.name = "synthetic"
    c.data.num_frames = 8
    c.data.resolution = 16
    # Grey scale, large shapes, steady motion: what a CPU-sized model learns in minutes.
    c.data.channels = 1
    c.data.synthetic.num_videos = 10_000
    # Shapes of half-size 3.2-4.8 pixels moving 0.5-1 pixel a frame (PERFORMANCE.md, rows Z1 and
    # Z2): at the earlier 2.2-3.5 pixels and 1-1.6 pixels a frame the shapes' kinds were hard to
    # tell apart at 16x16 and the objects bounced every few frames, where tracks go wrong.
    c.data.synthetic.min_size = 0.2
    c.data.synthetic.max_size = 0.3
    c.data.synthetic.min_speed = 0.03
    c.data.synthetic.max_speed = 0.06

    c.model.dtype = "float32"  # CPU: bfloat16 is emulated and slower.
    c.model.base = vfc.base_unet(
        channels=16,
        channel_mult=(1, 2),
        num_res_blocks=1,
        attn_resolutions=(8,),
        head_dim=16,
        num_groups=8,
    )
    c.model.residual = vfc.residual_unet(
        channels=16,
        channel_mult=(1, 2),
        num_res_blocks=1,
        # At 8x8 every frame attends to the key frame's positions (in place of attending to its
        # own): in the same 1000 steps, brightness steady in about twice as many clips, size in
        # 1.3x, shapes drawn well in 2x, at the step's cost without it (PERFORMANCE.md, rows
        # A5, A8, D3 against D's recipe).
        attn_resolutions=(),
        temporal_attn_resolutions=(8,),
        key_frame_attn_resolutions=(8,),
        head_dim=16,
        num_groups=8,
        held_frames=True,
    )

    # The residual generator sees a finished key frame (not the paper's near-zero latent there):
    # the real one in training; in sampling the key frame is drawn to its end first (its
    # trajectory does not depend on the other frames), so the others follow the key frame they
    # end up beside. The key frame's jump out of the clip: 2.45 (the paper's input) -> 1.50 (each
    # step's estimate, 'x0') -> 1.01 (PERFORMANCE.md, "Quality: the key-frame flicker"). The
    # paper's configs keep 'latent'.
    c.diffusion.key_input = "clean"
    # Half the training clips hold their first 1-7 frames, shown clean and flagged, as a long
    # video's next clip holds the last clip's: its clips then go on where the last one was going
    # (object turning back mid-frame at the seams: 4 of 16 videos' 304 seams against 38;
    # PERFORMANCE.md, "Appearance over 64 frames", row HF1), its 8-frame clips as good (72% and
    # 64% obey over two seeds, against 64% and 55%).
    c.diffusion.context_rate = 0.5

    # Learning the data (PERFORMANCE.md, "Quality: does the default learn the data?"): the
    # v target with min-SNR-5 loss weights drew steadier, brighter, straighter-moving objects than
    # epsilon with the plain loss, over two seeds each (shape 0.05-0.08 of clips against 0,
    # brightness 0.33-0.42 against 0.23-0.30, track 0.11-0.16 against 0.08-0.09).
    c.diffusion.prediction = "v"
    c.diffusion.min_snr_gamma = 5.0
    # Timesteps drawn where that weighted loss can be large (a tenth of them uniformly), each
    # example re-weighted so the loss keeps its expectation (decomposed.sample_timesteps): in the
    # same 1000 steps, over two seeds, shapes drawn well in 0.81-0.88 of clips against 0.45, size
    # steady in 0.58-0.66 against 0.44, the training loss 22-28% lower (PERFORMANCE.md, rows I1
    # and I2 against D3; half uniform, I3 and I4, was no better).
    c.diffusion.t_sampling = "importance"
    c.diffusion.t_uniform_share = 0.1
    # No base noise in the frames other than the key frame (the paper's configs keep 0.5): the
    # base generator draws the key frame from the base noise, the residual generator the other
    # frames beside it, attending to it. At this budget a shared base holds the frames to the
    # key frame's place: on the earlier, faster data the objects moved at 0.72-0.76 px a frame
    # with 0.5, 0.89-0.91 with 0.25 and 1.07-1.09 with 0 (the data: 1.32); with 0, 6-14% of
    # clips obeyed the law over two seeds against 1.6-3.1% (PERFORMANCE.md, rows J1-J10 against
    # I1 and I2).
    c.diffusion.lam = 0.0

    # The 2 cores as 2 single-threaded devices: the train step alone +22% videos/s (PERFORMANCE.md,
    # "Where the step time goes"); in the README's whole run, with the input pipeline on the
    # same cores, 466 s of steps against 473 s. Only a CPU host reads it; launchers set their own.
    c.cpu_devices = 2

    c.optim.lr = 3e-3
    c.optim.warmup_steps = 50
    # Cosine decay to 0: the EMA and the raw parameters then agree, and the frames' brightness
    # matches the data's (with a constant rate the EMA's frames came out greyer).
    c.optim.schedule = "cosine"
    c.optim.ema_decay = 0.99  # A short run: average over the last ~100 steps.

    # DDPM-like sampling (eta = 1, 100 steps): after these 1000 steps, deterministic DDIM
    # (eta = 0) left 19% of the sampled frames noisy, eta = 1 none (measured on one such run).
    c.sampling.num_steps = 100
    c.sampling.eta = 1.0
    c.sampling.num_videos = 8
    c.sampling.batch_size = 8
    # Evaluation sized for a CPU (minutes): 128 clips a side, 9 frames; not comparable with
    # published numbers (the result says so).
    c.eval.protocol = "cpu"
    return vfc.apply_variants(c, arg)
