"""Builders (Hydra ``_target_``s in conf/train/model/): tiny random-init model, SD1.5 + AnimateDiff.

- :func:`build_tiny`: random weights from a seed, pixel-unshuffle autoencoder, byte-level
  tiny text encoder: no files, runs on CPU (embedded default, tests).
- :func:`build_sd15`: SD1.5 (``unet``, ``vae``, ``text_encoder``, ``tokenizer``) and an AnimateDiff
  ``MotionAdapter`` from local diffusers-format folders (``local_files_only``: no downloads).
- :func:`build_unet_from_configs`: random-init FYCUNet from UNet2D + MotionAdapter config dicts
  (benchmarks: SD1.5-sized without weights, see :func:`sd15_unet2d_config`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from .autoencoder import PixelUnshuffleAutoencoder, SDAutoencoder
from .checkpointing import require_files
from .fyc_model import FYCModel
from .text import CLIPTextEncoder, TinyTextEncoder
from .unet import FYCUNet, FYCUNetConfig

log = logging.getLogger(__name__)

UNET_FILES = ("config.json", ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin"))
ADAPTER_FILES = ("config.json", ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin"))


def _plain(obj: Any) -> Any:
    """Hydra DictConfig/ListConfig -> plain dict/list (no-op for plain objects)."""
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf

        if isinstance(obj, (DictConfig, ListConfig)):
            return OmegaConf.to_container(obj, resolve=True)
    except ImportError:  # pragma: no cover - omegaconf is a dependency
        pass
    return obj


def tiny_unet2d_config(latent_channels: int, cross_attention_dim: int, **overrides) -> dict:
    cfg = dict(
        sample_size=32, in_channels=latent_channels, out_channels=latent_channels,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        block_out_channels=(32, 64), layers_per_block=1, norm_num_groups=8,
        cross_attention_dim=cross_attention_dim, attention_head_dim=2,
    )
    cfg.update(overrides)
    return cfg


def tiny_adapter_config(unet2d_config: Mapping, **overrides) -> dict:
    cfg = dict(
        block_out_channels=tuple(unet2d_config["block_out_channels"]),
        motion_layers_per_block=unet2d_config["layers_per_block"],
        motion_num_attention_heads=2, motion_norm_num_groups=unet2d_config.get("norm_num_groups", 32),
        motion_max_seq_length=32, use_motion_mid_block=True,
    )
    cfg.update(overrides)
    return cfg


def sd15_unet2d_config() -> dict:
    """Shapes of runwayml/stable-diffusion-v1-5's ``unet/config.json`` (for random-init benchmarks)."""
    return dict(
        sample_size=64, in_channels=4, out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        block_out_channels=(320, 640, 1280, 1280), layers_per_block=2, norm_num_groups=32,
        cross_attention_dim=768, attention_head_dim=8,
    )


def animatediff_adapter_config() -> dict:
    """Shapes of guoyww/animatediff-motion-adapter-v1-5-2 (``MotionAdapter`` config)."""
    return dict(block_out_channels=(320, 640, 1280, 1280), motion_layers_per_block=2,
                motion_num_attention_heads=8, motion_norm_num_groups=32, motion_max_seq_length=32,
                use_motion_mid_block=True)


def build_unet_from_configs(unet2d_config: Mapping, adapter_config: Mapping, fyc: Mapping,
                            seed: int = 0) -> FYCUNet:
    """Random-init FYCUNet through the same path as SD: UNet2D + MotionAdapter -> from_unet2d."""
    from diffusers import MotionAdapter, UNet2DConditionModel, UNetMotionModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet2d = UNet2DConditionModel(**_plain(unet2d_config))
        adapter = MotionAdapter(**_plain(adapter_config))
        motion_unet = UNetMotionModel.from_unet2d(unet2d, adapter)
        # new layers (MA, embeddings) also drawn under the seed
        return FYCUNet(motion_unet, FYCUNetConfig(**_plain(fyc)))


def build_tiny(
    image_size: int = 64,
    autoencoder: Mapping | None = None,
    text: Mapping | None = None,
    unet: Mapping | None = None,
    motion_adapter: Mapping | None = None,
    fyc: Mapping | None = None,
    trainable: str = "unet",
    gradient_checkpointing: bool = False,
    seed: int = 0,
) -> FYCModel:
    """Tiny FYC model, everything random from ``seed`` (no files, CPU-friendly)."""
    ae_cfg = {"factor": 2, "scale": 1.0, **(_plain(autoencoder) or {})}
    text_cfg = {"hidden_size": 64, "num_layers": 2, "num_heads": 2, "max_length": 32, "seed": seed,
                **(_plain(text) or {})}
    ae = PixelUnshuffleAutoencoder(**ae_cfg)
    text_encoder = TinyTextEncoder(**text_cfg)
    c = ae.latent_channels
    unet_cfg = tiny_unet2d_config(c, text_encoder.hidden_size, sample_size=image_size // ae.downscale_factor,
                                  **(_plain(unet) or {}))
    adapter_cfg = tiny_adapter_config(unet_cfg, **(_plain(motion_adapter) or {}))
    fyc_cfg = {"latent_channels": c, "motion_context_dim": text_encoder.hidden_size, **(_plain(fyc) or {})}
    fyc_unet = build_unet_from_configs(unet_cfg, adapter_cfg, fyc_cfg, seed=seed)
    return FYCModel(fyc_unet, ae, text_encoder, trainable=trainable,
                    gradient_checkpointing=gradient_checkpointing)


