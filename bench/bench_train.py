"""Training throughput, measured in one run (ratios are what matter on a shared machine).

1. Data loader: samples/s of FYCDataModule's training stream (mp4 decode + mask.png + json,
   `--workers` DataLoader workers) over schema-correct shards.
2. Tiny model: training steps/s (forward + backward + AdamW) on the same batches, i.e. the
   rate at which training consumes samples. Target: loader >= 3x consumption.
3. `--sd15` (GPU): one FYC training step at SD1.5 + AnimateDiff scale (random init, shapes of
   SD1.5's U-Net and motion adapter), bf16 autocast, precomputed latents (B, 4, 16, h, w),
   reported as samples/s. Needs CUDA.

    python bench/bench_train.py                     # CPU part (tiny recipe: 8x32x32 clips)
    python bench/bench_train.py --sd15 --resolution 256 --batch 2
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import torch


def bench_loader(shards: list[str], batch: int, workers: int, frames: int, batches: int) -> float:
    from fyc_train.data import FYCDataModule

    dm = FYCDataModule(shards, batch_size=batch, num_workers=workers, num_frames=frames,
                       steps_per_epoch=batches + 2, pin_memory=False, shuffle_buffer=16)
    it = iter(dm.train_dataloader())
    next(it), next(it)  # worker start-up excluded
    start = time.perf_counter()
    n = sum(len(b["key"]) for b, _ in zip(it, range(batches)))
    return n / (time.perf_counter() - start)


def bench_tiny_training(shards: list[str], batch: int, frames: int, steps: int, size: int) -> float:
    from fyc_train.data import FYCDataModule
    from fyc_train.lit_module import FYCLitModule
    from fyc_train.models.build import build_tiny

    model = build_tiny(image_size=size)
    lit = FYCLitModule(model)
    opt = torch.optim.AdamW(lit.trainable_parameters(), lr=1e-4)
    dm = FYCDataModule(shards, batch_size=batch, num_workers=0, num_frames=frames, steps_per_epoch=steps + 1,
                       pin_memory=False)
    data = list(dm.train_dataloader())  # decode outside the timed loop: model rate only
    gen = torch.Generator().manual_seed(0)

    def step(b):
        loss = lit.compute_loss(b, gen, train=True)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(lit.trainable_parameters(), 1.0)
        opt.step()

    step(data[0])  # warm-up
    start = time.perf_counter()
    for b in data[1:]:
        step(b)
    return steps / (time.perf_counter() - start)


def bench_sd15(resolution: int, batch: int, frames: int, steps: int) -> dict[str, float]:
    from torch import nn

    from fyc_train.lit_module import FYCLitModule
    from fyc_train.models.build import animatediff_adapter_config, build_unet_from_configs, sd15_unet2d_config
    from fyc_train.models.fyc_model import FYCModel
    from fyc_train.models.text import TinyTextEncoder

    class LatentsOnly(nn.Module):
        """Stands in for the SD VAE: the benchmark feeds precomputed latents (no encode)."""
        latent_channels, downscale_factor = 4, 8

    device = torch.device("cuda")
    unet = build_unet_from_configs(sd15_unet2d_config(), animatediff_adapter_config(),
                                   {"latent_channels": 4, "motion_context_dim": 768})
    text = TinyTextEncoder(hidden_size=768, num_layers=1, num_heads=8, max_length=77)
    model = FYCModel(unet, LatentsOnly(), text, trainable="motion", gradient_checkpointing=True).to(device)
    lit = FYCLitModule(model).to(device)
    opt = torch.optim.AdamW(lit.trainable_parameters(), lr=1e-5)
    h = resolution // 8
    b = {"latents": torch.randn(batch, 4, frames, h, h, device=device),
         "mask": (torch.rand(batch, 1, resolution, resolution, device=device) > 0.5).float(),
         "caption": ["a cat on a sofa"] * batch, "motion_prompt": ["tail wagging"] * batch,
         "magnitude": torch.full((batch,), 8.0, device=device), "stride": torch.full((batch,), 4.0, device=device),
         "key": [str(i) for i in range(batch)]}
    gen = torch.Generator(device=device).manual_seed(0)

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = lit.compute_loss(b, gen, train=True)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step(), step()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    dt = (time.perf_counter() - start) / steps
    return {"sd15_step_s": dt, "sd15_samples_per_s": batch / dt,
            "sd15_peak_mem_gib": torch.cuda.max_memory_allocated() / 2**30,
            "trainable_params_M": sum(p.numel() for p in lit.trainable_parameters()) / 1e6}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--batches", type=int, default=30)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--sd15", action="store_true")
    p.add_argument("--resolution", type=int, default=256)
    args = p.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    results: dict[str, float] = {}
    if not args.sd15:
        from fyc_train.utils.synthetic_shards import write_shards

        with tempfile.TemporaryDirectory() as tmp:
            shards = write_shards(tmp, num_shards=4, per_shard=8, num_frames=args.frames, size=args.size)
            results["loader_samples_per_s"] = bench_loader(shards, args.batch, args.workers, args.frames, args.batches)
            steps_per_s = bench_tiny_training(shards, args.batch, args.frames, args.steps, args.size)
        results["tiny_steps_per_s"] = steps_per_s
        results["tiny_consumes_samples_per_s"] = steps_per_s * args.batch
        results["loader_over_consumption"] = results["loader_samples_per_s"] / results["tiny_consumes_samples_per_s"]
    else:
        results.update(bench_sd15(args.resolution, args.batch, 16, args.steps))
    print(json.dumps({k: round(v, 4) for k, v in results.items()}, indent=2))


if __name__ == "__main__":
    main()
