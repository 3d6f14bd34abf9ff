"""The training-objective options of FYCLitModule that the MovingShapes recipe relies on:
high-noise timestep bias and the motion-region loss weight (mask + changed latents)."""

from __future__ import annotations

import torch

from fyc_train.lit_module import FYCLitModule
from fyc_train.models.build import build_tiny


def module(**kwargs) -> FYCLitModule:
    model = build_tiny(image_size=32, autoencoder={"factor": 2}, unet={"block_out_channels": [16, 32]})
    return FYCLitModule(model, **kwargs)


def moving_square_batch(frames: int = 4, size: int = 32, speed: int = 4) -> dict:
    """One clip: a white 6x6 square moving right `speed` px per frame on grey; its frame-0 mask."""
    video = torch.full((1, frames, 3, size, size), -0.2)
    for f in range(frames):
        video[0, f, :, 8:14, 2 + f * speed:8 + f * speed] = 1.0
    mask = torch.zeros(1, 1, size, size)
    mask[0, 0, 8:14, 2:8] = 1.0
    return {"video": video, "mask": mask, "caption": ["a square"], "motion_prompt": ["move right"],
            "magnitude": torch.tensor([float(speed)]), "stride": torch.tensor([1.0])}


def test_timestep_power_concentrates_training_near_pure_noise():
    gen = torch.Generator().manual_seed(0)
    uniform = module().sample_timesteps(20_000, gen)
    biased = module(timestep_power=3.0).sample_timesteps(20_000, gen)
    assert uniform.min() >= 0 and uniform.max() <= 999 and biased.min() >= 0 and biased.max() <= 999
    assert abs((uniform >= 900).float().mean().item() - 0.1) < 0.02
    assert abs((biased >= 900).float().mean().item() - 0.1 ** (1 / 3)) < 0.02  # P(u^3 < 0.1) = 0.46


def test_change_threshold_adds_where_the_object_goes_to_the_clicked_mask():
    lit = module(motion_region_loss_weight=10.0, motion_region_change_threshold=0.05)
    batch = moving_square_batch()
    latents = lit.encode_video(batch)  # (1, 12, 4, 16, 16): 2x2 pixel cells
    mask = torch.nn.functional.adaptive_max_pool2d(batch["mask"], (16, 16))
    region = lit.motion_region(latents, mask)
    assert region.shape == (1, 1, 4, 16, 16)
    rows = slice(4, 7)  # the square's latent rows
    assert region[0, 0, 0, rows, 1:4].all() and region[0, 0, 0].sum() == mask.sum()  # frame 0: the mask
    assert region[0, 0, 3, rows, 7:10].all()  # frame 3: where the square is now (x 14..19 px)
    assert region[0, 0, :, :3].sum() == 0 and region[0, 0, :, 8:].sum() == 0  # nothing else
    without = module(motion_region_loss_weight=10.0).motion_region(latents, mask)
    assert without.shape == (1, 1, 1, 16, 16) and without[0, 0, 0, rows, 7:10].sum() == 0


def test_region_weight_one_is_the_plain_loss_and_weighting_changes_it():
    batch = moving_square_batch()
    plain = module(first_frame_mask_ratio=0.0).compute_loss(batch, torch.Generator().manual_seed(1), train=False)
    same = module(motion_region_change_threshold=0.05).compute_loss(batch, torch.Generator().manual_seed(1), train=False)
    weighted = module(motion_region_loss_weight=10.0, motion_region_change_threshold=0.05).compute_loss(
        batch, torch.Generator().manual_seed(1), train=False)
    assert torch.isfinite(plain) and torch.equal(plain, same)
    assert not torch.allclose(plain, weighted)
