"""Load what fyc-sample needs from a checkpoint without executing pickled code.

Two formats: a Lightning training checkpoint (`*.ckpt` / `*.pt`, read with
`torch.load(weights_only=True)`: tensors and plain containers only), or an exported
diffusers-format folder (safetensors + JSON, read by fyc_train.models.export).
"""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch

from .masks import SamplingInputError

CKPT_SUFFIXES = (".ckpt", ".pt", ".pth")


def detect_format(path: str | Path) -> str:
    """'lightning' or 'diffusers'; raise SamplingInputError for anything else (no loading)."""
    path = Path(path)
    if path.is_dir():
        if (path / "model_index.json").is_file() or (path / "fyc_config.json").is_file() or (path / "unet").is_dir():
            return "diffusers"
        raise SamplingInputError(
            f"checkpoint={path} is a folder but not an exported FYC model (no model_index.json, "
            "fyc_config.json or unet/). Export one with fyc_train.models.export or pass a .ckpt."
        )
    if not path.exists():
        raise SamplingInputError(f"checkpoint={path}: no such file or folder.")
    if path.suffix.lower() in CKPT_SUFFIXES:
        return "lightning"
    raise SamplingInputError(
        f"checkpoint={path}: unknown checkpoint format '{path.suffix}'. Give a fyc-train "
        "checkpoint (.ckpt) or an exported diffusers folder."
    )


def safe_torch_load(path: str | Path) -> dict[str, Any]:
    """torch.load(weights_only=True): a file that needs pickled objects is refused."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise SamplingInputError(
            f"checkpoint={path} contains pickled Python objects, which are refused (loading "
            "them could run arbitrary code). Checkpoints from fyc-train hold only tensors and "
            f"plain containers; re-save this one that way. ({str(err).splitlines()[0]})"
        ) from err
    except RuntimeError as err:
        raise SamplingInputError(f"checkpoint={path} is not a readable torch checkpoint: {err}") from err
