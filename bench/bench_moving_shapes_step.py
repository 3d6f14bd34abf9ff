"""Where a MovingShapes training step spends its time: steps/s of the composed recipe
(forward + backward + AdamW on real batches, no data loading in the timed loop) under
numerics variants, measured in one run, and the top operators by device time.

    python bench/bench_moving_shapes_step.py --shards 'out/ms_pre4/shards/*.tar' --device cuda
    python bench/bench_moving_shapes_step.py --shards ... --override model.unet.block_out_channels=[96,192]

Variants: fp32 as configured (TF32 matmuls, as fyc-train sets), + cudnn.benchmark, + bf16
autocast (trainer.precision=bf16-mixed), + channels-last. Ratios are against the first variant.
"""
from __future__ import annotations

import argparse
import glob
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def build(overrides: list[str], device: str):
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    with initialize_config_dir(str(REPO / "conf" / "train"), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=moving_shapes_gpu", "data.shards=unused", *overrides])
    model = instantiate(cfg.model)
    lit = instantiate(cfg.module, model=model).to(device)
    return cfg, lit


def real_batches(shards: str, cfg, count: int, device: str) -> list[dict]:
    from fyc_train.data import FYCDataModule

    dm = FYCDataModule(sorted(glob.glob(shards)), batch_size=cfg.data.batch_size, num_workers=0,
                       num_frames=cfg.data.num_frames, steps_per_epoch=count, pin_memory=False)
    return [{k: v.to(device) if torch.is_tensor(v) else v for k, v in b.items()} for b in dm.train_dataloader()]


def time_steps(lit, batches: list[dict], steps: int, autocast: torch.dtype | None, device: str,
               warmup: int = 3) -> float:
    opt = torch.optim.AdamW(lit.trainable_parameters(), lr=1e-4)
    gen = torch.Generator(device=device).manual_seed(0)
    ctx = torch.autocast(device_type=device.split(":")[0], dtype=autocast) if autocast else nullcontext()

    def step(batch):
        with ctx:
            loss = lit.compute_loss(batch, gen, train=True)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for b in batches[:warmup]:  # warm-up (cudnn.benchmark autotuning, allocator)
        step(b)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    for i in range(steps):
        step(batches[i % len(batches)])
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return steps / (time.perf_counter() - start)


def profile(lit, batches: list[dict], device: str, rows: int) -> str:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.startswith("cuda") else [])
    gen = torch.Generator(device=device).manual_seed(0)
    with torch_profile(activities=activities) as prof:
        for b in batches[:3]:
            lit.compute_loss(b, gen, train=True).backward()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
    sort = "cuda_time_total" if device.startswith("cuda") else "self_cpu_time_total"
    return prof.key_averages().table(sort_by=sort, row_limit=rows)


def main(argv: list[str] | None = None) -> None:
    with torch.enable_grad():  # a caller (a test, a notebook) may have turned gradients off
        run(argv)


def run(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shards", required=True)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3, help="untimed steps per variant")
    p.add_argument("--rows", type=int, default=25)
    p.add_argument("--override", action="append", default=[], help="Hydra override (repeatable)")
    p.add_argument("--no-profile", action="store_true")
    args = p.parse_args(argv)
    torch.set_float32_matmul_precision("high")
    cfg, lit = build(args.override, args.device)
    lit.train()
    batches = real_batches(args.shards, cfg, 4, args.device)
    params = sum(x.numel() for x in lit.trainable_parameters()) / 1e6
    print(f"{args.device}: batch {cfg.data.batch_size} x {cfg.data.num_frames} frames at "
          f"{cfg.model.image_size}px, {params:.2f}M trainable, overrides {args.override}", flush=True)
    if not args.no_profile:
        print(profile(lit, batches, args.device, args.rows), flush=True)
    results = {}
    variants = (("fp32", False, None, False), ("fp32+cudnn.benchmark", True, None, False),
                ("bf16 autocast+cudnn.benchmark", True, torch.bfloat16, False),
                ("bf16 autocast+cudnn.benchmark+channels_last", True, torch.bfloat16, True))
    for name, benchmark, autocast, channels_last in variants:
        torch.backends.cudnn.benchmark = benchmark
        if channels_last:
            lit.to(memory_format=torch.channels_last)
        results[name] = time_steps(lit, batches, args.steps, autocast, args.device, args.warmup)
        print(f"{name:40s} {results[name]:7.2f} steps/s  x{results[name] / results['fp32']:.2f}", flush=True)


if __name__ == "__main__":
    main()
