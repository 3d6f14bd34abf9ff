"""Write small, schema-correct FYC shards (mp4 + json + mask.png) without fyc-preprocess.

Used by the training tests' fault cases (corrupt members, truncated tars) and by
bench/bench_train.py. Clips are real H.264 mp4s (PyAV libx264) of a square moving over a
textured background; the mask covers the square's path, magnitude is its speed in px/frame.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Collection
from pathlib import Path

import av
import numpy as np
import webdataset as wds
from PIL import Image


def encode_mp4(frames: np.ndarray, fps: int = 8) -> bytes:
    """uint8 (F, H, W, 3) -> H.264 mp4 bytes (yuv420p, every frame kept)."""
    buf = io.BytesIO()
    with av.open(buf, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "18", "preset": "ultrafast"}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buf.getvalue()


def png_bytes(mask: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(mask.astype(np.uint8), mode="L").save(buf, format="PNG")
    return buf.getvalue()


def make_clip(rng: np.random.Generator, num_frames: int, size: int) -> tuple[np.ndarray, np.ndarray, float, str]:
    """One clip: (frames, mask, magnitude px/frame, direction)."""
    background = rng.integers(40, 200, size=(size, size, 3), dtype=np.uint8)
    side = max(4, size // 4)
    direction = str(rng.choice(["left", "right", "up", "down"]))
    speed = float(rng.integers(1, 3))
    dx, dy = {"left": (-speed, 0), "right": (speed, 0), "up": (0, -speed), "down": (0, speed)}[direction]
    x0, y0 = size // 2 - side // 2, size // 2 - side // 2
    colour = rng.integers(0, 256, size=3, dtype=np.uint8)
    frames = np.repeat(background[None], num_frames, axis=0)
    mask = np.zeros((size, size), np.uint8)
    for t in range(num_frames):
        x, y = int(np.clip(x0 + dx * t, 0, size - side)), int(np.clip(y0 + dy * t, 0, size - side))
        frames[t, y:y + side, x:x + side] = colour
        mask[y:y + side, x:x + side] = 255
    return frames, mask, speed, direction


def write_shards(out_dir: str | os.PathLike, num_shards: int = 2, per_shard: int = 4,
                 num_frames: int = 8, size: int = 32, seed: int = 0,
                 still_keys: Collection[str] = ()) -> list[str]:
    """Write `num_shards` tars of `per_shard` samples each; returns their paths.

    Samples whose key (`clip<shard:03d><index:03d>`) is in `still_keys` show nothing moving and
    carry what fyc-preprocess writes for such a clip: an empty mask and magnitude 0, while the
    caption and motion prompt still name a motion (web captions often do)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for shard in range(num_shards):
        path = out / f"shard-{shard:06d}.tar"
        with wds.TarWriter(str(path)) as sink:
            for i in range(per_shard):
                frames, mask, speed, direction = make_clip(rng, num_frames, size)
                key = f"clip{shard:03d}{i:03d}"
                if key in still_keys:
                    frames, mask, speed = np.repeat(frames[:1], num_frames, axis=0), np.zeros_like(mask), 0.0
                meta = {
                    "id": key, "caption": f"a square moves {direction} over a texture",
                    "motion_prompt": f"move {direction}", "magnitude": speed,
                    "flow": {"model": "synthetic", "weights": "none", "num_updates": 0,
                             "height": size, "width": size, "stride": 1, "mask": "ground_truth",
                             "pair_magnitudes": [speed] * (num_frames - 1)},
                    "source": {"video": key, "fps": 8, "frame_indices": list(range(num_frames))},
                    "clip": {"num_frames": num_frames, "height": size, "width": size},
                }
                sink.write({"__key__": key, "mp4": encode_mp4(frames),
                            "json": json.dumps(meta).encode(), "mask.png": png_bytes(mask)})
        paths.append(str(path))
    return paths
