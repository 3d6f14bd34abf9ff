"""First-frame masking statistics and 2C+1-channel input assembly."""

from __future__ import annotations

import pytest
import torch

from fyc_train.models.first_frame import assemble_input, mask_first_latent, resize_mask, split_input


def _zeroed_fraction(masked: torch.Tensor) -> torch.Tensor:
    """Per-sample fraction of spatial positions zero in every channel."""
    return (masked == 0).all(dim=1).flatten(1).float().mean(dim=1)


@pytest.mark.parametrize("ratio", [0.0, 0.3, 0.7, 1.0])
def test_fixed_ratio_zeroes_exact_fraction_shared_across_channels(ratio):
    z = torch.randn(16, 4, 12, 10) + 5.0  # no accidental zeros
    out = mask_first_latent(z, ratio, torch.Generator().manual_seed(1))
    frac = _zeroed_fraction(out)
    expected = round(ratio * 120) / 120
    assert torch.allclose(frac, torch.full_like(frac, expected))
    zero_any = out == 0
    assert (zero_any.any(dim=1) == zero_any.all(dim=1)).all(), "positions must be zeroed in all channels"
    kept = ~zero_any.all(dim=1, keepdim=True).expand_as(z)
    assert torch.equal(out[kept], z[kept]), "kept positions must be untouched"


def test_positions_differ_between_samples_and_are_uniform():
    z = torch.ones(2000, 1, 4, 4)
    out = mask_first_latent(z, 0.5, torch.Generator().manual_seed(0))
    per_position = (out == 0).float().mean(dim=0).flatten()
    assert torch.allclose(per_position, torch.full_like(per_position, 0.5), atol=0.05)
    assert not torch.equal(out[0], out[1])


def test_ratio_list_draws_per_sample_from_the_list():
    choices = [0.0, 0.3, 0.5, 0.7]
    z = torch.randn(400, 4, 10, 10) + 5.0
    out = mask_first_latent(z, choices, torch.Generator().manual_seed(3))
    frac = _zeroed_fraction(out)
    values, counts = torch.unique(frac, return_counts=True)
    assert torch.allclose(values, torch.tensor(choices))
    assert (counts > 60).all(), f"each ratio should be drawn about 100 times, got {counts.tolist()}"


def test_generator_makes_masking_deterministic():
    z = torch.randn(3, 4, 8, 8)
    a = mask_first_latent(z, [0.3, 0.7], torch.Generator().manual_seed(5))
    b = mask_first_latent(z, [0.3, 0.7], torch.Generator().manual_seed(5))
    c = mask_first_latent(z, [0.3, 0.7], torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_bad_ratio_is_rejected():
    with pytest.raises(ValueError, match="ratio"):
        mask_first_latent(torch.zeros(1, 4, 2, 2), 1.5)


def test_assemble_released_layout():
    b, c, f, h, w = 2, 4, 5, 3, 3
    noisy, mask, first = torch.randn(b, c, f, h, w), torch.rand(b, 1, h, w), torch.randn(b, c, h, w)
    x = assemble_input(noisy, mask, first)  # released: noisy | mask | first; mask all, z0 frame 0
    assert x.shape == (b, 2 * c + 1, f, h, w)
    assert torch.equal(x[:, :c], noisy)
    assert all(torch.equal(x[:, c, t], mask[:, 0]) for t in range(f))
    assert torch.equal(x[:, c + 1 :, 0], first)
    assert (x[:, c + 1 :, 1:] == 0).all()
    n, m, z0 = split_input(x, c)
    assert torch.equal(n, noisy) and torch.equal(m[:, :, 0], mask) and torch.equal(z0[:, :, 0], first)


def test_assemble_paper_layout():
    b, c, f, h, w = 1, 4, 3, 2, 2
    noisy, mask, first = torch.randn(b, c, f, h, w), torch.rand(b, 1, h, w), torch.randn(b, c, h, w)
    x = assemble_input(noisy, mask, first, channel_order="noisy_first_mask", mask_frames="first",
                       first_frame_frames="all")
    assert all(torch.equal(x[:, c : 2 * c, t], first) for t in range(f))
    assert torch.equal(x[:, 2 * c, 0], mask[:, 0]) and (x[:, 2 * c, 1:] == 0).all()
    _, m, z0 = split_input(x, c, "noisy_first_mask")
    assert torch.equal(m, x[:, 2 * c :]) and torch.equal(z0, x[:, c : 2 * c])


def test_assemble_rejects_bad_options_and_shapes():
    noisy = torch.zeros(1, 4, 2, 3, 3)
    with pytest.raises(ValueError, match="channel_order"):
        assemble_input(noisy, torch.zeros(1, 1, 3, 3), torch.zeros(1, 4, 3, 3), channel_order="mask_first")
    with pytest.raises(ValueError, match="mask must be"):
        assemble_input(noisy, torch.zeros(1, 1, 6, 6), torch.zeros(1, 4, 3, 3))


def test_resize_mask_max_keeps_thin_regions():
    mask = torch.zeros(1, 1, 64, 64)
    mask[..., 13, :] = 1  # one-pixel line
    assert resize_mask(mask, (8, 8), mode="max")[0, 0, 1].all()
    assert set(resize_mask(mask, (8, 8)).unique().tolist()) <= {0.0, 1.0}
