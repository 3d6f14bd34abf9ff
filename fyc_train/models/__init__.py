"""Follow-Your-Click model on diffusers (see docs/ARCHITECTURE.md, "Contract: the model").

Public API::

    from fyc_train.models import build_tiny, build_sd15, FYCModel, FYCUNet, assemble_input

    model = build_tiny()                      # or hydra.utils.instantiate(cfg.model)
    z = model.encode_video(video)             # (B, F, 3, H, W) in [-1, 1] -> (B, C, F, h, w)
    z0 = mask_first_latent(z[:, :, 0], model.config.mask_ratio, generator)   # training only
    m = resize_mask(batch["mask"], z.shape[-2:])                              # (B, 1, h, w)
    x = assemble_input(noisy, m, z0, model.config.channel_order,
                       model.config.mask_frames, model.config.first_frame_frames)
    ehs, mhs = model.text_conditioning(captions, motion_prompts, inference=False)
    out = model.unet(x, t, ehs, motion_hidden_states=mhs, magnitude=mag, fps=stride)  # (B, C, F, h, w)
    opt = AdamW(model.trainable_parameters())

- ``model.unet(...)``: hidden states are given once per video (B, S, D) and repeated per frame
  inside; ``motion_hidden_states=None`` skips MA (ablation); ``magnitude``/``fps`` None add
  nothing. The output has C = ``model.latent_channels`` channels.
- ``model.text_conditioning(..., inference=True)`` sends the short prompt to the spatial
  cross-attention too when ``config.short_prompt_in_spatial`` (paper).
- Export: ``save_fyc_model(model, dir)`` / ``load_fyc_model(dir)`` (safetensors, no pickle);
  U-Net only: ``save_fyc_unet`` / ``load_fyc_unet``.
"""

from .autoencoder import PixelUnshuffleAutoencoder, SDAutoencoder
from .build import build_sd15, build_tiny, build_unet_from_configs
from .export import load_fyc_model, load_fyc_unet, save_fyc_model, save_fyc_unet
from .checkpointing import ModelFolderError
from .first_frame import assemble_input, mask_first_latent, resize_mask, split_input
from .fyc_model import FYCModel
from .text import ByteTokenizer, CLIPTextEncoder, TinyTextEncoder
from .unet import FYCUNet, FYCUNetConfig

__all__ = [
    "ByteTokenizer", "CLIPTextEncoder", "FYCModel", "FYCUNet", "FYCUNetConfig", "ModelFolderError",
    "PixelUnshuffleAutoencoder", "SDAutoencoder", "TinyTextEncoder", "assemble_input", "build_sd15",
    "build_tiny", "build_unet_from_configs", "load_fyc_model", "load_fyc_unet", "mask_first_latent",
    "resize_mask", "save_fyc_model", "save_fyc_unet", "split_input",
]
