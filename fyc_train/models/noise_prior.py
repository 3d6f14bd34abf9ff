"""Frame-correlated diffusion noise ("mixed noise", Ge et al. 2023, Preserve Your Own Correlation).

Each frame's noise is ``sqrt(r) * shared + sqrt(1 - r) * own``: still unit variance per element,
with correlation ``r`` between any two frames. The U-Net must be trained and sampled under the
same ``r`` (``FYCUNetConfig.frame_noise_correlation``). With iid noise (r = 0) a small model that
samples in one step turns the independent noise of each frame into a differently redrawn
background per frame: flicker that the locality metric reads as motion outside the clicked
region. No library offers this prior for diffusers' schedulers (they take any noise tensor), so
it is written here.
"""

from __future__ import annotations

import math

import torch


def frame_correlated_noise(shape: tuple[int, ...], correlation: float, generator: torch.Generator | None = None,
                           device: torch.device | str | None = None,
                           dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Standard normal noise of `shape` (B, C, F, h, w) whose frames correlate by `correlation`.

    ``correlation=0`` is exactly ``torch.randn(shape, generator=...)`` (same draws)."""
    if len(shape) != 5:
        raise ValueError(f"expected a (B, C, F, h, w) shape, got {tuple(shape)}")
    if not 0.0 <= correlation < 1.0:
        raise ValueError(f"correlation must be in [0, 1), got {correlation}")
    own = torch.randn(shape, generator=generator, device=device, dtype=dtype)
    if correlation == 0.0:
        return own
    b, c, _, h, w = shape
    shared = torch.randn((b, c, 1, h, w), generator=generator, device=device, dtype=dtype)
    return math.sqrt(correlation) * shared + math.sqrt(1.0 - correlation) * own
