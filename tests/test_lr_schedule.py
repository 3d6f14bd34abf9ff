"""The learning-rate schedule's length: the trainer's max_steps by default, or
module.lr_schedule_steps, so a stage can stop at a fixed step of a longer decay."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from fyc_train.lit_module import FYCLitModule
from fyc_train.models.build import build_tiny


def lrs_over(steps: int, run_steps: int, **kwargs) -> list[float]:
    model = build_tiny(image_size=32, autoencoder={"factor": 2}, unet={"block_out_channels": [16, 32]})
    lit = FYCLitModule(model, lr=1.0, lr_schedule="cosine", **kwargs)
    lit._trainer = SimpleNamespace(estimated_stepping_batches=run_steps)  # what the Trainer would report
    scheduler = lit.configure_optimizers()["lr_scheduler"]["scheduler"]
    lrs = []
    for _ in range(steps):
        lrs.append(scheduler.get_last_lr()[0])
        scheduler.optimizer.step()
        scheduler.step()
    return lrs


def test_cosine_decays_to_zero_at_the_trainers_max_steps_by_default():
    lrs = lrs_over(101, run_steps=100)
    assert lrs[0] == pytest.approx(1.0) and lrs[50] == pytest.approx(0.5, abs=1e-6)
    assert lrs[100] == pytest.approx(0.0, abs=1e-9)


def test_lr_schedule_steps_sets_the_decay_length_independent_of_the_run():
    short_run = lrs_over(60, run_steps=60, lr_schedule_steps=300)
    long_run = lrs_over(60, run_steps=10_000, lr_schedule_steps=300)
    assert short_run == pytest.approx(long_run)  # stopping early does not squeeze the schedule
    assert short_run[-1] > 0.9  # 59 of 300 steps of cosine: still near the peak


def test_motion_augment_lr_scale_puts_exactly_the_ma_layers_in_a_faster_group_on_the_same_schedule():
    model = build_tiny(image_size=32, autoencoder={"factor": 2}, unet={"block_out_channels": [16, 32]})
    lit = FYCLitModule(model, lr=1.0, lr_schedule="cosine", motion_augment_lr_scale=10.0)
    lit._trainer = SimpleNamespace(estimated_stepping_batches=100)
    scheduler = lit.configure_optimizers()["lr_scheduler"]["scheduler"]
    rest, ma = scheduler.optimizer.param_groups
    ma_ids = {id(p) for p in model.unet.motion_augment_parameters()}
    assert ma_ids and {id(p) for p in ma["params"]} == ma_ids
    assert not ma_ids & {id(p) for p in rest["params"]}
    assert len(rest["params"]) + len(ma["params"]) == len(lit.trainable_parameters())
    for _ in range(50):
        scheduler.optimizer.step()
        scheduler.step()
    assert scheduler.get_last_lr() == pytest.approx([0.5, 5.0], abs=1e-6)  # half-way down the cosine, both


def test_motion_augment_lr_scale_of_one_keeps_a_single_group_and_nonpositive_is_refused():
    model = build_tiny(image_size=32, autoencoder={"factor": 2}, unet={"block_out_channels": [16, 32]})
    lit = FYCLitModule(model, lr=1.0)
    lit._trainer = SimpleNamespace(estimated_stepping_batches=10)
    assert len(lit.configure_optimizers()["optimizer"].param_groups) == 1
    with pytest.raises(ValueError, match="motion_augment_lr_scale"):
        FYCLitModule(model, motion_augment_lr_scale=0.0)
