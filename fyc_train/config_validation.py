"""Validate a composed fyc-train config before anything heavy (data scan, model build, fork).

Hydra already rejects `key=value` overrides of keys that do not exist (struct mode); what it
cannot see are typos inside YAML files (experiments, groups) and `+key=value` additions, wrong
enum values, and facts about the data. Checks, each error naming the key:
- every node with a `_target_`: keys must be parameters of the target (the target's signature
  is the schema, so it never drifts from the code), values must match Literal/number/bool
  annotations (allowed values listed);
- nodes without a `_target_` (paths, export): keys must be the ones the conf/ files declare
  (every option of the group, e.g. conf/train/paths/*.yaml, or the node in conf/train/train.yaml), so a
  `+paths.chekpoint_dir=...` typo is named instead of silently ignored; `callbacks` / `logger`
  entries must be components (`_target_`) or null;
- top-level keys, probabilities in [0, 1], positive sizes, W&B mode;
- `data.shards` / `data.val_shards` expand to existing files (missing shard named);
- the clip size (data.resolution, else the first shard's json) divisible by the autoencoder's
  downscale factor.
"""

from __future__ import annotations

import difflib
import inspect
import types
import typing
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

from hydra.utils import get_object
from omegaconf import DictConfig, OmegaConf
from fyc_conf import APPS, config_dir

TOP_LEVEL_KEYS = {
    "paths", "model", "data", "trainer", "logger", "callbacks", "module", "task_name", "run_name",
    "seed", "ckpt_path", "checkpoint_every_n_steps", "objective", "export", "validate_only_config",
    "experiment", "hparams_search", "hydra", "sampling",
}
HYDRA_KEYS = {"_target_", "_recursive_", "_convert_", "_partial_", "_args_"}
WANDB_MODES = ("online", "offline", "disabled", "shared")
CONF_DIR = Path(config_dir("train"))
COMPONENT_CONTAINERS = ("callbacks", "logger")  # name -> component; any name, null disables one


class ConfigError(ValueError):
    """An invalid fyc-train config; the message names the key and what is allowed."""


