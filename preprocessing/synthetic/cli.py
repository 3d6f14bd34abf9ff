"""`fyc-make-corpus`: write a MovingShapes corpus (mp4 clips + manifest.csv) for fyc-preprocess.

Plain argparse rather than Hydra: a handful of flags, and the output is itself the input of the
Hydra app `fyc-preprocess input.manifest=OUT/manifest.csv`.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence

from preprocessing.synthetic.moving_shapes import generate_corpus


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="fyc-make-corpus",
        description="Generate the MovingShapes synthetic corpus: textured backgrounds, coloured shapes, one "
        "moving left/right/up/down at a known speed, captions that describe it. Writes OUT/videos/*.mp4, "
        "OUT/manifest.csv (video, caption, id + ground truth) and OUT/corpus.json.",
    )
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--num-videos", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int, nargs=2, default=(96, 96), metavar=("H", "W"), help="frame size (even)")
    p.add_argument("--frames", type=int, default=24, help="native frames per clip")
    p.add_argument("--fps", type=float, default=8.0)
    p.add_argument("--speed-range", type=float, nargs=2, default=(0.5, 3.0), metavar=("MIN", "MAX"),
                   help="speed of the moving object in pixels per native frame")
    p.add_argument("--held-out", action="store_true", help="draw from the held-out colours and shapes")
    p.add_argument("--static-fraction", type=float, default=0.0,
                   help="fraction of scenes where nothing moves (captions without motion)")
    p.add_argument("--num-moving", type=int, nargs=2, default=(1, 1), metavar=("MIN", "MAX"))
    p.add_argument("--num-static", type=int, nargs=2, default=(1, 2), metavar=("MIN", "MAX"))
    p.add_argument("--crf", type=int, default=18, help="libx264 quality (lower = better)")
    p.add_argument("--motions-per-scene", type=int, default=1, choices=range(1, 5), metavar="K",
                   help="K in 1..4: groups of K consecutive clips share one scene (identical frame 0) and "
                   "move its target in K distinct directions, so only the motion prompt tells them apart "
                   "(default 1: one motion per scene)")
    return p


def main(argv: Sequence[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        manifest = generate_corpus(
            args.out, args.num_videos, seed=args.seed, height=args.size[0], width=args.size[1],
            num_frames=args.frames, fps=args.fps, speed_range=tuple(args.speed_range), held_out=args.held_out,
            static_fraction=args.static_fraction, num_moving=tuple(args.num_moving),
            num_static=tuple(args.num_static), crf=args.crf, motions_per_scene=args.motions_per_scene,
        )
    except ValueError as err:  # bad parameter combinations: say which, without a traceback
        raise SystemExit(f"fyc-make-corpus: {err}") from None
    print(f"wrote {args.num_videos} clips; manifest: {manifest}")
    print(f"next: fyc-preprocess input.manifest={manifest} output.dir=<OUT>")


if __name__ == "__main__":
    main()
