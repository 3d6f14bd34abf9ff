"""Resume latency against the steps already done, and the exactness of a resume.

1. Latency: the time from building the training loader of a resumed run (data position =
   N consumed batches, as a checkpoint carries it) to its first batch, for several N. The
   loader starts its sampler at the position (no consumed sample is read or decoded), so the
   latency should not grow with N: printed as a ratio to N = 0, measured in one run.
   For contrast, `replay` is what a stream without a position has to do to be exact: decode
   the N consumed batches again (measured for small N, linear).
2. `--exactness`: fyc-train for 2k steps uninterrupted against k steps + resume to 2k (in this
   process, tiny model, `data.num_workers` as given), printing the largest weight and EMA
   differences (0.0 = bit-identical).

    python bench/bench_resume.py                                   # synthetic shards
    python bench/bench_resume.py --exactness --shards 'out/shards/*.tar' --steps 4
    python bench/bench_resume.py --exactness-only --shards 'out/shards/*.tar' --steps 4
"""

from __future__ import annotations

import argparse
import glob
import json
import tempfile
import time
from pathlib import Path


def first_batch_latency(shards: list[str], consumed: int, batch: int, workers: int, frames: int) -> float:
    from fyc_train.data import FYCDataModule

    dm = FYCDataModule(shards, batch_size=batch, num_workers=workers, num_frames=frames, steps_per_epoch=2000,
                       pin_memory=False)
    dm.consumed_batches = consumed  # what load_state_dict restores from a checkpoint
    start = time.perf_counter()
    next(iter(dm.train_dataloader()))
    return time.perf_counter() - start


def replay_latency(shards: list[str], consumed: int, batch: int, frames: int) -> float:
    """Decode the consumed batches again, then the next one (a stream that cannot seek)."""
    from fyc_train.data import FYCDataModule

    dm = FYCDataModule(shards, batch_size=batch, num_workers=0, num_frames=frames, steps_per_epoch=consumed + 1,
                       pin_memory=False)
    start = time.perf_counter()
    for _ in zip(dm.train_dataloader(), range(consumed + 1)):
        pass
    return time.perf_counter() - start


def exactness(shards: str, steps: int, workers: int, frames: int) -> dict[str, float]:
    import torch
    from hydra import compose, initialize_config_dir

    from fyc_train.cli.train import CONFIG_DIR, train

    out = Path(tempfile.mkdtemp(prefix="bench_resume_"))
    common = ["experiment=tiny", f"data.shards={shards}", f"data.num_workers={workers}", "callbacks.samples=null",
              "logger=none", "export.enabled=false", f"checkpoint_every_n_steps={steps}", f"paths.output_dir={out}",
              "trainer.enable_progress_bar=false", "data.resolution=[32,32]", f"data.num_frames={frames}"]

    def run(name: str, max_steps: int) -> None:
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            train(compose("train", overrides=[*common, f"run_name={name}", f"trainer.max_steps={max_steps}"]))

    run("split", steps)
    run("split", 2 * steps)
    run("whole", 2 * steps)
    a, b = (torch.load(out / n / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
            for n in ("split", "whole"))
    ema = next(k for k in b["callbacks"] if "EMACallback" in k)
    return {
        "steps": 2 * steps, "resumed_at": steps,
        "max_abs_weight_diff": max(float((a["state_dict"][k].double() - v.double()).abs().max())
                                   for k, v in b["state_dict"].items() if v.is_floating_point()),
        "max_abs_ema_diff": max(float((x.double() - y.double()).abs().max())
                                for x, y in zip(a["callbacks"][ema]["shadow_params"], b["callbacks"][ema]["shadow_params"])),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shards", default=None, help="shard glob (default: synthetic shards in a temp folder)")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--consumed", type=int, nargs="+", default=[0, 100, 10_000, 1_000_000])
    parser.add_argument("--replay", type=int, nargs="+", default=[0, 8, 32])
    parser.add_argument("--repeats", type=int, default=3, help="latency = median of this many loaders")
    parser.add_argument("--exactness", action="store_true")
    parser.add_argument("--steps", type=int, default=4, help="--exactness: resume after this many steps")
    parser.add_argument("--exactness-only", action="store_true", help="skip the latency part")
    args = parser.parse_args()
    if args.exactness_only:
        print("exactness:", exactness(args.shards, args.steps, args.workers, args.frames))
        return

    if args.shards is None:
        from fyc_train.utils.synthetic_shards import write_shards

        folder = Path(tempfile.mkdtemp(prefix="bench_resume_shards_"))
        write_shards(folder, num_shards=8, per_shard=16, num_frames=args.frames, size=32)
        args.shards = str(folder / "shard-*.tar")
    shards = sorted(glob.glob(args.shards))
    first_batch_latency(shards, 0, args.batch, args.workers, args.frames)  # warm-up (imports, page cache)

    def median(values: list[float]) -> float:
        return sorted(values)[len(values) // 2]

    resume = {n: median([first_batch_latency(shards, n, args.batch, args.workers, args.frames)
                         for _ in range(args.repeats)]) for n in args.consumed}
    replay = {n: replay_latency(shards, n, args.batch, args.frames) for n in args.replay}
    base = resume[args.consumed[0]]
    print(f"resume: first batch after N consumed batches (batch {args.batch}, {args.workers} workers)")
    for n, s in resume.items():
        print(f"  N={n:>9,}  {s * 1000:8.1f} ms  ratio to N={args.consumed[0]}: {s / base:5.2f}")
    print("replay (a stream without a position decodes the consumed batches again, 0 workers)")
    for n, s in replay.items():
        print(f"  N={n:>9,}  {s * 1000:8.1f} ms  ratio to N={args.replay[0]}: {s / replay[args.replay[0]]:5.2f}")
    result = {"resume_s": resume, "replay_s": replay}
    if args.exactness:
        result["exactness"] = exactness(args.shards, args.steps, args.workers, args.frames)
        print("exactness:", result["exactness"])
    print(json.dumps(result))


if __name__ == "__main__":
    main()
