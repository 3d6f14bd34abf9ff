"""Load what fyc-sample needs from a checkpoint without executing pickled code.

Two formats: a Lightning training checkpoint (`*.ckpt` / `*.pt`, read with
`torch.load(weights_only=True)`: tensors and plain containers only), or an exported
diffusers-format folder (safetensors + JSON, read by fyc_train.models.export).

A training checkpoint rebuilds its model from the Hydra config it stores (`fyc.model_config`);
for SD1.5 that config names the base model folders (`pretrained_path`, `motion_adapter_path`)
as they were on the training machine, and a checkpoint with `save_frozen_weights: false` needs
them for every frozen weight. `model_paths` re-points them (fyc-sample `pretrained_path=...
motion_adapter_path=...`); a folder that is not there is named with the override to use. An
export holds every weight and needs neither.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import pickle
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .masks import SamplingInputError
from .pipeline import FirstFrameLayout, make_scheduler

log = logging.getLogger(__name__)

# Sampling metadata next to an exported model (magnitude quantiles, schedule, layout, data).
SAMPLING_JSON = "fyc_sampling.json"

CKPT_SUFFIXES = (".ckpt", ".pt", ".pth")


def detect_format(path: str | Path) -> str:
    """'lightning' or 'diffusers'; raise SamplingInputError for anything else (no loading)."""
    path = Path(path)
    if path.is_dir():
        if any((path / n).exists() for n in ("fyc_model.json", "model_index.json", "unet")):
            return "diffusers"
        raise SamplingInputError(
            f"checkpoint={path} is a folder but not an exported FYC model (no fyc_model.json or unet/: "
            "export one with fyc_train.models.export.save_fyc_model, or pass a .ckpt)."
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


# Only the project's own builders may be named by a checkpoint's model_config: a `_target_`
# read from a file is code to run, so it is checked against this allow-list first.
ALLOWED_BUILDERS = (
    "fyc_train.models.build_tiny", "fyc_train.models.build.build_tiny",
    "fyc_train.models.build_sd15", "fyc_train.models.build.build_sd15",
)


@dataclass
class LoadedCheckpoint:
    """Everything sampling needs from a checkpoint."""
    model: torch.nn.Module
    scheduler_config: dict[str, Any]
    magnitude_quantiles: dict[str, float]
    layout: FirstFrameLayout
    num_frames: int = 16
    size: tuple[int, int] | None = None  # (H, W) the model was trained at, if known
    fps: float | None = None
    sampling: dict[str, Any] | None = None  # the experiment's sampler settings (fyc_train.sampling.settings)

    def scheduler(self, clean_last_step: bool = True):
        return make_scheduler(self.scheduler_config, clean_last_step=clean_last_step)

    def sample_size(self, image_hw: tuple[int, int]) -> tuple[int, int]:
        """Training size if known, else the image's size rounded down to a multiple the U-Net
        accepts (autoencoder factor x U-Net downsampling)."""
        if self.size is not None:
            return tuple(self.size)
        unet = self.model.unet.unet
        mult = int(self.model.autoencoder.downscale_factor) * 2 ** (len(unet.config.block_out_channels) - 1)
        h, w = (max(mult, (s // mult) * mult) for s in image_hw)
        return h, w


# model_config keys that name base-model folders -> what they hold (for error messages)
MODEL_FOLDER_KEYS = {"pretrained_path": "Stable Diffusion 1.5 folder (unet/, vae/, text_encoder/, tokenizer/)",
                     "motion_adapter_path": "AnimateDiff MotionAdapter folder"}


def repoint_model_folders(model_config: Mapping[str, Any], model_paths: Mapping[str, Any] | None,
                          where: str) -> dict[str, Any]:
    """``model_config`` with its base-model folders replaced by ``model_paths`` (non-null values);
    raises SamplingInputError naming a folder that does not exist and the override to use."""
    config = dict(model_config)
    overrides = {k: v for k, v in dict(model_paths or {}).items() if v is not None}
    for key in overrides:
        if key not in config:
            log.warning("%s=%s ignored: %s's model (%s) uses no such folder", key, overrides[key], where,
                        config.get("_target_"))
    for key, what in MODEL_FOLDER_KEYS.items():
        if key not in config:
            continue
        if key in overrides:
            log.info("%s: %s re-pointed %s -> %s", where, key, config[key], overrides[key])
            config[key] = str(overrides[key])
        folder = Path(str(config[key])).expanduser()
        if not folder.is_dir():
            source = f"given as {key}=" if key in overrides else f"the checkpoint's model.{key} from training"
            raise SamplingInputError(
                f"{where}: the {what} {folder} does not exist on this machine ({source}). If the model "
                f"folders moved, pass {key}=<its new location> (and the other of "
                f"{' / '.join(k + '=' for k in MODEL_FOLDER_KEYS)} if it moved too)."
            )
    return config


def _build_model(model_config: Mapping[str, Any] | None, where: str,
                 model_paths: Mapping[str, Any] | None = None) -> torch.nn.Module:
    if not model_config or "_target_" not in model_config:
        raise SamplingInputError(
            f"{where} has no fyc.model_config (the model's Hydra config): cannot rebuild the "
            "model. Was it written by fyc-train? Export it with fyc_train.models.export instead."
        )
    if model_config["_target_"] not in ALLOWED_BUILDERS:
        raise SamplingInputError(
            f"{where}: model_config._target_={model_config['_target_']!r} is not one of the "
            f"project's builders {ALLOWED_BUILDERS}; refusing to run it."
        )
    from hydra.utils import instantiate

    from fyc_train.models.checkpointing import ModelFolderError

    config = repoint_model_folders(model_config, model_paths, where)
    try:
        return instantiate(config)
    except ModelFolderError as err:  # the folder exists but lacks files: same advice
        raise SamplingInputError(
            f"{where}: {err}. Point {' / '.join(k + '=' for k in MODEL_FOLDER_KEYS if k in config)} "
            "at a complete copy of the base model."
        ) from err


def _ema_shadow(ckpt: Mapping[str, Any]) -> list[torch.Tensor] | None:
    for key, state in (ckpt.get("callbacks") or {}).items():
        if "EMA" in str(key) and isinstance(state, Mapping) and state.get("shadow_params"):
            return list(state["shadow_params"])
    return None


def _load_lightning(path: Path, use_ema: bool, model_paths: Mapping[str, Any] | None = None) -> LoadedCheckpoint:
    ckpt = safe_torch_load(path)
    if not isinstance(ckpt, Mapping) or "state_dict" not in ckpt:
        raise SamplingInputError(f"checkpoint={path} has no state_dict: not a fyc-train checkpoint.")
    fyc = dict(ckpt.get("fyc") or {})
    model = _build_model(fyc.get("model_config"), f"checkpoint={path}", model_paths)
    state = {k[len("model."):]: v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
    # strict=False only for frozen weights a run may leave out (save_frozen_weights=false):
    # they come from the base model that model_config rebuilds. Trainable ones must be there.
    result = model.load_state_dict(state, strict=False)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    missing = sorted(set(result.missing_keys) & set(trainable))
    if missing or result.unexpected_keys:
        raise SamplingInputError(
            f"checkpoint={path} does not match the model its config builds: missing "
            f"{missing[:5]}, unexpected {result.unexpected_keys[:5]}."
        )
    if use_ema:
        shadow = _ema_shadow(ckpt)
        params = [p for _, p in model.named_parameters() if p.requires_grad]
        if shadow is None:
            log.warning("checkpoint=%s holds no EMA weights: sampling with the raw weights", path)
        elif len(shadow) != len(params) or any(s.shape != p.shape for s, p in zip(shadow, params)):
            raise SamplingInputError(
                f"checkpoint={path}: its EMA weights do not line up with the model's trainable "
                "parameters; sample with use_ema=false."
            )
        else:  # EMACallback keeps the shadow in the order of the trainable parameters
            with torch.no_grad():
                for p, s in zip(params, shadow):
                    p.copy_(s.to(p.dtype))
    data = dict(fyc.get("data") or {})
    size = data.get("size")
    if size is None and fyc.get("model_config", {}).get("image_size"):
        size = [int(fyc["model_config"]["image_size"])] * 2
    layout = {k: v for k, v in dict(fyc.get("layout") or {}).items() if k in FirstFrameLayout.__dataclass_fields__}
    return LoadedCheckpoint(
        model=model, scheduler_config=_scheduler_config(fyc.get("noise_scheduler")),
        magnitude_quantiles=dict(fyc.get("magnitude_quantiles") or {}),
        layout=FirstFrameLayout(**layout) if layout else _layout_from_model(model),
        num_frames=int(data.get("num_frames", 16)), size=tuple(size) if size else None,
        fps=data.get("stride") if getattr(model.config, "fps_embedding", False) else None,
        sampling=fyc.get("sampling"),
    )


def _scheduler_config(config: Mapping[str, Any] | None) -> dict[str, Any]:
    return {k: v for k, v in dict(config or {}).items() if not str(k).startswith("_")}


def _layout_from_model(model: torch.nn.Module) -> FirstFrameLayout:
    c = model.config
    return FirstFrameLayout(c.channel_order, c.mask_frames, c.first_frame_frames)


def _load_exported(path: Path, model_paths: Mapping[str, Any] | None = None) -> LoadedCheckpoint:
    try:
        from fyc_train.models.export import load_fyc_model
    except ImportError as err:
        raise SamplingInputError(f"checkpoint={path}: exported folders need fyc_train.models.export ({err}).") from err
    given = sorted(k for k, v in dict(model_paths or {}).items() if v is not None)
    if given:
        log.info("%s ignored for checkpoint=%s: an exported folder holds every weight itself", given, path)
    model = load_fyc_model(path)
    extra = {}
    if (path / SAMPLING_JSON).is_file():
        extra = json.loads((path / SAMPLING_JSON).read_text())
    elif (path / "scheduler" / "scheduler_config.json").is_file():
        extra = {"noise_scheduler": json.loads((path / "scheduler" / "scheduler_config.json").read_text())}
    layout = {k: v for k, v in dict(extra.get("layout") or {}).items() if k in FirstFrameLayout.__dataclass_fields__}
    data = dict(extra.get("data") or {})
    return LoadedCheckpoint(
        model=model, scheduler_config=_scheduler_config(extra.get("noise_scheduler")),
        magnitude_quantiles=dict(extra.get("magnitude_quantiles") or {}),
        layout=FirstFrameLayout(**layout) if layout else _layout_from_model(model),
        num_frames=int(data.get("num_frames", 16)),
        size=tuple(data["size"]) if data.get("size") else None,
        sampling=extra.get("sampling"),
    )


def load_for_sampling(path: str | Path, use_ema: bool = True, device: torch.device | str = "cpu",
                      dtype: torch.dtype = torch.float32,
                      model_paths: Mapping[str, Any] | None = None) -> LoadedCheckpoint:
    """Rebuild the model (EMA weights by default) and read the sampling metadata.

    ``model_paths``: ``{"pretrained_path": ..., "motion_adapter_path": ...}`` (null values
    ignored) re-point a training checkpoint's base-model folders, e.g. on another machine."""
    path = Path(path)
    fmt = detect_format(path)
    loaded = _load_lightning(path, use_ema, model_paths) if fmt == "lightning" else _load_exported(path, model_paths)
    loaded.model.eval().to(device)
    if dtype != torch.float32:
        loaded.model.unet.to(dtype)
    return loaded


def save_sampling_metadata(folder: str | Path, loaded: LoadedCheckpoint) -> Path:
    """Write `fyc_sampling.json` into an exported model folder, so sampling from the folder
    uses the same schedule, input layout, speed quantiles and clip shape as the checkpoint."""
    info = {
        "noise_scheduler": loaded.scheduler_config,
        "layout": dataclasses.asdict(loaded.layout),
        "magnitude_quantiles": loaded.magnitude_quantiles,
        "data": {"num_frames": loaded.num_frames, **({"size": list(loaded.size)} if loaded.size else {})},
        **({"sampling": dict(loaded.sampling)} if loaded.sampling is not None else {}),
    }
    path = Path(folder) / SAMPLING_JSON
    path.write_text(json.dumps(info, indent=2))
    return path
