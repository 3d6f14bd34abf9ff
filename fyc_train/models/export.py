"""Export/import in diffusers format, round-tripping every FYC layer (safetensors, no pickle).

Layout of an exported model folder::

    unet/config.json                           UNetMotionModel config (in_channels = 2C+1)
    unet/diffusion_pytorch_model.safetensors   the UNetMotionModel state dict incl. MA layers
    unet/fyc_config.json                       FYCUNetConfig (input layout, MA, embeddings)
    unet/fyc_conditioning.safetensors          magnitude / FPS embeddings
    text_encoder/, tokenizer/ (CLIP)           or text_encoder/ (tiny; byte tokenizer)
    vae/ (SD)                                  AutoencoderKL; pixel-unshuffle needs no weights
    fyc_model.json                             which autoencoder / text encoder, trainable set,
                                               their weights' dtype (frozen_dtype)

``unet/`` loads with plain ``UNetMotionModel.from_pretrained`` too (MA keys are then reported
as unexpected and ignored). diffusers' ``save_motion_modules`` would drop conv_in, MA and the
embeddings, hence this module.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .checkpointing import ModelFolderError, require_files
from .unet import FYCUNet, FYCUNetConfig

UNET_WEIGHTS = "diffusion_pytorch_model.safetensors"
FYC_CONFIG = "fyc_config.json"
COND_WEIGHTS = "fyc_conditioning.safetensors"
MODEL_JSON = "fyc_model.json"


def _contiguous(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().contiguous().cpu() for k, v in sd.items()}


def save_fyc_unet(unet: FYCUNet, folder: str | Path) -> Path:
    """Write ``folder`` (config.json, weights, fyc_config.json, conditioning weights)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    unet.unet.save_config(str(folder))
    save_file(_contiguous(unet.unet.state_dict()), str(folder / UNET_WEIGHTS), metadata={"format": "pt"})
    cond = {}
    for name in ("magnitude_embedding", "fps_embedding"):
        mod = getattr(unet, name)
        if mod is not None:
            cond.update({f"{name}.{k}": v for k, v in mod.state_dict().items()})
    save_file(_contiguous(cond), str(folder / COND_WEIGHTS), metadata={"format": "pt"})
    (folder / FYC_CONFIG).write_text(json.dumps(unet.config.to_dict(), indent=2))
    return folder


def load_fyc_unet(folder: str | Path, device: str | torch.device = "cpu",
                  config_overrides: dict | None = None, strict: bool = True) -> FYCUNet:
    """Rebuild an :class:`FYCUNet` from :func:`save_fyc_unet` output.

    ``config_overrides`` changes FYC options before loading, e.g. ``{"motion_augment": True}``
    to start stage 2 from a stage-1 export: with ``strict=False`` the layers the export lacks
    (MA, embeddings) keep their zero initialisation; any other missing or unexpected weight
    is still an error.
    """
    from diffusers import UNetMotionModel

    folder = Path(folder)
    require_files(folder, ("config.json", UNET_WEIGHTS, FYC_CONFIG, COND_WEIGHTS), what="exported FYC U-Net")
    fyc_cfg = json.loads((folder / FYC_CONFIG).read_text())
    fyc_cfg.update(config_overrides or {})
    config = FYCUNetConfig.from_dict(fyc_cfg)
    unet_config = UNetMotionModel.load_config(str(folder))
    unet = FYCUNet(UNetMotionModel.from_config(unet_config), config)
    state = {f"unet.{k}": v for k, v in load_file(str(folder / UNET_WEIGHTS)).items()}
    state.update(load_file(str(folder / COND_WEIGHTS)))
    missing, unexpected = unet.load_state_dict(state, strict=False)
    new_layer = (".motion_augment.", "magnitude_embedding.", "fps_embedding.")
    bad_missing = [k for k in missing if strict or not any(s in k for s in new_layer)]
    if bad_missing or unexpected:
        raise ModelFolderError(
            f"exported FYC U-Net {folder} does not match its config: missing {bad_missing[:5]}"
            f"{'...' if len(bad_missing) > 5 else ''}, unexpected {unexpected[:5]}"
            f"{'...' if len(unexpected) > 5 else ''}"
        )
    return unet.to(device)


