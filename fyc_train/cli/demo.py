"""fyc-demo: the whole system on the embedded default, on a CPU, with no downloads.

    fyc-demo                       # outputs/demo: corpus -> shards -> tiny FYC -> samples -> summary
    fyc-demo --out outputs/demo_long --train-minutes 10 --raft-weights PATH

Each stage runs the project's real command in a subprocess (the same console scripts a user
runs by hand), so the demo takes no shortcut around the pipeline and each stage's progress bars
show as they would. The stages:

1. fyc-make-corpus   MovingShapes clips + captions (training split)
2. fyc-preprocess    local Ray; RAFT when weights are available, else OpenCV Farneback
3. fyc-train         experiment=moving_shapes, W&B offline + CSV metrics, time-boxed
4. fyc-eval-shapes   held-out scenes through the sampling pipeline, metrics, contact sheets
5. summary.html      what was written where, the loss curve, the contact sheets and metrics
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from fyc_train.cli.demo_summary import write_summary

log = logging.getLogger("fyc_train.demo")
# The recipe preprocesses at 256 (labels of slow objects); the demo keeps 128 for its 10-minute
# budget (a quarter of the RAFT time), so its evaluation is told the same unit.
DEMO_FLOW_SIZE = 128
CLIP_SIZE = 64
# The recipe evaluation's speeds (px per frame of the 64 px clips); the model is asked for them
# in its training unit, px per step at flow.size, so the magnitudes follow from DEMO_FLOW_SIZE.
EVAL_SPEEDS = (1.0, 1.75, 2.5)
EVAL_MAGNITUDES = [speed * DEMO_FLOW_SIZE / CLIP_SIZE for speed in EVAL_SPEEDS]


def find_raft_weights(explicit: str | None) -> str | None:
    """A local RAFT-small checkpoint, if there is one: no download is ever attempted.

    Order: --raft-weights, $FYC_RAFT_WEIGHTS, torchvision's cache ($TORCH_HOME) for
    Raft_Small_Weights.DEFAULT. None means "use the weight-free Farneback flow instead".
    """
    if explicit:
        if not Path(explicit).is_file():
            raise SystemExit(f"fyc-demo: --raft-weights {explicit} does not exist")
        return explicit
    env = os.environ.get("FYC_RAFT_WEIGHTS")
    if env and Path(env).is_file():
        return env
    import torch
    from torchvision.models.optical_flow import Raft_Small_Weights

    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(Raft_Small_Weights.DEFAULT.url).name
    return "default" if cached.is_file() else None


def run_stage(name: str, argv: list[str], log_file: Path) -> float:
    """Run one command, streaming its output to the terminal and to log_file; return seconds."""
    print(f"\n=== [{name}] {shlex.join(argv)}", flush=True)
    start = time.perf_counter()
    with log_file.open("w") as sink:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
        assert proc.stdout is not None
        for line in proc.stdout:
            sys.stdout.write(line)
            sink.write(line)
        code = proc.wait()
    seconds = time.perf_counter() - start
    if code != 0:
        raise SystemExit(f"fyc-demo: stage '{name}' failed with exit code {code}; its full output is in {log_file}")
    print(f"=== [{name}] done in {seconds:.0f} s", flush=True)
    return seconds


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fyc-demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="outputs/demo", help="everything goes here (default: outputs/demo)")
    p.add_argument("--num-videos", type=int, default=256, help="MovingShapes training clips")
    p.add_argument("--train-minutes", type=float, default=4.0, help="training time budget (wall clock)")
    p.add_argument("--max-steps", type=int, default=100000, help="training step cap (the time budget usually ends it first)")
    p.add_argument("--eval-scenes", type=int, default=4, help="held-out scenes to sample and measure")
    p.add_argument("--raft-weights", default=None, help="local RAFT-small checkpoint (torchvision or original keys)")
    p.add_argument("--cpus", type=int, default=None, help="CPUs for the local Ray (default: all)")
    p.add_argument("--seed", type=int, default=0)
    return p


def main(argv: Sequence[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    out = Path(args.out).resolve()
    (out / "logs").mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("WANDB_MODE", "offline")  # never block on the network
    bin_dir = Path(sys.executable).parent
    cmd = lambda name: str(bin_dir / name)  # noqa: E731 - the venv's console scripts

    weights = find_raft_weights(args.raft_weights)
    flow = (["flow.model=raft_small", f"flow.weights={weights}", f"flow.size={DEMO_FLOW_SIZE}", "flow.num_updates=8"]
            if weights else ["flow.model=farneback", f"flow.size={DEMO_FLOW_SIZE}"])
    print("optical flow for preprocessing:", f"RAFT-small ({weights})" if weights else
          "OpenCV Farneback (no RAFT weights here: pass --raft-weights PATH or set FYC_RAFT_WEIGHTS for RAFT)")

    corpus, data, runs, evals = out / "corpus", out / "data", out / "runs", out / "eval"
    timings: dict[str, float] = {}
    timings["corpus"] = run_stage("corpus", [
        cmd("fyc-make-corpus"), "--out", str(corpus), "--num-videos", str(args.num_videos), "--seed", str(args.seed),
        "--size", str(CLIP_SIZE), str(CLIP_SIZE), "--frames", "8", "--fps", "8", "--motions-per-scene", "4"], out / "logs" / "corpus.log")
    ray_cpus = [f"ray.num_cpus={args.cpus}"] if args.cpus else []
    timings["preprocess"] = run_stage("preprocess", [
        cmd("fyc-preprocess"), f"input.manifest={corpus / 'manifest.csv'}", f"output.dir={data}",
        "clip.num_frames=8", "clip.stride=1", f"clip.size=[{CLIP_SIZE},{CLIP_SIZE}]", "shard.max_samples=64", "flow.mask_region=first",
        *flow, *ray_cpus],
        out / "logs" / "preprocess.log")
    train_seconds = int(args.train_minutes * 60)
    timings["train"] = run_stage("train", [
        cmd("fyc-train"), "experiment=moving_shapes", f"data.shards={data / 'shards'}/*.tar",
        f"paths.output_dir={runs}", "run_name=moving_shapes", "logger=[wandb,csv]", f"seed={args.seed}",
        f"trainer.max_steps={args.max_steps}",
        f"trainer.max_time=00:{train_seconds // 3600:02d}:{train_seconds % 3600 // 60:02d}:{train_seconds % 60:02d}"],
        out / "logs" / "train.log")
    checkpoint = runs / "moving_shapes" / "checkpoints" / "last.ckpt"
    timings["evaluate"] = run_stage("evaluate", [
        cmd("fyc-eval-shapes"), f"checkpoint={checkpoint}", f"out={evals}", f"num_scenes={args.eval_scenes}",
        f"seed={args.seed + 1000}", f"flow_size={DEMO_FLOW_SIZE}",
        f"magnitudes=[{','.join(f'{m:g}' for m in EVAL_MAGNITUDES)}]"],
        out / "logs" / "evaluate.log")

    summary = write_summary(out, run_dir=runs / "moving_shapes", eval_dir=evals, data_dir=data, timings=timings)
    (out / "timings.json").write_text(json.dumps(timings, indent=2))
    print(f"\nfyc-demo finished in {sum(timings.values()) / 60:.1f} min. Open {summary}")


if __name__ == "__main__":
    main()
