"""MovingShapes learning curve: every metric against minutes of training, one run.

    python bench/moving_shapes_curve.py --run-dir outputs/moving_shapes --out docs/moving_shapes

Evaluates every `step*.ckpt` the run kept (train with `callbacks.last_checkpoint.save_top_k=-1`
so the periodic checkpoints are kept) with `fyc_train.eval.run.evaluate_model` on the same
held-out scenes, and writes OUT/curve.json and OUT/curve.png. Minutes of training = the
checkpoint file's time minus the run's start (its first file), i.e. wall-clock time of the
training process including its validation and checkpointing.

A run that continues another (`module.init_from=.../stepN.ckpt`) is put on the same axes with
`--offset-steps N --offset-minutes M --append FIRST_RUN_OUT/curve.json`.
"""
from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import re
import sys
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext
from datetime import datetime
from itertools import repeat
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fyc_train.eval.run import GOALS, _finite, evaluate_model  # noqa: E402
from fyc_train.sampling.checkpoint_loading import load_for_sampling  # noqa: E402

METRICS = ["direction_accuracy", "locality", "speed_spearman", "speed_within_30pct", "i1_mse"]


def run_start(run_dir: Path) -> float:
    """The run's first log line (train.log is appended to, so a resumed run keeps its start);
    else the earliest file time in the run (Hydra rewrites its files when a run resumes)."""
    log_file = run_dir / "train.log"
    if log_file.is_file():
        with log_file.open() as f:
            match = re.match(r"\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)", f.readline())
        if match:
            return datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S").timestamp()
    times = [p.stat().st_mtime for p in run_dir.rglob("*") if p.is_file() and "checkpoints" not in p.parts]
    ckpts = [p.stat().st_mtime for p in (run_dir / "checkpoints").glob("*.ckpt")]
    if not times and not ckpts:
        raise SystemExit(f"{run_dir} holds no run files")
    return min(times or ckpts)


def checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    found = []
    for path in (run_dir / "checkpoints").glob("step*.ckpt"):
        match = re.fullmatch(r"step(\d+)\.ckpt", path.name)
        if match:
            found.append((int(match.group(1)), path))
    if not found:
        raise SystemExit(f"no step*.ckpt in {run_dir / 'checkpoints'}: train with "
                         "callbacks.last_checkpoint.save_top_k=-1 to keep the periodic checkpoints")
    return sorted(found)


def evaluate_checkpoint(path: Path, eval_kwargs: dict) -> dict:
    """The evaluation summary of one checkpoint (top level: runs in worker processes)."""
    eval_kwargs = dict(eval_kwargs)
    torch.set_num_threads(eval_kwargs.pop("threads"))
    with torch.no_grad():  # not set_grad_enabled(False): with --jobs 1 this runs in the caller's process
        return evaluate_model(load_for_sampling(path), progress=False, **eval_kwargs)["summary"]


def plot(points: list[dict], path: Path, minutes_label: str = "2 CPU cores") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(METRICS), figsize=(4 * len(METRICS), 3.4))
    for ax, metric in zip(axes, METRICS):
        for mode, style in (("model_first_frame", "o-"), ("impose_first_frame", "s--")):
            xs = [p["minutes"] for p in points if mode in p["summary"]]
            ys = [p["summary"][mode].get(metric) for p in points if mode in p["summary"]]
            ys = [math.nan if y is None else y for y in ys]
            if xs:
                ax.plot(xs, ys, style, label=mode.replace("_", " "), markersize=4)
        op, goal = GOALS[metric]
        ax.axhline(goal, color="green", linestyle=":", label=f"goal {op} {goal:g}")
        ax.set_title(metric)
        ax.set_xlabel(f"training minutes ({minutes_label})")
        if metric == "i1_mse":
            ax.set_yscale("log")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run-dir", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--num-scenes", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--magnitudes", type=float, nargs="+", default=[2.0, 3.5, 5.0])
    p.add_argument("--flow-size", type=int, default=128)
    p.add_argument("--num-frames", type=int, default=8)
    p.add_argument("--steps", type=int, default=1, help="DDIM steps (1: as fyc-eval-shapes)")
    p.add_argument("--guidance", type=float, default=1.0)
    p.add_argument("--noisy-last-step", action="store_true",
                   help="DDIM's last step keeps ~0.03 of the noise (the sampler of the first MovingShapes runs; make_scheduler)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--jobs", type=int, default=1, help="checkpoints evaluated in parallel processes")
    p.add_argument("--minutes-label", default="2 CPU cores", help="what the x axis's minutes ran on")
    p.add_argument("--every", type=int, default=1, help="evaluate every k-th kept checkpoint (and the last)")
    p.add_argument("--offset-steps", type=int, default=0,
                   help="for a run started with module.init_from: the steps its initial checkpoint had")
    p.add_argument("--offset-minutes", type=float, default=0.0,
                   help="... and the training minutes that checkpoint took")
    p.add_argument("--append", type=Path, default=None,
                   help="curve.json of the run this one continues: its points come first")
    p.add_argument("--resume", action="store_true",
                   help="keep OUT/curve.json's points and evaluate only checkpoints it lacks (a run still training)")
    args = p.parse_args(argv)
    start = run_start(args.run_dir)
    args.out.mkdir(parents=True, exist_ok=True)
    points = json.loads(args.append.read_text())["points"] if args.append else []
    found = checkpoints(args.run_dir)
    chosen = [(step, path) for i, (step, path) in enumerate(found) if i % args.every == 0 or i == len(found) - 1]
    if args.resume and (args.out / "curve.json").is_file():
        points = json.loads((args.out / "curve.json").read_text())["points"]
        done = {p["checkpoint"] for p in points}
        chosen = [(step, path) for step, path in chosen if str(path) not in done]
        print(f"--resume: {len(points)} points kept from {args.out / 'curve.json'}, {len(chosen)} checkpoints to add")
    eval_kwargs = dict(num_scenes=args.num_scenes, seed=args.seed, magnitudes=args.magnitudes,
                       flow_size=args.flow_size, num_frames=args.num_frames, steps=args.steps,
                       guidance=args.guidance, clean_last_step=not args.noisy_last_step, threads=args.threads)
    config = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    # Each checkpoint is independent: with --jobs > 1 they are evaluated in worker processes
    # (spawned: no CUDA or thread-pool state inherited), and points are written in step order.
    with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) if args.jobs > 1 \
            else nullcontext() as pool:
        reports = (pool.map(evaluate_checkpoint, [p for _, p in chosen], repeat(eval_kwargs)) if pool
                   else (evaluate_checkpoint(p, eval_kwargs) for _, p in chosen))
        for (step, path), summary in zip(chosen, reports):
            step += args.offset_steps
            minutes = (path.stat().st_mtime - start) / 60 + args.offset_minutes
            points.append({"step": step, "minutes": round(minutes, 2), "checkpoint": str(path), "summary": summary})
            s = summary["model_first_frame"]
            print(f"step {step:6d}  {minutes:6.1f} min  " + "  ".join(f"{m} {s[m]:.3g}" for m in METRICS),
                  flush=True)
            write(args.out, config, points)  # after every point: a killed run keeps what it measured
    if not chosen:  # nothing new (--resume): still redraw, with this call's label
        write(args.out, config, points)
    print(f"wrote {args.out / 'curve.json'} and {args.out / 'curve.png'}")


def write(out: Path, config: dict, points: list[dict]) -> None:
    (out / "curve.json").write_text(json.dumps(_finite({"config": config, "points": points}), indent=2))
    if points:
        plot(points, out / "curve.png", config["minutes_label"])


if __name__ == "__main__":
    main()
