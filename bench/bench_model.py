"""Benchmark the FYC U-Net: forward+backward samples/s, peak memory, MFU.

    python bench/bench_model.py                       # tiny on CPU; SD1.5 part if CUDA is present
    python bench/bench_model.py --device cuda         # SD1.5-sized (random init) at 256 and 512
    python bench/bench_model.py --tiny-sd             # SD path at a smoke size (runs on CPU)

Tiny: the embedded default (build_tiny) at 64x64, 8 frames, fp32 on CPU. SD: random weights
with SD1.5 + AnimateDiff v1.5-2 shapes (no files needed), 16 frames, bf16 autocast with fp32
master weights, trainable set = paper (motion modules + MA, conv_in, magnitude), with and
without gradient checkpointing. Model FLOPs of one training step (recomputation excluded) are counted with
torch.utils.flop_counter.FlopCounterMode; MFU = FLOPs / time / peak (H100 bf16 dense 989 TFLOP/s).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fyc_train.models import assemble_input, build_tiny  # noqa: E402
from fyc_train.models.build import (animatediff_adapter_config, build_unet_from_configs,  # noqa: E402
                                    sd15_unet2d_config)

PEAK_FLOPS = {"h100": 989e12, "h200": 989e12}


def make_step(unet, batch, frames, latent, channels, text_len, text_dim, device, dtype):
    g = torch.Generator(device="cpu").manual_seed(0)
    z = torch.randn(batch, channels, frames, latent, latent, generator=g).to(device)
    x = assemble_input(z, torch.ones(batch, 1, latent, latent, device=device), z[:, :, 0])
    t = torch.randint(0, 1000, (batch,), generator=g).to(device)
    ehs = torch.randn(batch, text_len, text_dim, generator=g).to(device)
    mhs = torch.randn(batch, text_len, text_dim, generator=g).to(device)
    mag = torch.rand(batch, generator=g).to(device) * 10
    params = [p for p in unet.parameters() if p.requires_grad]

    def step():
        with torch.autocast(device_type=device.type, dtype=dtype, enabled=dtype != torch.float32):
            out = unet(x, t, ehs, mhs, magnitude=mag)
        loss = out.float().square().mean()
        loss.backward()
        for p in params:
            p.grad = None
        return loss

    return step


def count_flops(step) -> float:
    with FlopCounterMode(display=False) as counter:
        step()
    return float(counter.get_total_flops())


def measure(step, device, warmup: int, iters: int) -> dict:
    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(iters):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    dt = (time.perf_counter() - t0) / iters
    peak = (torch.cuda.max_memory_allocated() if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return {"step_s": dt, "peak_mem_gib": peak / 2**30}


def bench_tiny(args) -> dict:
    model = build_tiny(image_size=args.tiny_size)
    unet = model.unet.train()
    lat = args.tiny_size // model.downscale_factor
    step = make_step(unet, args.tiny_batch, args.tiny_frames, lat, model.latent_channels,
                     model.text_encoder.max_length, model.text_encoder.hidden_size,
                     torch.device("cpu"), torch.float32)
    flops = count_flops(step)
    r = measure(step, torch.device("cpu"), warmup=1, iters=args.iters)
    return {"name": f"tiny {args.tiny_size}px x{args.tiny_frames}f b{args.tiny_batch} fp32 cpu",
            "params_M": sum(p.numel() for p in unet.parameters()) / 1e6,
            "samples_per_s": args.tiny_batch / r["step_s"], "step_s": r["step_s"],
            "peak_mem_gib (process RSS)": r["peak_mem_gib"], "gflop_per_step": flops / 1e9,
            "achieved_gflops": flops / r["step_s"] / 1e9}


def bench_sd(args, device, resolution: int, checkpointing: bool, smoke: bool) -> dict:
    ucfg, acfg = sd15_unet2d_config(), animatediff_adapter_config()
    if smoke:  # same block structure, small widths: exercises the SD code path on CPU
        ucfg.update(block_out_channels=(32, 64, 64, 64), cross_attention_dim=64, attention_head_dim=2)
        acfg.update(block_out_channels=(32, 64, 64, 64), motion_num_attention_heads=2)
    ucfg["sample_size"] = resolution // 8
    unet = build_unet_from_configs(ucfg, acfg, {"latent_channels": 4,
                                                "motion_context_dim": ucfg["cross_attention_dim"]})
    unet.requires_grad_(False)
    for p in unet.motion_module_parameters() + list(unet.unet.conv_in.parameters()) + unet.conditioning_parameters():
        p.requires_grad_(True)
    unet.to(device).train()
    dtype = torch.bfloat16 if (device.type == "cuda" or args.cpu_bf16) else torch.float32
    step = make_step(unet, args.batch, args.frames, resolution // 8, 4, 77, ucfg["cross_attention_dim"],
                     device, dtype)
    flops = count_flops(step)  # model FLOPs: counted before checkpointing adds recomputation
    if checkpointing:
        unet.enable_gradient_checkpointing()
    r = measure(step, device, warmup=args.warmup, iters=args.iters)
    res = {"name": f"{'sd-smoke' if smoke else 'sd15'} {resolution}px x{args.frames}f b{args.batch} "
                   f"{str(dtype).split('.')[-1]} ckpt={checkpointing} {device.type}",
           "params_M": sum(p.numel() for p in unet.parameters()) / 1e6,
           "trainable_M": sum(p.numel() for p in unet.parameters() if p.requires_grad) / 1e6,
           "samples_per_s": args.batch / r["step_s"], "step_s": r["step_s"],
           "peak_mem_gib": r["peak_mem_gib"], "tflop_per_step": flops / 1e12,
           "achieved_tflops": flops / r["step_s"] / 1e12}
    if device.type == "cuda":
        name = torch.cuda.get_device_name().lower()
        peak = next((v for k, v in PEAK_FLOPS.items() if k in name), None)
        res["device_name"] = torch.cuda.get_device_name()
        res["mfu"] = flops / r["step_s"] / peak if peak else None
    del unet, step
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--tiny-sd", action="store_true", help="SD block structure at small widths (CPU smoke)")
    ap.add_argument("--skip-tiny", action="store_true")
    ap.add_argument("--resolutions", type=int, nargs="+", default=[256, 512])
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--tiny-size", type=int, default=64)
    ap.add_argument("--tiny-frames", type=int, default=8)
    ap.add_argument("--tiny-batch", type=int, default=2)
    ap.add_argument("--cpu-bf16", action="store_true", help="bf16 autocast on CPU for the SD part")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", type=Path, default=None, help="also write results here")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    results = {"host": platform.node(), "torch": torch.__version__, "threads": torch.get_num_threads(),
               "runs": []}
    if not args.skip_tiny:
        results["runs"].append(bench_tiny(args))
        print(json.dumps(results["runs"][-1]), flush=True)
    if device.type == "cuda" or args.tiny_sd:
        for res in args.resolutions:
            for ckpt in (False, True):
                try:
                    results["runs"].append(bench_sd(args, device, res, ckpt, smoke=args.tiny_sd))
                except torch.OutOfMemoryError as err:
                    results["runs"].append({"name": f"sd15 {res}px ckpt={ckpt}", "error": f"OOM: {err}"[:200]})
                    torch.cuda.empty_cache()
                print(json.dumps(results["runs"][-1]), flush=True)
    else:
        print("SD1.5-sized benchmark needs CUDA (--device cuda); use --tiny-sd for a CPU smoke run "
              "of the same code path.", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
