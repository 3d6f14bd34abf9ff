"""fyc-sample input handling that needs no FYC model: masks, clicks + SAM, video, sheet, speed."""
from __future__ import annotations

import logging
import pickle
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fyc_train.sampling.checkpoint_loading import detect_format, safe_torch_load
from fyc_train.sampling.contact_sheet import make_contact_sheet
from fyc_train.sampling.masks import (
    SamplingInputError, box_to_mask, check_points, fit_mask_to_image, load_image, load_mask_png,
)
from fyc_train.sampling.sam import ClickSegmenter, build_tiny_sam, load_sam, missing_checkpoint_message
from fyc_train.sampling.speed import resolve_magnitude
from fyc_train.sampling.video_io import read_video, write_video

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tiny_sam_path(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("sam") / "tiny_sam.pth"
    torch.save(build_tiny_sam().state_dict(), path)
    return path


def _image(h=40, w=56) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_tiny_sam_click_paths_give_masks_of_image_size(tiny_sam_path):
    seg = ClickSegmenter(load_sam(tiny_sam_path))  # model_type=auto reads the width
    img = _image()
    one = seg.segment(img, [[10, 12]])  # single click: multimask output, best score kept
    assert one.shape == img.shape[:2] and one.dtype == bool
    two = seg.segment(img, [[10, 12], [40, 30]], [1, 0])  # positive + negative
    boxed = seg.segment(img, box=[5, 5, 30, 30])
    both = seg.segment(img, [[10, 12]], [1], box=[5, 5, 30, 30])
    for m in (two, boxed, both):
        assert m.shape == img.shape[:2]
    # the negative click changes the prompt, so the (random-weight) mask must change too
    assert not np.array_equal(one, two)


def test_sam_refuses_bad_clicks_and_missing_checkpoint(tiny_sam_path):
    seg = ClickSegmenter(load_sam(tiny_sam_path, "tiny"))
    with pytest.raises(SamplingInputError, match="outside the image"):
        seg.segment(_image(), [[56, 3]])
    with pytest.raises(SamplingInputError, match="all clicks are negative"):
        seg.segment(_image(), [[5, 3]], [0])
    with pytest.raises(SamplingInputError, match=r"(?s)sam\.checkpoint=.*mask=PATH.*box="):
        load_sam(None)
    assert "sam_vit_b_01ec64.pth" in missing_checkpoint_message()
    with pytest.raises(SamplingInputError, match="does not fit"):
        load_sam(tiny_sam_path, "vit_b")


def test_sam_checkpoint_with_pickled_code_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"model": Fraction(1, 3)}, f)  # an arbitrary object, not tensors
    with pytest.raises(SamplingInputError, match="refused"):
        load_sam(path)


def test_mask_checks(tmp_path, caplog):
    Image.fromarray(np.zeros((20, 30), np.uint8)).save(tmp_path / "empty.png")
    with pytest.raises(SamplingInputError, match="empty"):
        fit_mask_to_image(load_mask_png(tmp_path / "empty.png"), 20, 30)
    m = np.zeros((10, 15), bool)
    m[2:5, 3:9] = True
    with caplog.at_level(logging.WARNING):
        big = fit_mask_to_image(m, 20, 30)
    assert big.shape == (20, 30) and big[4:10, 6:18].all() and big.sum() == 4 * m.sum()
    assert "resizing the mask" in caplog.text
    with pytest.raises(SamplingInputError, match="no such file"):
        load_mask_png(tmp_path / "nope.png")
    assert box_to_mask([2, 3, 6, 5], 10, 10).sum() == 4 * 2
    with pytest.raises(SamplingInputError, match="outside"):
        check_points([[3, 10]], 10, 10)


def test_image_checks(tmp_path):
    with pytest.raises(SamplingInputError, match="no such file"):
        load_image(tmp_path / "missing.png")
    (tmp_path / "junk.png").write_bytes(b"not an image")
    with pytest.raises(SamplingInputError, match="cannot be read"):
        load_image(tmp_path / "junk.png")


@pytest.mark.parametrize("suffix", [".mp4", ".gif"])
def test_video_round_trip(tmp_path, suffix):
    frames = np.stack([np.full((30, 34, 3), 20 * i, np.uint8) for i in range(6)])
    frames[:, 5:15, 5:15] = [200, 30, 30]
    path = write_video(frames, tmp_path / f"v{suffix}", fps=8)
    back = read_video(path)
    assert back.shape[0] == 6 and back.shape[1:3] == (30, 34)
    assert np.abs(back.astype(int) - frames.astype(int)).mean() < 8


def test_contact_sheet_shows_input_mask_and_frames():
    img = _image(32, 32)
    mask = np.zeros((32, 32), bool)
    mask[8:16, 8:16] = True
    frames = np.stack([np.full((32, 32, 3), 10 * i, np.uint8) for i in range(16)])
    sheet = np.asarray(make_contact_sheet(img, mask, frames, ["prompt: sway", "magnitude: 8"], tile=64))
    assert sheet.shape[1] >= 8 * 64  # 8 frames across
    # the mask tile is tinted red inside the region
    tile = sheet[16:80, 64:128]
    assert tile[20, 20, 0] > tile[20, 20, 1] + 40


def test_speed_maps_to_training_quantiles(caplog):
    q = {"0.0": 1.0, "0.2": 2.0, "0.5": 4.0, "0.8": 9.0, "1.0": 20.0}
    assert resolve_magnitude(None, "slow", q) == 2.0
    assert resolve_magnitude(None, "medium", q) == 4.0
    assert resolve_magnitude(None, "fast", q) == 9.0
    assert resolve_magnitude(5.5, "fast", q) == 5.5  # raw magnitude overrides
    with caplog.at_level(logging.WARNING):
        assert resolve_magnitude(40.0, None, q) == 40.0
    assert "outside what training saw" in caplog.text
    with pytest.raises(ValueError, match="slow, medium or fast"):
        resolve_magnitude(None, "ludicrous", q)
    with pytest.raises(ValueError, match="magnitude="):
        resolve_magnitude(None, "fast", None)


def test_checkpoint_format_and_pickle_refusal(tmp_path):
    with pytest.raises(SamplingInputError, match="unknown checkpoint format"):
        (tmp_path / "model.onnx").write_bytes(b"x")
        detect_format(tmp_path / "model.onnx")
    with pytest.raises(SamplingInputError, match="no such file"):
        detect_format(tmp_path / "missing.ckpt")
    with pytest.raises(SamplingInputError, match="not an exported FYC model"):
        detect_format(tmp_path)
    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "obj": Fraction(1, 3)}, evil)
    assert detect_format(evil) == "lightning"
    with pytest.raises(SamplingInputError, match="pickled Python objects"):
        safe_torch_load(evil)
