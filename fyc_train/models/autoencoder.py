"""Autoencoders with one interface: ``encode(images in [-1,1]) -> scaled latents``, ``decode``.

- :class:`PixelUnshuffleAutoencoder`: exact and weight-free (pixel_unshuffle / pixel_shuffle),
  for the tiny embedded default: no pretrained VAE needed, and samples are real pictures.
- :class:`SDAutoencoder`: Stable Diffusion's ``AutoencoderKL`` from a local diffusers folder,
  latents scaled by the VAE's ``scaling_factor`` (0.18215 for SD1.5), frozen.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn


class PixelUnshuffleAutoencoder(nn.Module):
    """Space-to-depth "autoencoder": (N, 3, H, W) -> (N, 3*f*f, H/f, W/f), exactly invertible.

    ``scale`` multiplies latents (images in [-1, 1] already have roughly unit scale, so 1.0
    is a sensible default). Decoding clamps nothing: the round trip is exact.
    """

    def __init__(self, factor: int = 2, scale: float = 1.0, image_channels: int = 3):
        super().__init__()
        if factor < 1:
            raise ValueError(f"factor must be >= 1, got {factor}")
        self.factor = int(factor)
        self.scale = float(scale)
        self.image_channels = int(image_channels)

    @property
    def latent_channels(self) -> int:
        return self.image_channels * self.factor * self.factor

    @property
    def downscale_factor(self) -> int:
        return self.factor

    def config_dict(self) -> dict:
        return {"type": "pixel_unshuffle", "factor": self.factor, "scale": self.scale,
                "image_channels": self.image_channels}

    def encode(self, images: torch.Tensor, sample: bool = False, generator: torch.Generator | None = None) -> torch.Tensor:
        h, w = images.shape[-2:]
        if h % self.factor or w % self.factor:
            raise ValueError(f"image size {(h, w)} is not divisible by the autoencoder factor {self.factor}")
        return F.pixel_unshuffle(images, self.factor) * self.scale

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return F.pixel_shuffle(latents / self.scale, self.factor)


SD_VAE_FILES = ("config.json", "diffusion_pytorch_model.safetensors")


class SDAutoencoder(nn.Module):
    """Frozen diffusers ``AutoencoderKL`` with scaled latents.

    ``encode`` returns the posterior mean by default (deterministic, what most video trainers
    use); ``sample=True`` draws from the posterior. Frames are processed ``chunk_size`` at a
    time because a 16-frame 512x512 batch through the VAE decoder needs many GiB at once.
    """

    def __init__(self, vae, chunk_size: int = 16):
        super().__init__()
        self.vae = vae
        self.vae.requires_grad_(False)
        self.vae.eval()
        self.chunk_size = int(chunk_size)
        self.scaling_factor = float(vae.config.scaling_factor)

    @classmethod
    def from_folder(cls, path: str | Path, subfolder: str | None = "vae", chunk_size: int = 16) -> SDAutoencoder:
        from diffusers import AutoencoderKL

        from .checkpointing import require_files

        folder = Path(path) / subfolder if subfolder else Path(path)
        require_files(folder, SD_VAE_FILES, what="Stable Diffusion VAE (AutoencoderKL)")
        vae = AutoencoderKL.from_pretrained(str(folder), local_files_only=True)
        return cls(vae, chunk_size=chunk_size)

    @property
    def latent_channels(self) -> int:
        return int(self.vae.config.latent_channels)

    @property
    def downscale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    def config_dict(self) -> dict:
        return {"type": "sd_vae", "chunk_size": self.chunk_size}

    def _chunks(self, x: torch.Tensor):
        return x.split(self.chunk_size) if self.chunk_size > 0 else (x,)

    @torch.no_grad()
    def encode(self, images: torch.Tensor, sample: bool = False, generator: torch.Generator | None = None) -> torch.Tensor:
        out = []
        dtype = next(self.vae.parameters()).dtype
        for chunk in self._chunks(images):
            dist = self.vae.encode(chunk.to(dtype)).latent_dist
            z = dist.sample(generator=generator) if sample else dist.mean
            out.append(z)
        # latents in the caller's dtype: a bf16 VAE (frozen_dtype) feeds an fp32 U-Net
        return (torch.cat(out) * self.scaling_factor).to(images.dtype)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        dtype = next(self.vae.parameters()).dtype
        out = [self.vae.decode((c / self.scaling_factor).to(dtype)).sample for c in self._chunks(latents)]
        return torch.cat(out).to(latents.dtype)
