"""EncodeStep: frames -> mp4 bytes (PyAV libx264), mask -> PNG bytes, and the shard json.

The mp4 is H.264 yuv420p (even width/height: odd sizes are edge-padded by one pixel), at
fps = source fps / stride (the sampled frames' real rate), with `+faststart` so it streams and
plays anywhere, decodable by decord and PyAV. FFmpeg's faststart pass re-opens the output by
name to move the moov atom, which an in-memory BytesIO cannot offer, so the file is muxed into a
private temporary file (RAM-backed /dev/shm when present) and read back as bytes.

After encoding, the heavy arrays (frames, flow, flow_magnitudes) are dropped from the sample so
memory stays bounded; `mask` (H*W bytes) stays for callers that want thumbnails.
"""

from __future__ import annotations

import io
import os
import tempfile
from fractions import Fraction
from typing import Any

import av
import numpy as np
from PIL import Image

from preprocessing.steps.base import Sample, Step

HEAVY_FIELDS = ("frames", "flow", "flow_magnitudes")


def _tmp_dir() -> str | None:
    return "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None


def encode_mp4(frames: np.ndarray, fps: float, crf: int = 18, preset: str = "medium") -> bytes:
    """uint8 (F, H, W, 3) RGB -> H.264 mp4 bytes (yuv420p, faststart)."""
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 (F, H, W, 3), got {frames.dtype} {frames.shape}")
    pad_h, pad_w = frames.shape[1] % 2, frames.shape[2] % 2
    if pad_h or pad_w:  # yuv420p needs even sizes
        frames = np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    rate = Fraction(fps).limit_denominator(1001)
    fd, path = tempfile.mkstemp(suffix=".mp4", dir=_tmp_dir())
    os.close(fd)
    try:
        with av.open(path, mode="w", format="mp4", options={"movflags": "+faststart"}) as container:
            stream = container.add_stream("libx264", rate=rate)
            stream.width, stream.height = frames.shape[2], frames.shape[1]
            stream.pix_fmt = "yuv420p"
            stream.options = {"crf": str(crf), "preset": preset}
            # x264's bitstream depends on its thread count, which it takes from the CPUs it may
            # run on: one thread makes the same frames give the same bytes on every machine,
            # node and CPU affinity (clips are small; encoding overlaps RAFT anyway).
            stream.codec_context.thread_count = 1
            for frame in frames:
                for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
        with open(path, "rb") as handle:
            return handle.read()
    finally:
        os.unlink(path)


def encode_png(mask: np.ndarray) -> bytes:
    """uint8 (H, W) -> 8-bit single-channel (mode L) PNG bytes."""
    if mask.ndim != 2 or mask.dtype != np.uint8:
        raise ValueError(f"mask must be uint8 (H, W), got {mask.dtype} {mask.shape}")
    buffer = io.BytesIO()
    Image.fromarray(mask, mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


def shard_json(sample: Sample, flow_config: dict[str, Any] | None = None) -> dict[str, Any]:
    """The `<key>.json` of a shard sample, the schema of docs/data_format.md.

    Provenance comes from what the steps recorded in the sample (flow_info, stride,
    motion_definition); `flow_config` (model, weights, num_updates, size, mask) fills in when a
    sample reached encoding without them."""
    info = sample.get("flow_info") or _info_from_config(flow_config)
    frames = sample["frames"]
    meta = {
        "id": sample["id"],
        "caption": sample.get("caption", ""),
        "motion_prompt": sample.get("motion_prompt", ""),
        "magnitude": float(sample["magnitude"]),
        "flow": {
            "model": info["model"],
            "weights": info["weights"],
            "weights_id": info["weights_id"],
            "num_updates": int(info["num_updates"]),
            "height": int(info["height"]),
            "width": int(info["width"]),
            "stride": int(sample["stride"]),
            "mask": sample.get("motion_definition") or (flow_config or {}).get("mask", ""),
            "mask_region": sample.get("mask_region") or (flow_config or {}).get("mask_region", "union"),
            "core_fraction": sample.get("core_fraction", (flow_config or {}).get("core_fraction")),
            "pair_magnitudes": [float(v) for v in sample["pair_magnitudes"]],
        },
        "source": {
            "video": sample["video"],
            "fps": float(sample["fps"]),
            "frame_indices": [int(i) for i in sample["frame_indices"]],
        },
        "clip": {
            "num_frames": int(frames.shape[0]),
            "height": int(frames.shape[1]),
            "width": int(frames.shape[2]),
        },
    }
    # Added only where they apply, so a one-window clip-sized run writes the same json as before.
    if info.get("input") == "source":  # RAFT's input decoded from the source at flow size
        meta["flow"]["input"] = "source"
    if "window_index" in sample:  # scene-aware windows (steps/windows.py)
        meta["source"].update(window_index=int(sample["window_index"]), num_windows=int(sample["num_windows"]),
                              shot=[int(v) for v in sample["shot"]], shot_index=int(sample["shot_index"]))
    return meta


def _info_from_config(flow_config: dict[str, Any] | None) -> dict[str, Any]:
    if not flow_config:
        raise KeyError("sample has no flow_info (run FlowStep first) and no flow_config was given")
    size = flow_config["size"]
    height, width = (size, size) if isinstance(size, int) else tuple(size)
    return {"model": flow_config["model"], "weights": str(flow_config["weights"]),
            "weights_id": "", "num_updates": flow_config["num_updates"],
            "height": height, "width": width}


class EncodeStep(Step):
    """Adds `mp4` (bytes), `mask_png` (bytes), `json` (dict); drops the heavy arrays."""

    name = "encode"

    def __init__(
        self,
        crf: int = 18,
        preset: str = "medium",
        keep_arrays: bool = False,
        flow_config: dict[str, Any] | None = None,
        clip_config: dict[str, Any] | None = None,
    ) -> None:
        self.crf, self.preset, self.keep_arrays = crf, preset, keep_arrays
        self.flow_config = dict(flow_config) if flow_config else None
        self.default_stride = int(clip_config["stride"]) if clip_config else None

    def process(self, sample: Sample) -> Sample:
        frames = sample["frames"]
        if "stride" not in sample and self.default_stride is not None:
            sample["stride"] = self.default_stride
        sample["json"] = shard_json(sample, self.flow_config)
        sample["mp4"] = encode_mp4(frames, sample["fps"] / sample["stride"], self.crf, self.preset)
        sample["mask_png"] = encode_png(sample["mask"])
        if not self.keep_arrays:
            for field in HEAVY_FIELDS:
                sample.pop(field, None)
        return sample
