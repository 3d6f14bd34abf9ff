"""FYCPipeline: image + region mask(s) + short motion prompt(s) + magnitude -> uint8 video.

DDIM (trailing spacing, zero-terminal-SNR betas) from diffusers drives the loop; what diffusers
has no pipeline for is the FYC conditioning: the 2C+1-channel input (noisy latent | mask |
first-frame latent), the short prompt into the MA cross-attention (and, as in the paper's
inference, into the spatial cross-attention), the magnitude embedding, and several regions with
their own prompts. That part is written here.
"""
from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass
from typing import Any
from collections.abc import Sequence

import numpy as np
import torch
from diffusers import DDIMScheduler
from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import rescale_noise_cfg
from PIL import Image
from tqdm.auto import tqdm

from fyc_train.models.first_frame import assemble_input, noise_sigma, resize_mask
from fyc_train.models.noise_prior import frame_correlated_noise

from .masks import SamplingInputError

log = logging.getLogger(__name__)

# The paper's schedule: v-prediction, zero-terminal-SNR rescaled linear betas.
DEFAULT_SCHEDULER_CONFIG: dict[str, Any] = dict(
    num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="linear",
    prediction_type="v_prediction", rescale_betas_zero_snr=True, clip_sample=False,
)


def make_scheduler(config: dict[str, Any] | None = None, clean_last_step: bool = True) -> DDIMScheduler:
    """DDIM from the training noise schedule; trailing spacing so the first step starts at the
    zero-SNR timestep the model was trained on (leading spacing would never visit it).

    ``clean_last_step`` (DDIM's ``set_alpha_to_one``): the last step returns the model's x0. With
    False (SD's scheduler config) it lands on alpha_bar_0 instead and keeps sqrt(1 - alpha_bar_0)
    ~ 0.03 of the initial noise: negligible in SD's scaled VAE latents, but ~3.7 grey levels of
    white noise per pixel in pixel-space latents (the tiny model's), all of it in every frame.
    """
    cfg = {**DEFAULT_SCHEDULER_CONFIG, **(config or {})}
    cfg.update(timestep_spacing="trailing", set_alpha_to_one=clean_last_step)
    known = set(inspect.signature(DDIMScheduler.__init__).parameters)  # DDPM keys DDIM lacks
    return DDIMScheduler(**{k: v for k, v in cfg.items() if k in known})


@dataclass
class FirstFrameLayout:
    """How the mask and first-frame latent are laid out over frames (model's training config)."""
    channel_order: str = "noisy_mask_first"
    mask_frames: str = "all"
    first_frame_frames: str = "first"
    mask_resize: str = "nearest"  # "nearest" (paper) or "max" (thin objects survive)


def image_to_tensor(image: Image.Image | np.ndarray | torch.Tensor) -> torch.Tensor:
    """PIL / uint8 (H,W,3) / float (3,H,W) in [-1,1] -> float (3,H,W) in [-1,1]."""
    if isinstance(image, Image.Image):
        image = np.asarray(image.convert("RGB"))
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
            raise SamplingInputError(f"image array must be uint8 (H, W, 3), got {image.dtype} {image.shape}")
        return torch.from_numpy(image).permute(2, 0, 1).float() / 127.5 - 1.0
    image = torch.as_tensor(image).float()
    if image.ndim != 3 or image.shape[0] != 3:
        raise SamplingInputError(f"image tensor must be (3, H, W) in [-1, 1], got {tuple(image.shape)}")
    return image


def _masks_tensor(mask: Any, height: int, width: int) -> torch.Tensor:
    m = torch.as_tensor(np.asarray(mask) if not torch.is_tensor(mask) else mask).float()
    if m.ndim == 2:
        m = m[None]
    if m.ndim != 3 or m.shape[-2:] != (height, width):
        raise SamplingInputError(
            f"mask must be (H, W) or (regions, H, W) at the image size {height}x{width}, "
            f"got {tuple(m.shape)}"
        )
    m = (m > 0.5).float()
    empty = [i for i in range(len(m)) if not m[i].any()]
    if empty:
        raise SamplingInputError(f"mask region(s) {empty} are empty: nothing would move there.")
    return m