def _param_dtype(module: torch.nn.Module) -> str | None:
    param = next(module.parameters(), None)
    return None if param is None else str(param.dtype).removeprefix("torch.")


def _drop_source_path(config_json: Path) -> None:
    """diffusers writes where a model was loaded from (`_name_or_path`) into its config: a path
    on the training machine that means nothing elsewhere, so an export does not carry it."""
    config = json.loads(config_json.read_text())
    if config.pop("_name_or_path", None) is not None:
        config_json.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def save_fyc_model(model, folder: str | Path) -> Path:
    """Export a whole :class:`FYCModel` (U-Net, text encoder, autoencoder) to ``folder``.

    The export is self-contained (it names no path of the machine it was written on) and
    records the dtype of the frozen text encoder and VAE, so a model trained with
    ``frozen_dtype: bfloat16`` samples the same from its export as from its checkpoint."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_fyc_unet(model.unet, folder / "unet")
    model.text_encoder.save(folder)
    ae_cfg = model.autoencoder.config_dict()
    if ae_cfg["type"] == "sd_vae":
        model.autoencoder.vae.save_pretrained(str(folder / "vae"))
        _drop_source_path(folder / "vae" / "config.json")
    info = {"autoencoder": ae_cfg, "text_encoder": model.text_encoder.config_dict(),
            "trainable": model.trainable,
            "dtypes": {"text_encoder": _param_dtype(model.text_encoder),
                       "autoencoder": _param_dtype(model.autoencoder)}}
    (folder / MODEL_JSON).write_text(json.dumps(info, indent=2))
    return folder


def load_fyc_model(folder: str | Path, device: str | torch.device = "cpu",
                   trainable: str | None = None, gradient_checkpointing: bool = False):
    """Load :func:`save_fyc_model` output; everything from local files only."""
    from .autoencoder import PixelUnshuffleAutoencoder, SDAutoencoder
    from .fyc_model import FYCModel
    from .text import CLIPTextEncoder, TinyTextEncoder

    folder = Path(folder)
    require_files(folder, (MODEL_JSON,), what="exported FYC model")
    info = json.loads((folder / MODEL_JSON).read_text())
    unet = load_fyc_unet(folder / "unet")
    ae_cfg = dict(info["autoencoder"])
    ae_type = ae_cfg.pop("type")
    if ae_type == "pixel_unshuffle":
        ae = PixelUnshuffleAutoencoder(**ae_cfg)
    elif ae_type == "sd_vae":
        ae = SDAutoencoder.from_folder(folder, chunk_size=ae_cfg.get("chunk_size", 16))
    else:
        raise ModelFolderError(f"{folder / MODEL_JSON}: unknown autoencoder type {ae_type!r}")
    te_cfg = info["text_encoder"]
    if te_cfg["type"] == "tiny":
        text_encoder = TinyTextEncoder.load(folder, max_length=te_cfg["max_length"])
    elif te_cfg["type"] == "clip":
        text_encoder = CLIPTextEncoder.from_folder(folder)
    else:
        raise ModelFolderError(f"{folder / MODEL_JSON}: unknown text encoder type {te_cfg['type']!r}")
    for name, module in (("text_encoder", text_encoder), ("autoencoder", ae)):
        dtype = (info.get("dtypes") or {}).get(name)
        if dtype is not None and next(module.parameters(), None) is not None:
            if not isinstance(getattr(torch, dtype, None), torch.dtype):
                raise ModelFolderError(f"{folder / MODEL_JSON}: dtypes.{name}={dtype!r} is not a torch dtype")
            module.to(getattr(torch, dtype))  # as trained (the loaders' default dtypes differ)
    model = FYCModel(unet, ae, text_encoder, trainable=trainable or info.get("trainable", "motion"),
                     gradient_checkpointing=gradient_checkpointing)
    return model.to(device)
