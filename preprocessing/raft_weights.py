"""Load torchvision's RAFT (`raft_small` / `raft_large`) with real pretrained weights.

`weights="default"`: torchvision's own pretrained weights (`Raft_*_Weights.DEFAULT`) through its
download cache ($TORCH_HOME/hub/checkpoints). `weights=PATH`: a local checkpoint, either in
torchvision's key format or in the original princeton-vl/RAFT format (keys prefixed `module.`,
`fnet.`/`cnet.`/`update_block.encoder.`... names), which is detected and converted at load. The
renames map the two codebases' module names one to one (verified on raft_small: identical flow); the
raft_large-only entries (norm layers, two-GRU update block, mask head) follow the two codebases
but are unverified here for lack of an original raft_large checkpoint. torchvision ships no
converter for the original format, hence the small table below.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchvision.models import optical_flow

MODELS = {
    "raft_small": (optical_flow.raft_small, optical_flow.Raft_Small_Weights),
    "raft_large": (optical_flow.raft_large, optical_flow.Raft_Large_Weights),
}

# Original RAFT name -> torchvision name (applied in order, after dropping `module.`).
_ORIGINAL_RENAMES: list[tuple[str, str]] = [
    (r"^fnet\.", "feature_encoder."),
    (r"^cnet\.", "context_encoder."),
    (r"^(feature_encoder|context_encoder)\.conv1\.", r"\1.convnormrelu.0."),
    (r"^(feature_encoder|context_encoder)\.conv2\.", r"\1.conv."),
    (r"\.(layer\d+\.\d+)\.conv(\d)\.", r".\1.convnormrelu\2.0."),
    # Norm layers (batch norm in raft_large's context encoder; raft_small's have no params).
    (r"^(feature_encoder|context_encoder)\.norm1\.", r"\1.convnormrelu.1."),
    (r"\.(layer\d+\.\d+)\.norm(\d)\.", r".\1.convnormrelu\2.1."),
    (r"^update_block\.encoder\.convc1\.", "update_block.motion_encoder.convcorr1.0."),
    (r"^update_block\.encoder\.convc2\.", "update_block.motion_encoder.convcorr2.0."),
    (r"^update_block\.encoder\.convf1\.", "update_block.motion_encoder.convflow1.0."),
    (r"^update_block\.encoder\.convf2\.", "update_block.motion_encoder.convflow2.0."),
    (r"^update_block\.encoder\.conv\.", "update_block.motion_encoder.conv.0."),
    # raft_large's SepConvGRU has two GRUs (convz1/convz2 ...), raft_small's ConvGRU one.
    (r"^update_block\.gru\.conv([zrq])([12])\.", r"update_block.recurrent_block.convgru\2.conv\1."),
    (r"^update_block\.gru\.", "update_block.recurrent_block.convgru1."),
    (r"^update_block\.mask\.0\.", "mask_predictor.convrelu.0."),  # raft_large only
    (r"^update_block\.mask\.2\.", "mask_predictor.conv."),
]


class RaftWeightsError(RuntimeError):
    pass


def is_original_format(state_dict: dict[str, Any]) -> bool:
    return any(k.startswith(("module.", "fnet.", "cnet.", "update_block.encoder.")) for k in state_dict)


def convert_original(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename the original RAFT checkpoint's keys to torchvision's."""
    converted = {}
    for key, value in state_dict.items():
        new = key[len("module."):] if key.startswith("module.") else key
        for pattern, repl in _ORIGINAL_RENAMES:
            new = re.sub(pattern, repl, new)
        converted[new] = value
    # The original ResidualBlock registers its downsample norm twice (`norm3` and
    # `downsample.1`): drop the alias, torchvision keeps only `downsample.1`.
    for key in [k for k in converted if re.search(r"\.convnormrelu3\.1\.", k)]:
        alias = re.sub(r"\.convnormrelu3\.1\.", ".downsample.1.", key)
        if alias in converted and torch.equal(converted[alias], converted[key]):
            del converted[key]
    return converted


def _unwrap(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(obj, dict):
        for wrapper in ("state_dict", "model", "model_state_dict"):
            if wrapper in obj and isinstance(obj[wrapper], dict):
                return _unwrap(obj[wrapper], path)
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return obj
    raise RaftWeightsError(f"{path}: not a RAFT state dict (got {type(obj).__name__})")


def load_state_dict_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a checkpoint (torchvision or original RAFT format) as torchvision-named tensors."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise RaftWeightsError(f"flow.weights={path}: file not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise RaftWeightsError(f"flow.weights={path}: cannot read as a torch checkpoint: {exc}") from exc
    state = _unwrap(obj, path)
    return convert_original(state) if is_original_format(state) else state


def _strict_load(model: nn.Module, state: dict[str, torch.Tensor], source: str, name: str) -> None:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = sorted(
        f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}"
        for k, v in expected.items() if k in state and state[k].shape != v.shape
    )
    if missing or unexpected or shapes:
        def few(keys: list[str]) -> str:
            return ", ".join(keys[:5]) + (f" ... ({len(keys)} in all)" if len(keys) > 5 else "")
        parts = [f"{source} does not match torchvision's {name}"]
        if missing:
            parts.append(f"missing keys: {few(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {few(unexpected)}")
        if shapes:
            parts.append(f"shape mismatches: {few(shapes)}")
        parts.append("check flow.model (raft_small / raft_large) and flow.weights")
        raise RaftWeightsError("; ".join(parts))
    model.load_state_dict(state, strict=True)


def _default_state_dict(name: str, allow_download: bool) -> tuple[dict[str, torch.Tensor], str]:
    weights_enum = MODELS[name][1].DEFAULT
    url = weights_enum.url
    cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)
    advice = (
        f"pass flow.weights=PATH to a local checkpoint (torchvision or original RAFT format), "
        f"or pre-populate the cache: put {os.path.basename(url)} (from {url}) at {cached} "
        f"($TORCH_HOME={os.environ.get('TORCH_HOME', '<unset>')})"
    )
    if not cached.is_file() and not allow_download:
        raise RaftWeightsError(f"{name} default weights are not cached at {cached}; {advice}")
    try:
        # torchvision's own loader: reads the cache, downloads into it on a miss.
        state = weights_enum.get_state_dict(progress=False)
    except Exception as exc:
        raise RaftWeightsError(
            f"cannot load {name} default weights ({exc.__class__.__name__}: {exc}); {advice}"
        ) from exc
    return state, f"torchvision:{weights_enum}"


def file_digest(path: str | os.PathLike) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()[:16]


def load_raft(
    model: str = "raft_small",
    weights: str = "default",
    device: str | torch.device = "cpu",
    allow_download: bool = True,
) -> nn.Module:
    """RAFT in eval mode with real weights. `model.weights_id` says which weights were loaded."""
    if model not in MODELS:
        raise ValueError(f"flow.model must be one of {sorted(MODELS)}, got {model!r}")
    builder = MODELS[model][0]
    net = builder(weights=None, progress=False)
    if str(weights) == "default":
        state, weights_id = _default_state_dict(model, allow_download)
        source = weights_id
    else:
        state = load_state_dict_file(weights)
        source = f"flow.weights={weights}"
        weights_id = f"sha256:{file_digest(Path(weights).expanduser())}"
    _strict_load(net, state, source, model)
    net.weights_id = weights_id  # recorded in the sample json next to the configured value
    return net.eval().to(device)
