"""WebDataset sample (raw bytes by extension) -> training tensors.

Shard schema (docs/data_format.md): `<key>.mp4` (the clip), `<key>.json` (caption, motion_prompt,
magnitude, flow{stride,...}, clip{num_frames,height,width}), `<key>.mask.png` (255 = moves),
optionally `<key>.latents.npy` (precomputed, already-scaled VAE latents (C, F, h, w)).

Video is decoded with PyAV from the in-memory bytes. webdataset's built-in video decoder calls a
torchvision function that no longer exists, and decord readers must not be created before a
fork; PyAV opens a fresh container per sample inside the worker, which is fork-safe.
"""

from __future__ import annotations

import io
import json
import math
import threading
from typing import Any

import av
import numpy as np
import torch
import torch.nn.functional as F
from av.video.reformatter import VideoReformatter
from PIL import Image


class SampleError(ValueError):
    """A sample that cannot be used (names the key and the reason); the loader skips it."""


_local = threading.local()


def _to_rgb24(frame: av.VideoFrame) -> np.ndarray:
    # frame.to_ndarray(format="rgb24") builds a new SwsContext (with its own thread pool) per
    # frame, which costs more than decoding a small clip; a VideoReformatter kept per thread
    # caches one (same pixels; bench/bench_decode.py). threads=1: a cached context with worker
    # threads would be copied into forked DataLoader workers without its threads and hang there.
    if not hasattr(_local, "reformatter"):
        _local.reformatter = VideoReformatter()
    return _local.reformatter.reformat(frame, format="rgb24", threads=1).to_ndarray()


def decode_mp4(data: bytes, key: str = "?") -> np.ndarray:
    """mp4 bytes -> uint8 (F, H, W, 3). Raises SampleError on corrupt or empty streams."""
    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            frames = [_to_rgb24(f) for f in container.decode(video=0)]
    except (av.error.FFmpegError, IndexError, ValueError) as exc:  # IndexError: no video stream
        raise SampleError(f"sample {key!r}: mp4 does not decode ({type(exc).__name__}: {exc})") from exc
    if not frames:
        raise SampleError(f"sample {key!r}: mp4 holds no frames")
    return np.stack(frames)


def decode_mask(data: bytes, key: str = "?") -> np.ndarray:
    """mask.png bytes -> float32 (H, W) in {0, 1}."""
    try:
        mask = np.asarray(Image.open(io.BytesIO(data)).convert("L"))
    except Exception as exc:  # PIL raises many types (UnidentifiedImageError, OSError, ...)
        raise SampleError(f"sample {key!r}: mask.png does not decode ({exc})") from exc
    return (mask > 127).astype(np.float32)


def resize_clip(video: torch.Tensor, mask: torch.Tensor, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Centre-crop to the target aspect, then resize: video (F,3,H,W) bilinear+antialias, mask
    (1,H,W) nearest (stays binary)."""
    h, w = video.shape[-2:]
    th, tw = size
    if (h, w) == (th, tw):
        return video, mask
    scale = max(th / h, tw / w)
    ch, cw = min(h, round(th / scale)), min(w, round(tw / scale))
    top, left = (h - ch) // 2, (w - cw) // 2
    video, mask = video[..., top:top + ch, left:left + cw], mask[..., top:top + ch, left:left + cw]
    video = F.interpolate(video, size=(th, tw), mode="bilinear", antialias=True, align_corners=False)
    mask = F.interpolate(mask[None], size=(th, tw), mode="nearest")[0]
    return video.clamp_(-1, 1), mask


def decode_sample(sample: dict[str, Any], num_frames: int | None = None,
                  resolution: tuple[int, int] | None = None) -> dict[str, Any]:
    """Raw webdataset sample -> dict of tensors for one clip (the batch contract per item).

    `num_frames`: frames the model trains on; the clip must have at least that many (the first
    `num_frames` are used). None keeps the clip's own length. `resolution` (H, W): centre-crop
    and resize clip and mask to it (None: keep the shard's clip size).
    """
    key = sample.get("__key__", "?")
    for ext in ("mp4", "json", "mask.png"):
        if ext not in sample:
            raise SampleError(f"sample {key!r} from {sample.get('__url__', '?')}: missing member .{ext}")
    try:
        meta = json.loads(sample["json"])
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SampleError(f"sample {key!r}: json does not parse ({exc})") from exc
    magnitude = float(meta.get("magnitude", float("nan")))
    if not math.isfinite(magnitude):
        raise SampleError(f"sample {key!r}: magnitude {meta.get('magnitude')!r} is not a finite number")
    stride = float((meta.get("flow") or {}).get("stride", 1))

    out: dict[str, Any] = {
        "key": key,
        "caption": str(meta.get("caption", "")),
        "motion_prompt": str(meta.get("motion_prompt", "")),
        "magnitude": torch.tensor(magnitude, dtype=torch.float32),
        "stride": torch.tensor(stride, dtype=torch.float32),
    }
    mask = decode_mask(sample["mask.png"], key)
    if "latents.npy" in sample:  # precomputed latents: skip video decoding entirely
        latents = np.load(io.BytesIO(sample["latents.npy"]), allow_pickle=False)
        if num_frames is not None:
            if latents.shape[1] < num_frames:
                raise SampleError(f"sample {key!r}: latents have {latents.shape[1]} frames, need {num_frames}")
            latents = latents[:, :num_frames]
        out["latents"] = torch.from_numpy(np.ascontiguousarray(latents, dtype=np.float32))
        out["first_frame"] = None
    else:
        frames = decode_mp4(sample["mp4"], key)
        expected = (meta.get("clip") or {}).get("num_frames")
        if expected is not None and len(frames) < int(expected):
            raise SampleError(f"sample {key!r}: mp4 has {len(frames)} frames, json says {expected} (truncated?)")
        if num_frames is not None:
            if len(frames) < num_frames:
                raise SampleError(f"sample {key!r}: clip has {len(frames)} frames, training needs {num_frames}")
            frames = frames[:num_frames]
        if mask.shape != frames.shape[1:3]:
            raise SampleError(f"sample {key!r}: mask {mask.shape} does not match clip {frames.shape[1:3]}")
        video = torch.from_numpy(frames).permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)
        mask_t = torch.from_numpy(mask)[None]
        if resolution is not None:
            video, mask_t = resize_clip(video, mask_t, tuple(resolution))
        out["video"] = video  # (F, 3, H, W) in [-1, 1]
        out["mask"] = mask_t  # (1, H, W)
        return out
    out["mask"] = torch.from_numpy(mask)[None]  # (1, H, W) (latents: the shard's own size)
    return out


def collate(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack tensors, keep strings as lists. `latents` is kept only if every sample has it;
    samples without it in a mixed batch must carry `video` (decode_sample guarantees one)."""
    batch: dict[str, Any] = {}
    for name in ("key", "caption", "motion_prompt"):
        batch[name] = [s[name] for s in samples]
    for name in ("magnitude", "stride", "mask"):
        batch[name] = torch.stack([s[name] for s in samples])
    if all("latents" in s for s in samples):
        batch["latents"] = torch.stack([s["latents"] for s in samples])
    elif all("video" in s for s in samples):
        batch["video"] = torch.stack([s["video"] for s in samples])
    else:
        raise SampleError("batch mixes samples with precomputed latents and samples without: "
                          "give every shard of a run latents.npy, or none")
    return batch
