"""Motion labels never fail silently: settings known to under-read are warned about at start-up,
and a clip whose caption names a motion but whose flow (real RAFT-small weights) shows none is
flagged with `label_warning`, while a moving clip reads its true speed without a warning."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from conftest import write_synthetic_clip
from omegaconf import OmegaConf

from preprocessing.config import PreprocessConfig, label_accuracy_warnings
from preprocessing.decode_worker import decode_clip
from preprocessing.steps.flow import FlowStep
from preprocessing.steps.motion import MotionStep

CAPTION_PROMPT = "move right"  # what the prompt step extracts from "a red disc slides to the right"


def test_flow_sizes_known_to_under_read_are_warned():
    cfg = OmegaConf.structured(PreprocessConfig)
    assert label_accuracy_warnings(cfg) == []  # the default flow.size=256
    cfg.flow.size = 128
    (message,) = label_accuracy_warnings(cfg)
    assert message.startswith("flow.size=128 under-reads small or slow motion") and "flow.size>=256" in message
    cfg.flow.model = "farneback"  # no RAFT, no 1/8-resolution features
    assert label_accuracy_warnings(cfg) == []


def test_source_flow_frames_show_the_clip_region(tmp_path):
    """flow.frames=source: RAFT's input is the same crop as the clip, from the source pixels."""
    clip = write_synthetic_clip(tmp_path / "wide.mp4", num_frames=12, size=(96, 160)).path
    decoded = decode_clip(str(clip), 4, 2, (32, 64), flow_size=128)
    assert decoded["flow_frames"].shape == (4, 128, 128, 3)
    shrunk = np.stack([cv2.resize(f, (64, 32), interpolation=cv2.INTER_AREA) for f in decoded["flow_frames"]])
    assert np.abs(shrunk.astype(float) - decoded["frames"]).mean() < 6  # same region (a shifted crop reads ~30)


@pytest.mark.slow
def test_a_named_motion_that_measures_zero_is_flagged(tmp_path, raft_small_path):
    flow = FlowStep(weights=str(raft_small_path), num_updates=12, size=(128, 128), device="cpu",
                    allow_download=False, motion=MotionStep())
    samples = []
    for name, speed in (("still", 0.0), ("moving", 2.0)):
        path = write_synthetic_clip(tmp_path / f"{name}.mp4", num_frames=16, speed=speed, size=(128, 128)).path
        samples.append(dict(decode_clip(str(path), 8, 2, (128, 128)), id=name, video=str(path), stride=2,
                            motion_prompt=CAPTION_PROMPT))
    still, moving = flow.process_batch(samples)
    assert still["magnitude"] == 0.0 and not still["mask"].any()
    assert still["label_warning"] == "no_motion_measured"
    assert moving["label_warning"] == ""
    assert moving["magnitude"] == pytest.approx(2.0 * 2, rel=0.25)  # px per sampled step (stride 2)
    assert moving["flow_upscale"] == 1.0 and moving["flow_info"]["input"] == "clip"
