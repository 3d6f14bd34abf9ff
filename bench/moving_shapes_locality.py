"""Where the motion energy of MovingShapes videos goes: what holds the locality metric down.

Locality (fyc_train/eval/moving_shapes.py) is the share of Farneback motion energy, sum |flow|^2,
inside the target's dilated reachable region. This bench splits that energy for the evaluation's
own videos (the held-out scenes, directions and magnitudes of `fyc-eval-shapes`, 1 DDIM step,
model's frame 0) and for the ground truth (the same scenes rendered at the requested motion and
passed through H.264, as the training clips were), and prints per source:

- locality, and the energy per frame pair inside and outside the region;
- the energy outside the region for each frame pair (0->1, 1->2, ...);
- background drift: mean |frame k - frame 0| outside the region, in grey levels, per frame k;
- the RMS flow outside the region, and the RMS flow that locality 0.9 would allow given the
  video's own energy inside it (out = in / 9).

    python bench/moving_shapes_locality.py --checkpoint out/runs/r5_nomask/checkpoints/last.ckpt \
        --num-scenes 4 --flow-size 128 --out out/locality_recipe.json
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch

from fyc_train.eval.moving_shapes import dilate, farneback_flows
from fyc_train.eval.run import held_out_scenes, motion_requests, speeds_px_per_frame, through_h264
from preprocessing.synthetic.moving_shapes import (
    SceneSpec,
    motion_prompt,
    object_mask,
    reachable_region,
    render_frames,
)

TARGET_LOCALITY = 0.9


def energy_split(video: np.ndarray, request: SceneSpec, dilate_px: int = 3) -> dict[str, float | list[float]]:
    """Motion energy of one video (uint8 (F, H, W, 3)) inside / outside the request's target region."""
    region = dilate(reachable_region(request, request.target, len(video), 1), dilate_px)
    energy = (farneback_flows(video).astype(np.float64) ** 2).sum(axis=-1)  # (F-1, H, W)
    pairs, outside = len(energy), int((~region).sum())
    inside_energy, outside_energy = float(energy[:, region].sum()), float(energy[:, ~region].sum())
    frames = video.astype(np.float64)
    return {
        "locality": inside_energy / (inside_energy + outside_energy) if inside_energy + outside_energy else math.nan,
        "inside_per_pair": inside_energy / pairs,
        "outside_per_pair": outside_energy / pairs,
        "outside_by_pair": energy[:, ~region].sum(axis=1).tolist(),  # frame 0 -> 1 first: is it the jump or flicker?
        "background_drift": [float(np.abs(f - frames[0])[~region].mean()) for f in frames],
        "outside_rms_flow": math.sqrt(outside_energy / (pairs * outside)),
        "outside_rms_flow_for_target": math.sqrt(inside_energy * (1 - TARGET_LOCALITY) / TARGET_LOCALITY
                                                 / (pairs * outside)),
    }


def summarize(splits: Iterable[dict]) -> dict[str, float | list[float]]:
    splits = list(splits)
    out: dict[str, float | list[float]] = {"videos": len(splits)}
    for key in splits[0]:
        values = np.array([s[key] for s in splits], dtype=np.float64)
        out[key] = values.mean(axis=0).tolist() if values.ndim > 1 else float(np.nanmean(values))
    return out


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", help="fyc-train checkpoint or exported model (omit: ground truth only)")
    p.add_argument("--num-scenes", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--magnitudes", type=float, nargs="+", default=[2.0, 3.5, 5.0])
    p.add_argument("--flow-size", type=int, default=128, help="fyc-preprocess flow.size of the training data")
    p.add_argument("--num-frames", type=int, default=8)
    p.add_argument("--size", type=int, nargs=2, default=[64, 64], help="video size without a checkpoint")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, help="write the summaries as JSON")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    pipe, size = None, tuple(args.size)
    if args.checkpoint:
        from fyc_train.sampling.checkpoint_loading import load_for_sampling
        from fyc_train.sampling.pipeline import FYCPipeline

        loaded = load_for_sampling(args.checkpoint)
        size = tuple(loaded.size or size)
        pipe = FYCPipeline(loaded.model, scheduler=loaded.scheduler(True), impose_first_frame=False,
                           layout=loaded.layout, default_num_frames=args.num_frames, fps=loaded.fps)
    splits: dict[str, list[dict]] = {"truth": [], "model": []}
    speed_of = speeds_px_per_frame(args.magnitudes, size[0], args.flow_size)
    scenes = held_out_scenes(args.num_scenes, args.seed, size, args.num_frames, max(speed_of.values()))
    for s, spec in enumerate(scenes):  # the videos `fyc-eval-shapes` generates, in its order
        image = through_h264(render_frames(spec, args.num_frames))[0]
        for direction, magnitude, request in motion_requests(spec, args.magnitudes, speed_of):
            splits["truth"].append(energy_split(through_h264(render_frames(request, args.num_frames)), request))
            if pipe is not None:
                video = pipe(image, object_mask(spec, spec.target, 0), motion_prompt(direction), caption=None,
                             magnitude=magnitude, num_frames=args.num_frames, steps=1, guidance=1.0,
                             seed=args.seed + s, progress=False)
                splits["model"].append(energy_split(video, request))
    report = {source: summarize(rows) for source, rows in splits.items() if rows}
    print("source  videos  locality  energy in/pair  out/pair  RMS flow out (for 0.9)  background drift by frame")
    for source, r in report.items():
        drift = " ".join(f"{d:.2f}" for d in r["background_drift"])
        print(f"{source:6s}  {r['videos']:6d}  {r['locality']:8.3f}  {r['inside_per_pair']:14.1f}  "
              f"{r['outside_per_pair']:8.1f}  {r['outside_rms_flow']:.3f} ({r['outside_rms_flow_for_target']:.3f})"
              f"           {drift}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, **report}, indent=2))
    return report


if __name__ == "__main__":
    main()