def _unknown_key_message(path: str, key: str, allowed: set[str]) -> str:
    close = difflib.get_close_matches(key, sorted(allowed), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"{path}.{key}: unknown key{hint}; allowed keys: {sorted(allowed)}"


def _literal_values(hint: Any) -> tuple[list[Any], bool] | None:
    """Allowed values if `hint` is made only of Literals (and None); else None."""
    origin = typing.get_origin(hint)
    if origin is typing.Literal:
        return list(typing.get_args(hint)), False
    if origin in (typing.Union, types.UnionType):
        values, nullable = [], False
        for arg in typing.get_args(hint):
            if arg is type(None):
                nullable = True
                continue
            sub = _literal_values(arg)
            if sub is None:
                return None
            values += sub[0]
            nullable |= sub[1]
        return values, nullable
    return None


def _check_value(path: str, value: Any, hint: Any) -> str | None:
    literal = _literal_values(hint)
    if literal is not None:
        values, nullable = literal
        if value is None and nullable:
            return None
        if value not in values:
            return f"{path}={value!r}: not an allowed value; allowed: {values + ([None] if nullable else [])}"
        return None
    if hint is bool and not isinstance(value, bool):
        return f"{path}={value!r}: must be true or false"
    if hint in (int, float) and (isinstance(value, bool) or not isinstance(value, (int, float))):
        return f"{path}={value!r}: must be a number ({hint.__name__})"
    return None


def _target_params(target: Any) -> tuple[dict[str, inspect.Parameter], dict[str, Any]] | None:
    fn = target.__init__ if inspect.isclass(target) else target
    try:
        params = dict(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return None
    params.pop("self", None)
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # unresolvable forward references in third-party code: skip type checks
        hints = {}
    return params, hints


def check_targets(node: Any, path: str, errors: list[str]) -> None:
    """Recursively check every `_target_` node: keys against the signature, values against hints."""
    if isinstance(node, Mapping):
        if "_target_" in node:
            try:
                target = get_object(node["_target_"])
            except Exception as exc:
                errors.append(f"{path}._target_={node['_target_']!r} cannot be imported: {exc}")
                return
            found = _target_params(target)
            if found is not None:
                params, hints = found
                has_kwargs = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
                allowed = {n for n, p in params.items() if p.kind is not inspect.Parameter.VAR_KEYWORD}
                for key, value in node.items():
                    if key in HYDRA_KEYS:
                        continue
                    if key not in allowed and not has_kwargs:
                        errors.append(_unknown_key_message(path, key, allowed))
                    elif key in hints and not isinstance(value, Mapping):
                        message = _check_value(f"{path}.{key}", value, hints[key])
                        if message:
                            errors.append(message)
        for key, value in node.items():
            if isinstance(value, (Mapping, list)):
                check_targets(value, f"{path}.{key}" if path else str(key), errors)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            check_targets(value, f"{path}[{i}]", errors)


@cache
def declared_keys(node: str) -> frozenset[str]:
    """Keys the conf/ files declare for a top-level node without `_target_`: the union over the
    options of its group (conf/<node>/*.yaml), else the node in conf/train/train.yaml. Read from the
    YAML itself so the schema never drifts from the defaults."""
    from omegaconf import OmegaConf

    group = CONF_DIR / node
    if group.is_dir():
        keys: set[str] = set()
        for option in sorted(group.glob("*.yaml")):
            loaded = OmegaConf.load(option)
            keys |= {str(k) for k in loaded if k != "defaults"} if isinstance(loaded, Mapping) else set()
        return frozenset(keys)
    declared = OmegaConf.load(CONF_DIR / "train.yaml").get(node)
    return frozenset(str(k) for k in declared) if isinstance(declared, Mapping) else frozenset()


def check_plain_nodes(plain: Mapping, errors: list[str]) -> None:
    """Top-level nodes without `_target_`: unknown keys named with the allowed ones."""
    for name, node in plain.items():
        if not isinstance(node, Mapping) or "_target_" in node:
            continue
        allowed = declared_keys(str(name))
        if name in COMPONENT_CONTAINERS:
            for key, value in node.items():
                if value is None or (isinstance(value, Mapping) and "_target_" in value):
                    continue
                # settings left on an entry the chosen option disabled (experiment sets
                # callbacks.ema.decay, callbacks=minimal sets ema: null): off, as the CLI treats it
                if isinstance(value, Mapping) and key in allowed:
                    continue
                errors.append(f"{name}.{key}={value!r}: not a {name} entry; each must be a component with a "
                              f"`_target_` (or null to disable it); known entries: {sorted(allowed)}")
            continue
        if not allowed:  # a node the conf/ files do not declare (e.g. hydra): nothing to check against
            continue
        errors += [_unknown_key_message(str(name), str(k), set(allowed)) for k in node if k not in allowed]


def autoencoder_factor(model_cfg: Mapping) -> int | None:
    """Downscale factor of the configured autoencoder, read from the config (no model build)."""
    ae = model_cfg.get("autoencoder")
    if isinstance(ae, Mapping) and "factor" in ae:
        return int(ae["factor"])
    target = str(model_cfg.get("_target_", ""))
    if target.endswith("build_tiny"):
        return 2  # build_tiny's default pixel-unshuffle factor
    if "sd15" in target or "pretrained_path" in model_cfg:
        return 8  # Stable Diffusion VAE
    return None


def _check_ranges(cfg: Mapping, errors: list[str]) -> None:
    module, data = cfg.get("module") or {}, cfg.get("data") or {}
    for key in ("caption_dropout", "motion_prompt_dropout", "first_frame_dropout"):
        value = module.get(key)
        if isinstance(value, (int, float)) and not 0 <= value <= 1:
            errors.append(f"module.{key}={value}: a probability, must be in [0, 1]")
    ratio = module.get("first_frame_mask_ratio")
    for r in ratio if isinstance(ratio, list) else [ratio] if ratio is not None else []:
        if not isinstance(r, (int, float)) or not 0 <= r <= 1:
            errors.append(f"module.first_frame_mask_ratio={ratio}: ratios must be numbers in [0, 1]")
    for key, low in (("lr", 0.0), ("min_snr_gamma", 0.0), ("lr_schedule_steps", 0)):
        value = module.get(key)
        if isinstance(value, (int, float)) and value <= low:
            errors.append(f"module.{key}={value}: must be > {low}")
    for key, low in (("batch_size", 1), ("steps_per_epoch", 1), ("num_workers", 0), ("val_batches", 1),
                     ("num_frames", 1), ("shuffle_buffer", 1)):
        value = data.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value < low:
            errors.append(f"data.{key}={value}: must be >= {low}")
    resolution = data.get("resolution")
    if resolution is not None and (not isinstance(resolution, list) or len(resolution) != 2
                                   or not all(isinstance(v, int) and v > 0 for v in resolution)):
        errors.append(f"data.resolution={resolution}: must be null or [H, W] (positive integers)")
    for name, logger in (cfg.get("logger") or {}).items():
        if isinstance(logger, Mapping) and str(logger.get("_target_", "")).endswith("WandbLogger"):
            mode = logger.get("mode")
            if mode is not None and mode not in WANDB_MODES:
                errors.append(f"logger.{name}.mode={mode!r}: not an allowed value; allowed: {list(WANDB_MODES)}")
    trainable = (cfg.get("model") or {}).get("trainable")
    if trainable is not None:
        from fyc_train.models.fyc_model import TRAINABLE_CHOICES

        if trainable not in TRAINABLE_CHOICES:
            errors.append(f"model.trainable={trainable!r}: not an allowed value; allowed: {list(TRAINABLE_CHOICES)}")
    sampling = cfg.get("sampling")
    if isinstance(sampling, Mapping):
        from fyc_train.sampling.settings import SamplerSettings, check_sampler_values

        known = {k: v for k, v in sampling.items() if k in SamplerSettings.keys()}  # unknown: check_plain_nodes
        errors += check_sampler_values(known, prefix="sampling.")
    fyc = (cfg.get("model") or {}).get("fyc")
    if isinstance(fyc, Mapping):
        from fyc_train.models.unet import FYCUNetConfig
        import dataclasses

        known = {f.name for f in dataclasses.fields(FYCUNetConfig)}
        errors += [_unknown_key_message("model.fyc", k, known) for k in fyc if k not in known]


def _check_data(cfg: Mapping, errors: list[str]) -> None:
    from fyc_train.data.datamodule import first_clip_meta
    from fyc_train.data.shards import expand_shards

    data = cfg.get("data") or {}
    try:
        urls = expand_shards(data.get("shards"), "data.shards")
        if data.get("val_shards"):
            expand_shards(data.get("val_shards"), "data.val_shards")
    except FileNotFoundError as exc:
        errors.append(str(exc))
        return
    factor = autoencoder_factor(cfg.get("model") or {})
    if factor is None:
        return
    if data.get("resolution"):
        h, w = data["resolution"]
        where = "data.resolution"
    else:
        meta = first_clip_meta(urls)
        clip = (meta or {}).get("clip") or {}
        if "height" not in clip:
            return
        h, w = int(clip["height"]), int(clip["width"])
        where = f"clip size of data.shards (first shard's json, {urls[0]}); set data.resolution"
    if h % factor or w % factor:
        errors.append(f"{where}: {h}x{w} is not divisible by the autoencoder's downscale factor {factor}")


def mandatory_key_errors(cfg: DictConfig, config_name: str = "train") -> list[str]:
    """Every `???` key left unset: still missing, or filled by an earlier file's value because
    OmegaConf's merge never lets `???` replace one (fyc_train/utils/mandatory_keys.py). The
    composition (choices, command-line overrides) comes from Hydra's runtime config, or from the
    `hydra` node of compose(..., return_hydra_config=True)."""
    from hydra.core.hydra_config import HydraConfig

    from fyc_train.utils.mandatory_keys import unfilled_mandatory_keys

    hydra_node = cfg.hydra if "hydra" in cfg else HydraConfig.get() if HydraConfig.initialized() else None
    ours = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]) if "hydra" in cfg else cfg
    errors = [f"{key}: mandatory (`???`) but not set; pass {key}=..." for key in OmegaConf.missing_keys(ours)]
    if hydra_node is not None:
        name = OmegaConf.select(hydra_node, "job.config_name", default=None) or config_name
        app_dir = Path(config_dir(name)) if name in APPS else CONF_DIR
        errors += unfilled_mandatory_keys(ours, app_dir, name, dict(hydra_node.runtime.choices),
                                          list(hydra_node.overrides.task))
    return errors


