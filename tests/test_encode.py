"""EncodeStep: mp4 bytes decodable by decord and PyAV, PNG mask, shard json schema."""

from __future__ import annotations

import io

import av
import decord
import numpy as np
import pytest
from PIL import Image

from preprocessing.steps.encode import EncodeStep, encode_mp4


def smooth_clip(num_frames: int = 8, height: int = 64, width: int = 96) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    frames = []
    for t in range(num_frames):
        r = 128 + 100 * np.sin((x + 2 * t) / 15)
        g = 128 + 100 * np.cos((y - t) / 11)
        b = 128 + 60 * np.sin((x + y + 3 * t) / 20)
        frames.append(np.stack([r, g, b], axis=-1))
    return np.clip(frames, 0, 255).astype(np.uint8)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255**2 / max(mse, 1e-12)))


def ok_sample(frames: np.ndarray) -> dict:
    mask = np.zeros(frames.shape[1:3], np.uint8)
    mask[10:30, 20:50] = 255
    return {
        "id": "clip/one", "key": "clip_one_0123abcd", "video": "/data/one.mp4", "caption": "a red disc slides left",
        "status": "ok", "reason": "", "motion_prompt": "slide left", "frames": frames,
        "fps": 30.0, "stride": 3, "frame_indices": list(range(3, 3 + 3 * len(frames), 3)),
        "flow": np.zeros((len(frames) - 1, 2, 8, 8), np.float32),
        "flow_magnitudes": np.zeros((len(frames) - 1, 8, 8), np.float32),
        "flow_info": {"model": "raft_small", "weights": "default", "weights_id": "torchvision:X",
                      "num_updates": 12, "height": 256, "width": 256},
        "mask": mask, "magnitude": 3.5, "pair_magnitudes": [3.0, 4.0] + [3.5] * (len(frames) - 3),
        "motion_definition": "robust", "core_fraction": 0.8,
    }


@pytest.mark.parametrize("width", [64, 80, 128])
def test_mp4_roundtrips_through_decord_and_pyav(tmp_path, width):
    # Not 96: decord (decord2 3.0-3.4 on some x86_64 CPUs, dmlc/decord#269-style padded rows) returns 96-wide H.264 frames
    # with their 384-byte padded rows as a 4th channel and get_batch raises; PyAV reads them
    # right, and fyc-preprocess's decode worker falls back to it (tests/test_decode.py).
    frames = smooth_clip(width=width)
    out = EncodeStep()(ok_sample(frames))
    data = out["mp4"]
    assert data.find(b"moov") < data.find(b"mdat")  # +faststart: playable while streaming
    path = tmp_path / "clip.mp4"
    path.write_bytes(data)
    reader = decord.VideoReader(str(path))
    decoded = reader.get_batch(list(range(len(reader)))).asnumpy()
    assert decoded.shape == frames.shape
    assert reader.get_avg_fps() == pytest.approx(10.0)  # source fps / stride
    assert psnr(decoded, frames) > 30
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264" and stream.codec_context.pix_fmt == "yuv420p"
        pyav = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(stream)])
    assert pyav.shape == frames.shape and psnr(pyav, frames) > 30


def test_mask_png_and_json_schema():
    frames = smooth_clip()
    sample = ok_sample(frames)
    out = EncodeStep()(sample)
    png = Image.open(io.BytesIO(out["mask_png"]))
    assert png.mode == "L" and png.size == (96, 64)
    np.testing.assert_array_equal(np.asarray(png), sample["mask"])
    assert out["json"] == {
        "id": "clip/one", "caption": "a red disc slides left", "motion_prompt": "slide left",
        "magnitude": 3.5,
        "flow": {"model": "raft_small", "weights": "default", "weights_id": "torchvision:X",
                 "num_updates": 12, "height": 256, "width": 256, "stride": 3, "mask": "robust",
                 "mask_region": "union", "core_fraction": 0.8,
                 "pair_magnitudes": [3.0, 4.0] + [3.5] * 5},
        "source": {"video": "/data/one.mp4", "fps": 30.0, "frame_indices": list(range(3, 27, 3))},
        "clip": {"num_frames": 8, "height": 64, "width": 96},
    }
    for heavy in ("frames", "flow", "flow_magnitudes"):
        assert heavy not in out  # memory stays bounded after encoding


def test_odd_sizes_are_padded_and_failed_rows_pass_through():
    data = encode_mp4(smooth_clip(4, 63, 95), fps=25)
    with av.open(io.BytesIO(data)) as container:
        frame = next(container.decode(video=0))
    assert (frame.height, frame.width) == (64, 96)
    row = {"id": "x", "status": "error", "reason": "decode_error: y", "frames": None}
    assert EncodeStep()(dict(row)) == row
