"""Training-time clip decoding: `fyc_train.data.decode.decode_mp4` against PyAV's per-frame
`frame.to_ndarray(format="rgb24")` (which builds a new colour converter for every frame), on the
same H.264 clips in one run. Prints ms per clip, the ratio, and whether the pixels are identical.

    python bench/bench_decode.py                       # 64x64x8 (MovingShapes) and 256x256x16
"""
from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path

import av
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fyc_train.data.decode import decode_mp4  # noqa: E402
from fyc_train.utils.synthetic_shards import encode_mp4, make_clip  # noqa: E402


def per_frame_to_ndarray(data: bytes) -> np.ndarray:
    with av.open(io.BytesIO(data)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def ms_per_clip(decode, clips: list[bytes], repeats: int) -> float:
    start = time.perf_counter()
    for _ in range(repeats):
        for data in clips:
            decode(data)
    return (time.perf_counter() - start) / (repeats * len(clips)) * 1e3


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clips", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--shapes", nargs="+", default=["64x8", "256x16"], help="SIZExFRAMES")
    args = p.parse_args(argv)
    rng = np.random.default_rng(0)
    for shape in args.shapes:
        size, frames = (int(v) for v in shape.split("x"))
        clips = [encode_mp4(make_clip(rng, frames, size)[0]) for _ in range(args.clips)]
        identical = all(np.array_equal(decode_mp4(c), per_frame_to_ndarray(c)) for c in clips)
        ours = ms_per_clip(decode_mp4, clips, args.repeats)
        naive = ms_per_clip(per_frame_to_ndarray, clips, args.repeats)
        print(f"{size}x{size}x{frames}: decode_mp4 {ours:.2f} ms/clip, per-frame to_ndarray {naive:.2f} ms/clip, "
              f"speed-up x{naive / ours:.2f}, identical pixels: {identical}", flush=True)


if __name__ == "__main__":
    main()
