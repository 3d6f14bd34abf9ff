"""FYCModel: the U-Net with its frozen autoencoder and text encoder, and the trainable set."""

from __future__ import annotations

import torch
from torch import nn

from .unet import FYCUNet, FYCUNetConfig

TRAINABLE_CHOICES = ("motion", "unet", "all")


class FYCModel(nn.Module):
    """Bundle of ``unet`` (:class:`FYCUNet`), ``autoencoder``, ``text_encoder`` (+ ``tokenizer``).

    ``trainable`` chooses what gets gradients:
      - "motion" (paper): motion modules incl. MA, ``conv_in``, magnitude/FPS embeddings (and
        ``conv_out`` with a copy-gate first-frame skip, whose gate it predicts); spatial layers,
        autoencoder and text encoder frozen.
      - "unet": the whole U-Net (the tiny random-init model trained from scratch).
      - "all": the whole U-Net and the text encoder (tiny random text encoder only).
    Frozen parts have ``requires_grad=False`` and stay in eval mode under ``train()``.
    """

    def __init__(self, unet: FYCUNet, autoencoder: nn.Module, text_encoder: nn.Module,
                 trainable: str = "motion", gradient_checkpointing: bool = False):
        super().__init__()
        if trainable not in TRAINABLE_CHOICES:
            raise ValueError(f"trainable={trainable!r} is not one of {list(TRAINABLE_CHOICES)}")
        if autoencoder.latent_channels != unet.config.latent_channels:
            raise ValueError(
                f"autoencoder gives {autoencoder.latent_channels} latent channels but the U-Net expects "
                f"{unet.config.latent_channels}"
            )
        self.unet = unet
        self.autoencoder = autoencoder
        self.text_encoder = text_encoder
        self.trainable = trainable
        self.apply_trainable()
        if gradient_checkpointing:
            self.unet.enable_gradient_checkpointing()

    # ---- what trains ------------------------------------------------------------------
    def trainable_parameters(self) -> list[nn.Parameter]:
        if self.trainable == "motion":
            params = (self.unet.motion_module_parameters() + list(self.unet.unet.conv_in.parameters())
                      + self.unet.conditioning_parameters())
            if self.unet.config.has_copy_gate:  # conv_out holds the new copy gate
                params += list(self.unet.unet.conv_out.parameters())
        else:
            params = list(self.unet.parameters())
            if self.trainable == "all":
                params += list(self.text_encoder.parameters())
        seen, unique = set(), []
        for p in params:
            if id(p) not in seen:
                seen.add(id(p))
                unique.append(p)
        return unique

    def named_trainable_parameters(self) -> list[tuple[str, nn.Parameter]]:
        ids = {id(p) for p in self.trainable_parameters()}
        return [(n, p) for n, p in self.named_parameters() if id(p) in ids]

    def apply_trainable(self) -> None:
        """Set ``requires_grad`` on every parameter from ``self.trainable``."""
        self.requires_grad_(False)
        for p in self.trainable_parameters():
            p.requires_grad_(True)

    def train(self, mode: bool = True) -> FYCModel:
        super().train(mode)
        self.autoencoder.eval()
        if self.trainable != "all":
            self.text_encoder.eval()
        return self

    # ---- helpers for training and sampling ---------------------------------------------
    @property
    def config(self) -> FYCUNetConfig:
        return self.unet.config

    @property
    def tokenizer(self):
        return self.text_encoder.tokenizer

    @property
    def latent_channels(self) -> int:
        return self.autoencoder.latent_channels

    @property
    def downscale_factor(self) -> int:
        return self.autoencoder.downscale_factor

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        """list[str] -> (B, S, D) in the U-Net's dtype; "" is the unconditional prompt. A frozen
        text encoder may hold its weights in another dtype (``frozen_dtype: bfloat16``): without
        autocast (CPU, fp32 training) its output must match the U-Net's cross-attention weights."""
        return self.text_encoder.encode(texts).to(self.unet.dtype)

    def text_conditioning(self, captions: list[str], motion_prompts: list[str],
                          inference: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(encoder_hidden_states, motion_hidden_states) for the U-Net.

        Training: caption -> spatial cross-attention, short prompt -> MA. Inference with
        ``config.short_prompt_in_spatial`` (paper): the short prompt goes to both.
        """
        motion = self.encode_text(motion_prompts) if self.config.motion_augment else None
        if inference and self.config.short_prompt_in_spatial:
            spatial = motion if motion is not None else self.encode_text(motion_prompts)
        else:
            spatial = self.encode_text(captions)
        return spatial, motion

    @torch.no_grad()
    def encode_video(self, video: torch.Tensor) -> torch.Tensor:
        """(B, F, 3, H, W) in [-1, 1] -> latents (B, C, F, h, w)."""
        b, f = video.shape[:2]
        z = self.autoencoder.encode(video.flatten(0, 1))
        return z.unflatten(0, (b, f)).transpose(1, 2)

    @torch.no_grad()
    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """(B, C, F, h, w) -> (B, F, 3, H, W) in about [-1, 1]."""
        b, _, f = latents.shape[:3]
        x = self.autoencoder.decode(latents.transpose(1, 2).flatten(0, 1))
        return x.unflatten(0, (b, f))
