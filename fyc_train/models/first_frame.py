"""First-frame conditioning: masking of the first-frame latent and 9-channel input assembly.

Follow-Your-Click feeds the U-Net, per frame, ``[noisy latent (C) | region mask (1) |
first-frame latent (C)]`` (released code order; the paper lists the image latent before the
mask). Where the mask and the first-frame latent sit in time differs between the released code
and the paper, so both are options here (see docs/training.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F

ChannelOrder = Literal["noisy_mask_first", "noisy_first_mask"]
FramePlacement = Literal["first", "all"]

CHANNEL_ORDERS: tuple[str, ...] = ("noisy_mask_first", "noisy_first_mask")
FRAME_PLACEMENTS: tuple[str, ...] = ("first", "all")


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not one of {list(choices)}")


def _place_in_time(x: torch.Tensor, num_frames: int, placement: str) -> torch.Tensor:
    """(B, C, h, w) -> (B, C, F, h, w): on every frame, or on frame 0 with zeros elsewhere."""
    if placement == "all":
        return x.unsqueeze(2).expand(-1, -1, num_frames, -1, -1)
    out = x.new_zeros(x.shape[0], x.shape[1], num_frames, *x.shape[2:])
    out[:, :, 0] = x
    return out


def assemble_input(
    noisy: torch.Tensor,
    mask: torch.Tensor,
    first_latent: torch.Tensor,
    channel_order: ChannelOrder = "noisy_mask_first",
    mask_frames: FramePlacement = "all",
    first_frame_frames: FramePlacement = "first",
) -> torch.Tensor:
    """Build the U-Net input (B, 2C+1, F, h, w).

    Args:
        noisy: noisy video latents (B, C, F, h, w).
        mask: region mask at latent resolution (B, 1, h, w), values in [0, 1]
            (see :func:`resize_mask`).
        first_latent: first-frame latent (B, C, h, w), masked or not.
        channel_order: "noisy_mask_first" (released code) or "noisy_first_mask" (paper).
        mask_frames: "all" (released code: mask on every frame) or "first" (paper).
        first_frame_frames: "first" (released code: z0 on frame 0, zeros elsewhere) or
            "all" (paper: z0 repeated on every frame).
    """
    _check_choice("channel_order", channel_order, CHANNEL_ORDERS)
    _check_choice("mask_frames", mask_frames, FRAME_PLACEMENTS)
    _check_choice("first_frame_frames", first_frame_frames, FRAME_PLACEMENTS)
    if noisy.ndim != 5:
        raise ValueError(f"noisy must be (B, C, F, h, w), got shape {tuple(noisy.shape)}")
    b, c, f, h, w = noisy.shape
    if mask.shape != (b, 1, h, w):
        raise ValueError(f"mask must be (B, 1, h, w) = {(b, 1, h, w)}, got {tuple(mask.shape)}")
    if first_latent.shape != (b, c, h, w):
        raise ValueError(
            f"first_latent must be (B, C, h, w) = {(b, c, h, w)}, got {tuple(first_latent.shape)}"
        )
    mask_t = _place_in_time(mask.to(noisy.dtype), f, mask_frames)
    first_t = _place_in_time(first_latent.to(noisy.dtype), f, first_frame_frames)
    parts = [noisy, mask_t, first_t] if channel_order == "noisy_mask_first" else [noisy, first_t, mask_t]
    return torch.cat(parts, dim=1)


def split_input(x: torch.Tensor, latent_channels: int, channel_order: ChannelOrder = "noisy_mask_first"):
    """Inverse of :func:`assemble_input` along channels: (noisy, mask, first) each (B, *, F, h, w)."""
    _check_choice("channel_order", channel_order, CHANNEL_ORDERS)
    c = latent_channels
    noisy = x[:, :c]
    if channel_order == "noisy_mask_first":
        return noisy, x[:, c : c + 1], x[:, c + 1 :]
    return noisy, x[:, 2 * c :], x[:, c : 2 * c]


def mask_first_latent(
    first_latent: torch.Tensor,
    ratio: float | Sequence[float],
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Zero a fraction ``ratio`` of the spatial positions of each sample's first-frame latent.

    The same positions are zeroed in every channel. Exactly ``round(ratio * h * w)`` positions
    per sample (a random permutation, not independent coin flips), so the masked fraction is
    exactly the requested one. ``ratio`` may be a list: each sample draws its ratio uniformly
    from it (released config: [0, 0.3, 0.5, 0.7]; paper: 0.7). Training only: at inference
    call nothing (the full first frame is the condition).
    """
    if first_latent.ndim != 4:
        raise ValueError(f"first_latent must be (B, C, h, w), got {tuple(first_latent.shape)}")
    b, _, h, w = first_latent.shape
    gen_device = generator.device if generator is not None else torch.device("cpu")
    ratios = torch.as_tensor(ratio if isinstance(ratio, Sequence) else [ratio], dtype=torch.float64)
    if ratios.numel() == 0 or ((ratios < 0) | (ratios > 1)).any():
        raise ValueError(f"mask ratio must be in [0, 1] (or a non-empty list of such), got {ratio!r}")
    if ratios.numel() == 1:
        per_sample = ratios.expand(b)
    else:
        pick = torch.randint(0, ratios.numel(), (b,), generator=generator, device=gen_device)
        per_sample = ratios[pick.cpu()]
    counts = torch.round(per_sample * h * w).to(torch.long)
    # rank of every position in a random permutation; positions with rank < count are zeroed
    ranks = torch.rand(b, h * w, generator=generator, device=gen_device).argsort(dim=1).argsort(dim=1)
    drop = ranks.cpu() < counts[:, None]
    keep = (~drop).view(b, 1, h, w).to(device=first_latent.device, dtype=first_latent.dtype)
    return first_latent * keep


def noise_sigma(alphas_cumprod: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    """sqrt(1 - alpha_bar_t) per timestep: the noise level the U-Net's first-frame skip scales z0 by."""
    t = torch.as_tensor(timesteps, device=alphas_cumprod.device).long().reshape(-1)
    return (1.0 - alphas_cumprod[t]).clamp_min(0.0).sqrt()


def resize_mask(mask: torch.Tensor, size: tuple[int, int], mode: Literal["nearest", "max"] = "nearest") -> torch.Tensor:
    """Pixel-resolution mask (B, 1, H, W) -> latent resolution (B, 1, h, w) in {0, 1}.

    "nearest" follows the paper (nearest-resized); "max" marks a latent cell when any pixel in
    it moves, so thin moving parts are not lost at 8x downsampling.
    """
    mask = mask.float()
    if mode == "nearest":
        out = F.interpolate(mask, size=size, mode="nearest")
    elif mode == "max":
        out = F.adaptive_max_pool2d(mask, size)
    else:
        raise ValueError(f"mode={mode!r} is not one of ['nearest', 'max']")
    return (out > 0.5).to(mask.dtype)
