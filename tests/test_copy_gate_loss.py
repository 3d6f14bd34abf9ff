"""Copy-gate supervision (``module.copy_gate_loss_weight``): a BCE that teaches the copy gate
where each training frame equals the z0 the model was given. What a user relies on: the target
is "still" exactly where the clip did not change, a masked or dropped z0 is never a target to
copy, training on a still clip opens the gate, and asking for it without a gate is a clear error."""

from __future__ import annotations

import pytest
import torch
from test_first_frame_skip import FRAMES, set_gate, still_batch, tiny

from fyc_train.lit_module import FYCLitModule

LOGIT = 30.0  # a gate forced fully open (+) or shut (-)


def moving_latents(c: int = 4, h: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """(1, C, F, h, h) latents still everywhere except one position that changes from frame 1 on."""
    first = torch.randn(1, c, h, h, generator=torch.Generator().manual_seed(0))
    latents = first[:, :, None].repeat(1, 1, FRAMES, 1, 1)
    latents[:, :, 1:, 2, 3] += 1.0
    return latents, first


def gate_logit_from(target: torch.Tensor, c: int = 1) -> torch.Tensor:
    return (target * 2 - 1).mul(LOGIT).expand(-1, c, -1, -1, -1)


@pytest.mark.parametrize("skip", ["blend_all", "blend", "gated"])
def test_the_gate_target_is_still_exactly_where_the_clip_did_not_change(skip):
    module = FYCLitModule(tiny(skip), copy_gate_loss_weight=1.0)
    latents, first = moving_latents()
    still = torch.ones(1, 1, FRAMES, 8, 8)
    still[:, :, 1:, 2, 3] = 0
    right = module.copy_gate_loss(gate_logit_from(still), latents, first)
    wrong_at_the_object = module.copy_gate_loss(gate_logit_from(torch.ones_like(still)), latents, first)
    assert right.item() < 1e-6
    assert wrong_at_the_object.item() > 0.1  # an open gate where the object went is penalised


def test_small_changes_below_the_threshold_count_as_still():
    module = FYCLitModule(tiny("blend_all"), copy_gate_loss_weight=1.0, copy_gate_still_threshold=0.05)
    latents, first = moving_latents()
    latents = latents + 0.02  # codec noise: every frame differs a little from z0
    still = torch.ones(1, 1, FRAMES, 8, 8)
    still[:, :, 1:, 2, 3] = 0
    assert module.copy_gate_loss(gate_logit_from(still), latents, first).item() < 1e-6


def test_a_dropped_first_frame_is_never_a_target_to_copy():
    module = FYCLitModule(tiny("blend_all"), copy_gate_loss_weight=1.0)
    latents, first = moving_latents()
    shut = torch.zeros(1, 1, FRAMES, 8, 8)
    dropped = torch.zeros_like(first)  # first_frame_dropout / masking zero z0
    assert module.copy_gate_loss(gate_logit_from(shut), latents, dropped).item() < 1e-6
    assert module.copy_gate_loss(gate_logit_from(1 - shut), latents, dropped).item() > 10


def test_per_channel_gates_get_per_channel_targets():
    model = tiny("blend_all")
    model.unet.config.copy_gate_per_channel = True  # the loss reads the gate's channel count
    module = FYCLitModule(model, copy_gate_loss_weight=1.0)
    latents, first = moving_latents()
    latents[:, 1:, 1:, 2, 3] -= 1.0  # channel 0 changes, channels 1.. are back to z0
    still = torch.ones(1, 4, FRAMES, 8, 8)
    still[:, 0, 1:, 2, 3] = 0
    assert module.copy_gate_loss((still * 2 - 1) * LOGIT, latents, first).item() < 1e-6


@pytest.mark.parametrize("t", [999, 500])
def test_training_on_a_still_clip_opens_the_gate_and_logs_both_parts(t):
    model = tiny("blend_all", silent_unet=False)
    set_gate(model, 0.0)
    module = FYCLitModule(model, copy_gate_loss_weight=1.0)
    module.sample_timesteps = lambda n, gen: torch.full((n,), t, dtype=torch.long)
    loss = module.compute_loss(still_batch(), torch.Generator().manual_seed(0), train=False)
    loss.backward()
    gate_bias = model.unet.unet.conv_out.bias
    assert gate_bias.grad[model.latent_channels].item() < 0  # gradient descent raises the logit
    parts = module.last_loss_parts
    assert set(parts) == {"diffusion", "gate_bce"}
    assert parts["gate_bce"] == pytest.approx(0.6931, abs=1e-3)  # a half-open gate on a still clip: log 2
    assert loss.item() == pytest.approx(parts["diffusion"] + parts["gate_bce"], rel=1e-5)


def test_gate_supervision_without_a_gate_is_a_clear_error():
    with pytest.raises(ValueError, match="first_frame_skip='first' has none"):
        FYCLitModule(tiny("first"), copy_gate_loss_weight=0.5)
    with pytest.raises(ValueError, match="must be >= 0"):
        FYCLitModule(tiny("blend_all"), copy_gate_loss_weight=-1.0)
    model = tiny("first")
    with pytest.raises(ValueError, match="return_gate_logit needs a copy gate"):
        model.unet(torch.zeros(1, model.unet.config.in_channels, FRAMES, 16, 16), torch.tensor([1]),
                   torch.zeros(1, 4, 8), return_gate_logit=True)


def test_without_supervision_the_loss_is_unchanged():
    model = tiny("blend_all", silent_unet=False)
    plain = FYCLitModule(model).compute_loss(still_batch(), torch.Generator().manual_seed(0), train=False)
    supervised = FYCLitModule(model, copy_gate_loss_weight=1.0)
    total = supervised.compute_loss(still_batch(), torch.Generator().manual_seed(0), train=False)
    assert plain.item() == pytest.approx(supervised.last_loss_parts["diffusion"], rel=1e-6)
    assert total.item() > plain.item()
