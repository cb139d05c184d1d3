"""The peer's sampling: a 50-step DDIM-style loop of diffusers' UNet3DConditionModel forward
passes (bf16, no gradients) on pixel-space 16x64x64 videos, the network of
`diffusers_unet3d_bench.py` beside this file.

Prints one line: the steps, the batch, the seconds of one timed loop (after an untimed one),
videos/s and the peak memory (`python -m vfjax.bench suite` runs it and parses that line:
`vfjax.bench.report.parse_peer`). Needs a CUDA GPU, torch and diffusers. A standalone script,
not a module of vfjax (nothing imports it):

    python3 vfjax/bench/peer/diffusers_unet3d_sample_bench.py --batch 16 --steps 50
"""

import argparse
import time

import torch
from diffusers import UNet3DConditionModel


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description="The peer's sampling loop: times it.")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--steps", type=int, default=50, help="network evaluations per video")
    return p.parse_args()


def main() -> None:
    a = parse_args()
    channels = (128, 256, 256, 512)
    model = (
        UNet3DConditionModel(
            sample_size=a.size,
            in_channels=3,
            out_channels=3,
            block_out_channels=channels,
            layers_per_block=2,
            down_block_types=("CrossAttnDownBlock3D",) * 3 + ("DownBlock3D",),
            up_block_types=("UpBlock3D",) + ("CrossAttnUpBlock3D",) * 3,
            cross_attention_dim=512,
            attention_head_dim=64,
            norm_num_groups=32,
        )
        .cuda()
        .to(torch.bfloat16)
        .eval()
    )
    shape = (a.batch, 3, a.frames, a.size, a.size)  # [B, C, N, H, W]
    x = torch.randn(shape, device="cuda", dtype=torch.bfloat16)
    ctx = torch.zeros(a.batch, 1, 512, device="cuda", dtype=torch.bfloat16)
    timesteps = torch.linspace(999, 0, a.steps, device="cuda").long()

    @torch.no_grad()
    def sample(z):
        for t in timesteps:
            eps = model(z, t.expand(a.batch), encoder_hidden_states=ctx).sample
            z = z - 0.01 * eps  # The update's cost is negligible next to the network's.
        return z

    sample(x)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    sample(x)
    torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    print(
        f"peer diffusers UNet3D sampling {a.steps} steps "
        f"batch={a.batch}x{a.frames}x{a.size}x{a.size}: {dt:.2f}s, videos/s={a.batch / dt:.2f}, "
        f"peak_mem={torch.cuda.max_memory_allocated() / 2**30:.1f}GiB"
    )


if __name__ == "__main__":
    main()
