"""Seconds per sampled video.

CPU: the tiny embedded-default model (conf/train/model/tiny.yaml: 64x64, 8 frames, random init),
25 DDIM steps with CFG. GPU (CUDA only): a random-init SD1.5-shaped FYC model (SD1.5 U-Net +
AnimateDiff motion modules + MA, SD-shaped VAE, CLIP-L-shaped text encoder), 16 frames at
512x512, 25 steps with CFG, fp16. Weights are random: speed does not depend on them.

    python bench/bench_sample.py [--device cpu|cuda] [--steps 25] [--repeats 2]
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from fyc_train.sampling.pipeline import FYCPipeline


def tiny_model():
    from fyc_train.models import build_tiny

    return build_tiny(image_size=64), 64, 8


def sd15_model():
    from diffusers import AutoencoderKL

    from fyc_train.models import FYCModel, SDAutoencoder, TinyTextEncoder
    from fyc_train.models.build import animatediff_adapter_config, build_unet_from_configs, sd15_unet2d_config

    unet = build_unet_from_configs(sd15_unet2d_config(), animatediff_adapter_config(),
                                   {"latent_channels": 4, "motion_context_dim": 768})
    vae = AutoencoderKL(  # SD1.5's VAE shapes
        block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        sample_size=512, scaling_factor=0.18215,
    )
    text = TinyTextEncoder(hidden_size=768, num_layers=12, num_heads=12, max_length=77)  # CLIP-L text shape
    return FYCModel(unet, SDAutoencoder(vae, chunk_size=8), text, trainable="motion"), 512, 16


def bench(device: str, steps: int, repeats: int) -> float:
    model, size, frames = (sd15_model if device == "cuda" else tiny_model)()
    model.eval().to(device)
    if device == "cuda":
        model.to(torch.float16)
    pipe = FYCPipeline(model, default_num_frames=frames)
    image = np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)
    mask = np.zeros((size, size), bool)
    mask[size // 4 : size // 2, size // 4 : size // 2] = True
    kw = dict(image=image, mask=mask, prompt="move left", magnitude=8.0, steps=steps, guidance=7.5,
              progress=False)
    pipe(**{**kw, "steps": 2})  # warm-up (kernels, allocator)
    times = []
    for r in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        video = pipe(**kw, seed=r)
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    print(f"{device}: {video.shape[0]} frames {size}x{size}, {steps} steps + CFG: "
          f"{min(times):.2f} s/video (best of {repeats}; all {[round(t, 2) for t in times]}), "
          f"torch threads {torch.get_num_threads()}")
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", choices=["cpu", "cuda", "both"], default="both")
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    if args.device in ("cpu", "both"):
        bench("cpu", args.steps, args.repeats)
    if args.device in ("cuda", "both"):
        if torch.cuda.is_available():
            bench("cuda", args.steps, args.repeats)
        else:
            print("cuda: no CUDA device here; the SD1.5-scale 16x512x512 benchmark needs a GPU "
                  "(run: python bench/bench_sample.py --device cuda)")


if __name__ == "__main__":
    main()