def load_sd15_motion_unet(pretrained_path: str | Path, motion_adapter_path: str | Path,
                          torch_dtype: torch.dtype | None = None):
    """SD1.5 ``unet`` + AnimateDiff ``MotionAdapter`` from local folders -> ``UNetMotionModel``."""
    from diffusers import MotionAdapter, UNet2DConditionModel, UNetMotionModel

    unet_dir = require_files(Path(pretrained_path) / "unet", UNET_FILES, what="Stable Diffusion 1.5 U-Net")
    adapter_dir = require_files(Path(motion_adapter_path), ADAPTER_FILES, what="AnimateDiff MotionAdapter")
    kw = {"local_files_only": True}
    if torch_dtype is not None:
        kw["torch_dtype"] = torch_dtype
    unet2d = UNet2DConditionModel.from_pretrained(str(unet_dir), **kw)
    adapter = MotionAdapter.from_pretrained(str(adapter_dir), **kw)
    return UNetMotionModel.from_unet2d(unet2d, adapter)


def _dtype(name: str | None) -> torch.dtype | None:
    if name is None:
        return None
    try:
        return {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
                "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}[str(name)]
    except KeyError:
        raise ValueError(f"unknown dtype {name!r}; use float32, bfloat16 or float16") from None


def build_sd15(
    pretrained_path: str,
    motion_adapter_path: str,
    fyc: Mapping | None = None,
    trainable: str = "motion",
    gradient_checkpointing: bool = True,
    frozen_dtype: str | None = None,
    vae_chunk_size: int = 16,
    seed: int = 0,
) -> FYCModel:
    """SD1.5 + AnimateDiff from local diffusers-format folders (no downloads).

    ``pretrained_path`` must hold ``unet/``, ``vae/``, ``text_encoder/``, ``tokenizer/``;
    ``motion_adapter_path`` a ``MotionAdapter`` (``config.json`` + weights). ``frozen_dtype``
    (e.g. "bfloat16") casts the frozen VAE and text encoder to save memory; the U-Net stays
    fp32 (trained under autocast).
    """
    root = Path(pretrained_path)
    if not root.is_dir():
        raise FileNotFoundError(
            f"Stable Diffusion folder {root} does not exist; it must be a diffusers-format SD1.5 folder "
            "with unet/, vae/, text_encoder/ and tokenizer/ (e.g. a local copy of "
            "stable-diffusion-v1-5/stable-diffusion-v1-5)"
        )
    # check every folder first, so a user sees every missing piece before minutes of loading
    require_files(root / "unet", UNET_FILES, what="Stable Diffusion 1.5 U-Net")
    from .autoencoder import SD_VAE_FILES
    from .text import CLIP_TEXT_FILES, CLIP_TOKENIZER_FILES

    require_files(root / "vae", SD_VAE_FILES, what="Stable Diffusion VAE (AutoencoderKL)")
    require_files(root / "text_encoder", CLIP_TEXT_FILES, what="CLIP text encoder")
    require_files(root / "tokenizer", CLIP_TOKENIZER_FILES, what="CLIP tokenizer")
    require_files(Path(motion_adapter_path), ADAPTER_FILES, what="AnimateDiff MotionAdapter")

    text_encoder = CLIPTextEncoder.from_folder(root)
    ae = SDAutoencoder.from_folder(root, chunk_size=vae_chunk_size)
    motion_unet = load_sd15_motion_unet(root, motion_adapter_path)
    fyc_cfg = {"latent_channels": ae.latent_channels, "motion_context_dim": text_encoder.hidden_size,
               **(_plain(fyc) or {})}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        fyc_unet = FYCUNet(motion_unet, FYCUNetConfig(**fyc_cfg))
    dtype = _dtype(frozen_dtype)
    if dtype is not None:  # their outputs are cast back to the U-Net's dtype (FYCModel, SDAutoencoder)
        ae.to(dtype)
        text_encoder.to(dtype)
    model = FYCModel(fyc_unet, ae, text_encoder, trainable=trainable,
                     gradient_checkpointing=gradient_checkpointing)
    log.info("SD1.5 + AnimateDiff from %s and %s: trainable=%s, gradient checkpointing %s, frozen VAE and "
             "text encoder in %s", root, motion_adapter_path, trainable, "on" if gradient_checkpointing else "off",
             str(next(ae.parameters()).dtype).removeprefix("torch."))
    return model
