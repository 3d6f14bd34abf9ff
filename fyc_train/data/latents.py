"""Precomputed latents: which autoencoder made them, and the check that training uses the same one.

A latent shard sample carries `<key>.latents.npy` ((C, F, h, w), already scaled: what
`FYCModel.autoencoder.encode` returns per frame) and a `latents` record in its json:

    {"autoencoder": {...identity...}, "dtype": "float32", "compute_dtype": "float32",
     "scaling_factor": 0.18215, "shape": [C, F, h, w], "clip_size": [H, W]}

The identity names the autoencoder exactly: the pixel-unshuffle one by its factor and scale (it
has no weights); the SD VAE by its scaling factor, latent channels and a fingerprint of its
weights. The fingerprint is taken over the weights cast to bfloat16, so the same VAE loaded in
fp32 (curation) or bf16 (training's frozen_dtype) has one identity.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

LATENTS_MEMBER = "latents.npy"
STORAGE_DTYPES = ("float32", "float16")


class LatentsMismatchError(ValueError):
    """Latent shards made by another autoencoder (or at another size) than the configured model's."""


@torch.no_grad()
def weights_fingerprint(module: torch.nn.Module) -> str:
    """sha256 over (name, shape, bf16 bytes) of every parameter and buffer, in state_dict order."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        if tensor.is_floating_point():
            digest.update(tensor.detach().to("cpu", torch.bfloat16).contiguous().view(torch.int16).numpy().tobytes())
        else:
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def autoencoder_identity(autoencoder: torch.nn.Module) -> dict[str, Any]:
    """What makes two autoencoders give the same latents (see the module docstring)."""
    config = autoencoder.config_dict() if hasattr(autoencoder, "config_dict") else {}
    kind = config.get("type")
    if kind == "pixel_unshuffle":
        return {"type": kind, "factor": int(config["factor"]), "scale": float(config["scale"]),
                "image_channels": int(config.get("image_channels", 3))}
    if kind == "sd_vae":
        vae = autoencoder.vae
        return {"type": kind, "scaling_factor": float(autoencoder.scaling_factor),
                "latent_channels": int(vae.config.latent_channels),
                "downscale_factor": int(autoencoder.downscale_factor),
                "weights_sha256": weights_fingerprint(vae)}
    raise ValueError(f"unknown autoencoder {type(autoencoder).__name__} (config {config}): "
                     "precomputed latents support the pixel_unshuffle and sd_vae autoencoders")


def describe(identity: dict[str, Any]) -> str:
    """`type=..., k=v, ...` (type first, then keys sorted: the json record's order is sorted)."""
    rest = sorted((k, v) for k, v in identity.items() if k != "type")
    return ", ".join(f"{k}={v}" for k, v in [("type", identity.get("type")), *rest])


def latents_record(identity: dict[str, Any], dtype: str, compute_dtype: str, scaling_factor: float,
                   shape: Sequence[int], clip_size: Sequence[int]) -> dict[str, Any]:
    return {"autoencoder": identity, "dtype": dtype, "compute_dtype": compute_dtype,
            "scaling_factor": float(scaling_factor), "shape": [int(s) for s in shape],
            "clip_size": [int(s) for s in clip_size]}


def encode_npy(latents: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, latents, allow_pickle=False)
    return buf.getvalue()


def first_latents_record(urls: Sequence[str]) -> tuple[str, dict[str, Any] | None] | None:
    """(shard, json `latents` record or None) of the first sample of the first readable local shard;
    None when no local shard could be read (remote shards are not downloaded for this check)."""
    from fyc_train.data.datamodule import first_sample_json

    found = first_sample_json(urls)
    return (found[0], found[1].get("latents")) if found else None


def check_latent_shards(urls: Sequence[str], autoencoder: torch.nn.Module,
                        resolution: Sequence[int] | None = None) -> dict[str, Any] | None:
    """Refuse latent shards the configured model cannot train on; returns the record (None: video shards).

    Raises LatentsMismatchError naming both autoencoders when the shards' latents were made by a
    different one, or when data.resolution asks for another size than the latents were made at
    (latents cannot be resized; video shards can).
    """
    found = first_latents_record(urls)
    if found is None or found[1] is None:
        return None
    shard, record = found
    configured = autoencoder_identity(autoencoder)
    made_by = dict(record.get("autoencoder") or {})
    if made_by != configured:
        raise LatentsMismatchError(
            f"the latent shards ({shard}) were made by autoencoder [{describe(made_by)}] but the model is "
            f"configured with autoencoder [{describe(configured)}]: train with the autoencoder that made "
            "them, or re-make the latents with this one (fyc-curate latents.enabled=true ...)")
    if resolution is not None and list(resolution) != list(record.get("clip_size") or []):
        raise LatentsMismatchError(
            f"data.resolution={list(resolution)} but the latent shards ({shard}) were made at clip size "
            f"{record.get('clip_size')}: precomputed latents cannot be resized; set data.resolution=null "
            "or re-make the latents from shards of that size")
    return record