def video_to_uint8(frames: torch.Tensor) -> np.ndarray:
    """(F, 3, H, W) in [-1, 1] -> uint8 (F, H, W, 3)."""
    x = ((frames.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


class FYCPipeline:
    """Sample Follow-Your-Click videos from an FYCModel (see docs/ARCHITECTURE.md)."""

    def __init__(
        self,
        model: torch.nn.Module,
        scheduler: DDIMScheduler | None = None,
        prompt_in_spatial: bool | None = None,
        impose_first_frame: bool = True,
        layout: FirstFrameLayout | None = None,
        default_num_frames: int = 16,
        fps: float | None = None,
    ) -> None:
        self.model = model
        self.scheduler = scheduler or make_scheduler()
        config = getattr(model, "config", None)
        # None: the model's own setting (FYCUNetConfig.short_prompt_in_spatial; paper: True)
        self.prompt_in_spatial = (
            getattr(config, "short_prompt_in_spatial", True) if prompt_in_spatial is None else prompt_in_spatial
        )
        self.use_motion_augment = getattr(config, "motion_augment", True)
        self.first_frame_skip = getattr(config, "has_first_frame_skip", False)
        if self.first_frame_skip and self.scheduler.config.prediction_type != "v_prediction":
            raise ValueError(
                f"the model was trained with first_frame_skip (a v-prediction output); the scheduler "
                f"has prediction_type={self.scheduler.config.prediction_type!r}"
            )
        # Frame 0 is known: re-noising it to the current level after every step (as inpainting
        # does) makes the video start exactly at the input and lets the rest follow it.
        # Set False to measure what the model itself reconstructs (the paper's I1-MSE).
        self.impose_first_frame = impose_first_frame
        self.layout = layout or FirstFrameLayout()
        self.default_num_frames = default_num_frames
        self.fps = fps

    # -- helpers -----------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.model.unet.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.unet.parameters()).dtype

    def _spatial_text(self, caption: str | None, prompt: str) -> str:
        """Spatial cross-attention text: the caption (if any) and, by config (paper), the
        short prompt too, joined as one sentence."""
        parts = [caption or ""]
        if self.prompt_in_spatial:
            parts.append(prompt)
        return ", ".join(p for p in parts if p)

    def _encode_texts(self, texts: list[str]) -> torch.Tensor:
        return self.model.encode_text(texts).to(self.device, self.dtype)

    def _unet(self, sample, t, text, motion, magnitude) -> torch.Tensor:
        n = sample.shape[0]
        fps = None if self.fps is None else torch.full((n,), float(self.fps), device=self.device, dtype=self.dtype)
        skip = {}
        if self.first_frame_skip:
            skip["noise_sigma"] = noise_sigma(self.scheduler.alphas_cumprod, t.reshape(-1).cpu()).to(self.device)
        out = self.model.unet(
            sample, t.expand(n).to(self.device), encoder_hidden_states=text,
            motion_hidden_states=motion, magnitude=magnitude.expand(n), fps=fps, **skip,
        )
        return getattr(out, "sample", out)

    def _assemble(self, noisy, masks, first):
        return assemble_input(
            noisy, masks, first, channel_order=self.layout.channel_order,
            mask_frames=self.layout.mask_frames, first_frame_frames=self.layout.first_frame_frames,
        )

    @torch.no_grad()
    def encode_image(self, image: torch.Tensor) -> torch.Tensor:
        return self.model.autoencoder.encode(image[None].to(self.device, self.dtype))

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """(1, C, F, h, w) -> (F, 3, H, W) (the SD autoencoder decodes in frame chunks)."""
        return self.model.autoencoder.decode(latents[0].permute(1, 0, 2, 3))

    # -- sampling ----------------------------------------------------------------------------
    @torch.no_grad()
    def __call__(
        self,
        image: Image.Image | np.ndarray | torch.Tensor,
        mask: np.ndarray | torch.Tensor,
        prompt: str | Sequence[str],
        caption: str | None = None,
        magnitude: float = 8.0,
        num_frames: int | None = None,
        steps: int = 25,
        guidance: float = 7.5,
        guidance_rescale: float = 0.0,
        generator: torch.Generator | None = None,
        seed: int | None = None,
        progress: bool = True,
    ) -> np.ndarray:
        """Returns uint8 (F, H, W, 3).

        mask: (H, W), or (R, H, W) for R regions. With one prompt, all regions move together
        (their union). With R prompts, region r follows prompt r: every region gets its own
        conditional / unconditional U-Net pass (its mask, its prompt) and the guided noise
        predictions are blended with the region masks at latent resolution (background: their
        mean). Same `seed` (or a CPU generator in the same state) -> same video.
        """
        img = image_to_tensor(image)
        H, W = img.shape[-2:]
        masks = _masks_tensor(mask, H, W)
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        if len(prompts) == 1 and len(masks) > 1:
            masks = masks.amax(0, keepdim=True)  # several objects, one motion: their union
        if len(prompts) != len(masks):
            raise SamplingInputError(f"{len(prompts)} prompts for {len(masks)} mask regions: give one prompt per region or a single prompt.")
        ae = self.model.autoencoder
        f = int(ae.downscale_factor)
        if H % f or W % f:
            raise SamplingInputError(f"image size {H}x{W} must be a multiple of {f} (the autoencoder's downscale factor).")
        if generator is None:
            generator = torch.Generator("cpu").manual_seed(0 if seed is None else int(seed))
        frames = int(num_frames or self.default_num_frames)
        regions = len(prompts)
        do_cfg = guidance > 1.0

        first = self.encode_image(img)  # (1, C, h, w)
        C, h, w = first.shape[1:]
        lmask = resize_mask(masks[:, None], (h, w), mode=self.layout.mask_resize)
        lmask = lmask.to(self.device, self.dtype)  # (R, 1, h, w)
        motion = self._encode_texts(prompts)
        text = self._encode_texts([self._spatial_text(caption, p) for p in prompts])
        if do_cfg:  # unconditional: empty caption and empty motion prompt; image and mask kept
            empty = self._encode_texts([""]).expand(regions, -1, -1)
            motion, text = torch.cat([motion, empty]), torch.cat([text, empty])
            lmask = torch.cat([lmask, lmask])
        if not self.use_motion_augment:  # stage-1 model: no MA layers to feed
            motion = None
        n = text.shape[0]
        first_n = first.expand(n, -1, -1, -1)
        mag = torch.tensor([float(magnitude)], device=self.device, dtype=self.dtype)
        # Region blend weights (R, 1, 1, h, w): own region, overlaps averaged, background = mean.
        blend = None
        if regions > 1:
            rm = lmask[:regions, :, None]
            blend = rm + (1 - rm.amax(0, keepdim=True)) / regions
            blend = blend / blend.sum(0, keepdim=True)

        self.scheduler.set_timesteps(steps, device=self.device)
        timesteps = self.scheduler.timesteps
        noise = frame_correlated_noise((1, C, frames, h, w), self.model.config.frame_noise_correlation,
                                       generator=generator)  # the prior the U-Net was trained under
        noise = noise.to(self.device, self.dtype)
        latents = noise * self.scheduler.init_noise_sigma
        for i, t in enumerate(tqdm(timesteps, desc="sampling", disable=not progress)):
            x = self.scheduler.scale_model_input(latents, t).expand(n, -1, -1, -1, -1)
            pred = self._unet(self._assemble(x, lmask, first_n), t, text, motion, mag)
            if do_cfg:
                cond, uncond = pred.chunk(2)
                guided = uncond + guidance * (cond - uncond)
                if guidance_rescale > 0:  # zero-SNR paper's fix for over-exposure at high CFG
                    guided = rescale_noise_cfg(guided, cond, guidance_rescale)
            else:
                guided = pred
            guided = (guided * blend).sum(0, keepdim=True) if blend is not None else guided
            latents = self.scheduler.step(guided, t, latents).prev_sample
            if self.impose_first_frame:
                latents[:, :, 0] = self._first_frame_at(first, noise[:, :, 0], timesteps, i)
        return video_to_uint8(self.decode(latents))

    def _first_frame_at(self, first, noise0, timesteps, i) -> torch.Tensor:
        """The known first-frame latent at the noise level of the next step (clean at the end)."""
        if i + 1 >= len(timesteps):
            return first
        return self.scheduler.add_noise(first, noise0, timesteps[i + 1 : i + 2])
