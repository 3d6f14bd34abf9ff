"""Frame-correlated noise (``fyc.frame_noise_correlation``): the statistics the training loss and
the sampling pipeline rely on, and that a trained-under-r U-Net is sampled under the same r."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fyc_train.models.build import build_tiny
from fyc_train.models.noise_prior import frame_correlated_noise
from fyc_train.models.unet import FYCUNetConfig
from fyc_train.sampling.pipeline import FYCPipeline, make_scheduler

torch.set_num_threads(1)


def test_zero_correlation_is_plain_randn():
    shape = (2, 3, 4, 5, 5)
    torch.testing.assert_close(frame_correlated_noise(shape, 0.0, torch.Generator().manual_seed(1)),
                               torch.randn(shape, generator=torch.Generator().manual_seed(1)))


@pytest.mark.parametrize("correlation", [0.3, 0.8])
def test_frames_correlate_by_r_with_unit_variance(correlation):
    noise = frame_correlated_noise((64, 4, 3, 16, 16), correlation, torch.Generator().manual_seed(0))
    assert noise.var().item() == pytest.approx(1.0, abs=0.02)
    a, b = noise[:, :, 0].flatten(), noise[:, :, 2].flatten()
    assert torch.corrcoef(torch.stack([a, b]))[0, 1].item() == pytest.approx(correlation, abs=0.02)


@pytest.mark.parametrize("bad", [-0.1, 1.0])
def test_correlation_outside_0_1_is_refused_with_the_reason(bad):
    with pytest.raises(ValueError, match="frame_noise_correlation"):
        FYCUNetConfig(frame_noise_correlation=bad)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        frame_correlated_noise((1, 1, 2, 2, 2), bad)


def test_pipeline_samples_under_the_models_noise_prior():
    """An untrained U-Net's one-step video follows its noise: frames drawn from correlated noise
    differ less from each other than frames drawn from independent noise."""
    image = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    mask = np.zeros((32, 32), dtype=bool)
    mask[8:16, 8:16] = True
    flicker = {}
    for correlation in (0.0, 0.95):
        model = build_tiny(image_size=32, autoencoder={"factor": 2}, unet={"block_out_channels": [16, 32]},
                           fyc={"frame_noise_correlation": correlation}).eval()
        pipe = FYCPipeline(model, scheduler=make_scheduler(clean_last_step=True), default_num_frames=4)
        video = pipe(image, mask, "sway", steps=1, guidance=1.0, seed=0, progress=False).astype(float)
        flicker[correlation] = np.abs(np.diff(video[1:], axis=0)).mean()
    assert flicker[0.95] < 0.5 * flicker[0.0]
