"""Clips with an empty motion mask (fyc-preprocess keeps them at filter.min_magnitude=0): they
train "nothing clicked -> nothing moves" (magnitude 0, no motion prompt), and nothing about one
such clip ends a run: the sample-video callback skips it, naming it, through the real command."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from fault_table import record_fault

from fyc_train.lit_module import FYCLitModule
from fyc_train.models.build import build_tiny
from fyc_train.utils.synthetic_shards import write_shards

REPO = Path(__file__).resolve().parents[1]


def batch_with_a_still_clip(magnitude: float, prompt: str) -> dict:
    """Two clips: a square moving right (mask = its start), then the same scene still (empty mask)
    whose labels are `magnitude` / `prompt`."""
    video = torch.full((2, 4, 3, 32, 32), -0.2)
    for f in range(4):
        video[0, f, :, 8:14, 2 + 4 * f:8 + 4 * f] = 1.0
    video[1, :, :, 8:14, 2:8] = 1.0
    mask = torch.zeros(2, 1, 32, 32)
    mask[0, 0, 8:14, 2:8] = 1.0
    return {"video": video, "mask": mask, "caption": ["a square", "a square"],
            "motion_prompt": ["move right", prompt], "magnitude": torch.tensor([4.0, magnitude]),
            "stride": torch.tensor([1.0, 1.0])}


def test_an_empty_mask_trains_magnitude_zero_and_no_prompt():
    torch.manual_seed(0)
    model = build_tiny(image_size=32, autoencoder={"factor": 2}, unet={"block_out_channels": [16, 32]})
    with torch.no_grad():  # as after training: the zero-initialised magnitude and MA paths now matter
        for param in model.unet.parameters():
            param.add_(0.05 * torch.randn_like(param))
    lit = FYCLitModule(model, motion_region_loss_weight=10.0)  # an empty region: weights stay uniform

    def loss(magnitude: float, prompt: str, train: bool) -> torch.Tensor:
        return lit.compute_loss(batch_with_a_still_clip(magnitude, prompt), torch.Generator().manual_seed(3), train)

    for train in (True, False):
        still = loss(0.0, "", train)
        assert torch.isfinite(still)
        # whatever the shard's labels say, an empty mask is "nothing moves"
        assert torch.equal(loss(3.0, "move right", train), still)
    # labels do reach the loss (the equality above means something): a clip with a mask keeps its own
    batch = batch_with_a_still_clip(0.0, "")
    for changed in ({"magnitude": torch.tensor([1.0, 0.0])}, {"motion_prompt": ["move left", ""]}):
        assert not torch.equal(lit.compute_loss({**batch, **changed}, torch.Generator().manual_seed(3), False),
                               loss(0.0, "", False)), changed


@pytest.mark.slow
def test_training_with_empty_mask_clips_and_sample_videos_finishes_and_names_the_skipped_clip(tmp_path):
    # clip000000 (training) and clip001000 (first validation clip: the last shard is held out) are still
    write_shards(tmp_path / "shards", num_shards=2, per_shard=3, num_frames=8, size=32,
                 still_keys={"clip000000", "clip001000"})
    env = {"WANDB_MODE": "offline", "FYC_OUTPUT_DIR": str(tmp_path), "PATH": str(Path(sys.executable).parent),
           "HOME": str(tmp_path), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "fyc-train"), "experiment=tiny", f"data.shards={tmp_path}/shards/shard-*.tar",
         "data.num_workers=0", "data.batch_size=3", "data.steps_per_epoch=2", "trainer.max_steps=4",
         "trainer.limit_val_batches=1", "data.val_batches=1", "callbacks.samples.steps=2", "run_name=still"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "rank 0 finished at step 4" in out
    skipped = "skipped validation clip 'clip001000': its motion mask is empty"
    assert out.count(skipped) == 2, out[-4000:]  # once per validation (steps 2 and 4)
    run = tmp_path / "still"
    for step in (2, 4):  # the next clip of the validation set was animated instead
        videos = sorted(p.name for p in (run / "samples" / f"step-{step:07d}").glob("*.mp4"))
        assert videos == ["clip001001.mp4"], videos
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 4
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())
    assert (run / "export").is_dir()
    record_fault(
        "training", "shards with empty-mask clips (what fyc-preprocess keeps at filter.min_magnitude=0) in the "
                    "training and validation sets; 4 steps of fyc-train with the sample-video callback and W&B offline",
        "the run finishes; the empty-mask clip trains as 'nothing moves'; sample videos skip it, naming it, and "
        "animate the next validation clip",
        "exit 0 at step 4; `skipped validation clip 'clip001000': its motion mask is empty` logged at both "
        "validations; clip001001.mp4 written instead; finite checkpoint and export",
        {"validations": 2, "skipped_logged": out.count(skipped)},
        "test_empty_mask_training.py::test_training_with_empty_mask_clips_and_sample_videos_finishes_and_names_the_skipped_clip")
