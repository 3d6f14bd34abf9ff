"""Label accuracy of `fyc-preprocess` on small clips: RAFT on the clip vs RAFT on the source frames.

Renders held-out MovingShapes clips (`fyc-make-corpus`, objects of known speed in px/frame at the
source size), preprocesses them with the real command to small clips (clip.size) at each flow
setting, and compares each sample's magnitude (px per sampled step at flow.size) with the truth,
speed * stride * flow.size / source size. Prints per setting: empty masks (magnitude 0), how many
labels read within 25% of the truth, the median label/true ratio, and the label warnings.

    python bench/label_accuracy.py --weights RAFT_SMALL.pth --out out/label_bench \
        --settings clip@128 clip@256 source@128 source@256 --override ray.num_cpus=2
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]


def make_corpus(out: Path, num_videos: int, size: int, seed: int) -> Path:
    if not (out / "manifest.csv").exists():
        subprocess.run([sys.executable, "-m", "preprocessing.synthetic.cli", "--out", str(out), "--num-videos",
                        str(num_videos), "--size", str(size), str(size), "--frames", "24", "--held-out",
                        "--speed-range", "0.5", "3.0", "--seed", str(seed)], check=True, cwd=REPO)
    return out / "manifest.csv"


def run_setting(manifest: Path, out: Path, weights: str, frames: str, flow_size: int, clip_size: int,
                stride: int, updates: int, extra: list[str]) -> float:
    began = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "preprocessing.cli", f"input.manifest={manifest}", f"output.dir={out}",
         f"flow.weights={weights}", f"flow.frames={frames}", f"flow.size={flow_size}",
         f"clip.size=[{clip_size},{clip_size}]", "clip.num_frames=8", f"clip.stride={stride}",
         f"flow.num_updates={updates}", "report_thumbnails=0", *extra],
        cwd=REPO, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(proc.stdout[-2000:] + proc.stderr[-4000:])
    return time.perf_counter() - began


def summarize(out: Path, source_size: int, stride: int, flow_size: int) -> dict:
    df = pd.read_parquet(out / "manifest.parquet")
    df = df[df.status == "ok"]
    speed = np.array([json.loads(e)["speed"] for e in df.extra], dtype=float)
    truth = speed * stride * flow_size / source_size
    ratio = df.magnitude.to_numpy() / truth
    return {"clips": len(df), "empty": int((df.magnitude == 0).sum()),
            "within_25pct": int((np.abs(ratio - 1) <= 0.25).sum()),
            "median_ratio": float(np.median(ratio)), "warned": int((df.label_warning != "").sum())}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", required=True, help="RAFT-small weights (torchvision or original keys)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--num-videos", type=int, default=13)
    p.add_argument("--source-size", type=int, default=256)
    p.add_argument("--clip-size", type=int, default=64)
    p.add_argument("--stride", type=int, default=2)
    p.add_argument("--updates", type=int, default=12)
    p.add_argument("--seed", type=int, default=11)
    p.add_argument("--settings", nargs="+", default=["clip@128", "clip@256", "source@128", "source@256"],
                   help="FRAMES@FLOW_SIZE (fyc-preprocess flow.frames, flow.size)")
    p.add_argument("--override", action="append", default=[],
                   help="another fyc-preprocess override, e.g. --override ray.num_cpus=2 (repeatable)")
    args = p.parse_args(argv)
    manifest = make_corpus(args.out / "corpus", args.num_videos, args.source_size, args.seed)
    print(f"{args.num_videos} held-out clips at {args.source_size} px -> {args.clip_size} px clips, "
          f"stride {args.stride}, {args.updates} RAFT updates")
    print("flow.frames  flow.size  wall s  ok  empty masks  within 25%  median label/true  label_warning")
    for setting in args.settings:
        frames, size = setting.split("@")
        out = args.out / f"run_{frames}_{size}"
        wall = run_setting(manifest, out, args.weights, frames, int(size), args.clip_size, args.stride,
                           args.updates, args.override)
        r = summarize(out, args.source_size, args.stride, int(size))
        print(f"{frames:11s}  {int(size):9d}  {wall:6.1f}  {r['clips']:2d}  {r['empty']:11d}  "
              f"{r['within_25pct']:10d}  {r['median_ratio']:17.2f}  {r['warned']:13d}", flush=True)


if __name__ == "__main__":
    main()
