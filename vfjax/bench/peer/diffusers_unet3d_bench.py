"""The peer's train step: diffusers' UNet3DConditionModel (PyTorch), the video UNet that diffusers
ships for its text-to-video pipeline, trained one step at a time on pixel-space 16x64x64 videos.

Prints one line: parameters, step time, videos/s, the step's model FLOPs (counted by torch's
FlopCounterMode), the achieved TFLOP/s and the peak memory, so that the same workload is compared
with a JAX train step in one run (`python -m vfjax.bench suite` runs it and parses that line:
`vfjax.bench.report.parse_peer`). Needs a CUDA GPU, torch and diffusers. A standalone script,
not a module of vfjax (nothing imports it):

    python3 vfjax/bench/peer/diffusers_unet3d_bench.py --batch 16 --frames 16 --size 64 [--compile]
"""

import argparse
import time

import torch
from diffusers import UNet3DConditionModel
from torch.utils.flop_counter import FlopCounterMode


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description="The peer's train step: times and counts it.")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--channels", default="128,256,256,512")
    p.add_argument("--steps", type=int, default=20, help="timed steps, after 3 untimed ones")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    return p.parse_args()


def build_model(size: int, channels: tuple[int, ...]) -> UNet3DConditionModel:
    """The peer's network: cross-attention blocks at every level but the lowest."""
    levels = len(channels)
    return UNet3DConditionModel(
        sample_size=size,
        in_channels=3,
        out_channels=3,
        block_out_channels=channels,
        layers_per_block=2,
        down_block_types=("CrossAttnDownBlock3D",) * (levels - 1) + ("DownBlock3D",),
        up_block_types=("UpBlock3D",) + ("CrossAttnUpBlock3D",) * (levels - 1),
        cross_attention_dim=512,
        attention_head_dim=64,
        norm_num_groups=32,
    ).cuda()


def main() -> None:
    a = parse_args()
    channels = tuple(int(c) for c in a.channels.split(","))
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    model = build_model(a.size, channels)
    params = sum(w.numel() for w in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    x = torch.randn(a.batch, 3, a.frames, a.size, a.size, device="cuda")  # [B, C, N, H, W]
    ctx = torch.randn(a.batch, 1, 512, device="cuda")  # One 512-wide context token.

    def step():
        t = torch.randint(0, 1000, (a.batch,), device="cuda")
        noise = torch.randn_like(x)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = model(x + noise, t, encoder_hidden_states=ctx).sample
            loss = torch.nn.functional.mse_loss(out.float(), noise)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    if a.compile:
        model = torch.compile(model)  # `step` reads `model` when called: the compiled one.
    with FlopCounterMode(display=False) as counter:
        step()
    flops = counter.get_total_flops()
    for _ in range(3):
        step()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(a.steps):
        step()
    torch.cuda.synchronize()
    dt = (time.perf_counter() - t0) / a.steps
    print(
        f"peer diffusers UNet3D params={params / 1e6:.1f}M "
        f"batch={a.batch}x{a.frames}x{a.size}x{a.size} compile={a.compile} "
        f"step={dt * 1e3:.1f}ms videos/s={a.batch / dt:.1f} "
        f"model_TFLOP/step={flops / 1e12:.2f} achieved={flops / dt / 1e12:.0f}TFLOP/s "
        f"peak_mem={torch.cuda.max_memory_allocated() / 2**30:.1f}GiB"
    )


if __name__ == "__main__":
    main()
