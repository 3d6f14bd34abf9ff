"""Write generated videos: mp4 (PyAV libx264; OpenCV has no H.264 here) or gif (Pillow)."""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image

SUPPORTED_SUFFIXES = (".mp4", ".gif")


def check_output_path(path: str | Path) -> Path:
    """Validate the output suffix before any model work."""
    path = Path(path)
    if path.suffix.lower() not in SUPPORTED_SUFFIXES:
        raise ValueError(f"output={path}: use a .mp4 or .gif file name.")
    return path


def write_video(frames: np.ndarray, path: str | Path, fps: float = 8.0) -> Path:
    """uint8 (F, H, W, 3) -> .mp4 (H.264, yuv420p, even size padded) or .gif."""
    path = check_output_path(path)
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 (F, H, W, 3), got {frames.dtype} {frames.shape}")
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".gif":
        images = [Image.fromarray(f) for f in frames]
        images[0].save(
            path, save_all=True, append_images=images[1:],
            duration=max(int(round(1000 / fps)), 20), loop=0,
        )
        return path
    # yuv420p needs even sizes: pad by edge replication rather than crop user pixels.
    pad_h, pad_w = frames.shape[1] % 2, frames.shape[2] % 2
    if pad_h or pad_w:
        frames = np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1000))
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "18"}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def read_video(path: str | Path) -> np.ndarray:
    """Decode a written video back to uint8 (F, H, W, 3) (for tests and the contact sheet)."""
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
