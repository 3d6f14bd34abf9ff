"""Step 6 (optional), latents: add `<key>.latents.npy` made by the model's own autoencoder.

The clip is decoded exactly as the training loader decodes it (fyc_train.data.decode), encoded
frame by frame, and stored as (C, F, h, w) already scaled, i.e. what `FYCLitModule.encode_video`
would compute on the fly; the json gains a `latents` record (fyc_train/data/latents.py) naming
the autoencoder, storage dtype, compute dtype and scaling, which fyc-train checks before training.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import torch

from fyc_train.data.latents import LATENTS_MEMBER, autoencoder_identity, encode_npy, latents_record
from preprocessing.shards import encode_json


def build_autoencoder(cfg: Any) -> torch.nn.Module:
    """The autoencoder named by `latents.*` (the same classes fyc-train's model uses)."""
    from fyc_train.models.autoencoder import PixelUnshuffleAutoencoder, SDAutoencoder

    if cfg.autoencoder == "tiny":
        return PixelUnshuffleAutoencoder(factor=int(cfg.tiny.factor), scale=float(cfg.tiny.scale))
    ae = SDAutoencoder.from_folder(cfg.vae_path, subfolder=cfg.vae_subfolder or None, chunk_size=int(cfg.chunk_size))
    return ae.to(getattr(torch, cfg.compute_dtype))


class LatentEncoder:
    """Holds one autoencoder (on the GPU Ray gave this actor, else CPU) and its identity."""

    def __init__(self, cfg: Any) -> None:
        self.cfg = cfg
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.autoencoder = build_autoencoder(cfg).to(self.device)
        self.identity = autoencoder_identity(self.autoencoder)
        self.scaling = float(getattr(self.autoencoder, "scaling_factor", getattr(self.autoencoder, "scale", 1.0)))

    @torch.no_grad()
    def add_latents(self, key: str, members: dict[str, bytes]) -> dict[str, bytes]:
        """members + latents.npy, json with the `latents` record (other members untouched)."""
        from fyc_train.data.decode import decode_sample

        sample = {"__key__": key, **{ext: members[ext] for ext in ("mp4", "json", "mask.png")}}
        video = decode_sample(sample)["video"]  # (F, 3, H, W) in [-1, 1], as the loader gives it
        z = self.autoencoder.encode(video.to(self.device))  # (F, C, h, w), scaled
        latents = z.permute(1, 0, 2, 3).float().cpu().numpy().astype(self.cfg.dtype)
        meta = json.loads(members["json"])
        meta["latents"] = latents_record(self.identity, self.cfg.dtype, self.cfg.compute_dtype, self.scaling,
                                         latents.shape, video.shape[-2:])
        return {**members, "json": encode_json(meta), LATENTS_MEMBER: encode_npy(np.ascontiguousarray(latents))}
