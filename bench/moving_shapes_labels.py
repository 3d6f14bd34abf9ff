"""How well fyc-preprocess's magnitude labels read MovingShapes' known speeds, per flow setting.

MovingShapes renders every object at a known speed (manifest column `speed`, px per frame at the
clip's size), so the label `fyc-preprocess` would write (FlowStep -> MotionStep, the same classes
and settings) can be checked against the truth: at flow size S the true label is
speed * S / H. Prints, per setting and MotionStep core fraction (fyc-preprocess
flow.core_fraction), the RAFT time, the linear fit label = a * true + b, the median label/true
ratio of the slowest and fastest thirds, and the median relative error.

    python bench/moving_shapes_labels.py --corpus out/ms_corpus4 --clips 30 --threads 2 \
        --weights PATH/raft_small_torchvision.pth --settings 6@256 12@256 --core-fractions 0.5 0.8
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch  # before decord: importing decord first crashes torch's CPU kernels here (segfault)

import decord  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from preprocessing.steps.flow import FlowStep  # noqa: E402
from preprocessing.steps.motion import MotionStep  # noqa: E402


def read_clips(corpus: Path, rows: pd.DataFrame) -> list[np.ndarray]:
    clips = []
    for video, frames in zip(rows.video, rows.num_frames):
        reader = decord.VideoReader(str(corpus / video))
        clips.append(reader.get_batch(list(range(int(frames)))).asnumpy())
    return clips


def label_report(flows: list[np.ndarray], motion: MotionStep, true: np.ndarray) -> dict:
    labels = np.array([motion.measure(f)["magnitude"] for f in flows])
    ratio = labels / true
    order = np.argsort(true)
    third = max(1, len(true) // 3)
    slope, intercept = np.polyfit(true, labels, 1)
    return {"slope": slope, "intercept": intercept,
            "ratio_slowest_third": float(np.median(ratio[order[:third]])),
            "ratio_fastest_third": float(np.median(ratio[order[-third:]])),
            "median_rel_error": float(np.median(np.abs(ratio - 1)))}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--corpus", type=Path, required=True, help="fyc-make-corpus output (manifest.csv + videos/)")
    p.add_argument("--weights", required=True, help="RAFT-small weights (torchvision key format)")
    p.add_argument("--clips", type=int, default=12, help="clips spread evenly over the speed range")
    p.add_argument("--settings", nargs="+", default=["6@128", "12@128", "6@256"],
                   help="UPDATES@FLOW_SIZE pairs (fyc-preprocess flow.num_updates, flow.size)")
    p.add_argument("--mask-region", default="first", help="fyc-preprocess flow.mask_region")
    p.add_argument("--core-fractions", type=float, nargs="+", default=[0.5, 0.8],
                   help="fyc-preprocess flow.core_fraction values (labels from the same flows)")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    manifest = pd.read_csv(args.corpus / "manifest.csv").sort_values("speed")
    rows = manifest.iloc[np.linspace(0, len(manifest) - 1, args.clips).round().astype(int)]
    clips = read_clips(args.corpus, rows)
    height = int(rows.height.iloc[0])
    print(f"{len(clips)} clips, speeds {rows.speed.min():.2f}-{rows.speed.max():.2f} px/frame at {height} px")
    print("updates  flow size  core  RAFT s   label = a * true + b   ratio slowest/fastest third   median rel. error")
    for setting in args.settings:
        updates, size = (int(v) for v in setting.split("@"))
        flow = FlowStep(model="raft_small", weights=args.weights, num_updates=updates, size=(size, size),
                        device="cpu", allow_download=False)
        began = time.perf_counter()
        flows = flow.flows_for(clips)
        seconds = time.perf_counter() - began
        for core in args.core_fractions:
            motion = MotionStep(region=args.mask_region, core_fraction=core)
            r = label_report(flows, motion, rows.speed.to_numpy() * size / height)
            print(f"{updates:7d}  {size:9d}  {core:4.2f}  {seconds:6.1f}   {r['slope']:5.3f} * true {r['intercept']:+.3f}"
                  f"     {r['ratio_slowest_third']:.2f} / {r['ratio_fastest_third']:.2f}"
                  f"                 {r['median_rel_error']:.3f}", flush=True)


if __name__ == "__main__":
    main()