def validate_config(cfg: DictConfig, check_data: bool = True) -> dict[str, Any]:
    """Raise ConfigError listing every problem; return the resolved config as plain containers."""
    mandatory = mandatory_key_errors(cfg)
    if mandatory:
        raise ConfigError("invalid fyc-train config: mandatory keys not set:\n  " + "\n  ".join(mandatory))
    if "hydra" in cfg:  # compose(..., return_hydra_config=True): Hydra's own node is not ours to check
        cfg = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    try:
        plain = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except Exception as exc:  # MissingMandatoryValue / InterpolationResolutionError name the key
        raise ConfigError(f"config: {exc}") from exc
    errors: list[str] = []
    errors += [_unknown_key_message("<top level>", k, TOP_LEVEL_KEYS).replace("<top level>.", "")
               for k in plain if k not in TOP_LEVEL_KEYS]
    check_targets({k: v for k, v in plain.items() if k != "module"}, "", errors)
    check_plain_nodes(plain, errors)
    module = dict(plain.get("module") or {})
    module.pop("model", None)
    check_targets(module, "module", errors)
    _check_ranges(plain, errors)
    if check_data and not errors:
        _check_data(plain, errors)
    if errors:
        raise ConfigError("invalid fyc-train config:\n  " + "\n  ".join(errors))
    return plain
