"""Sampler settings a checkpoint carries, and which value wins when a command samples from it.

A recipe is evaluated with particular sampler settings (MovingShapes: 1 DDIM step, CFG 1.25,
the motion prompt in the MA layers only, the model's own frame 0); a checkpoint sampled with
other ones looks worse than it is. So every experiment has a `sampling:` block (conf/train/train.yaml
holds the defaults), fyc-train stores it in the checkpoint (`fyc.sampling`) and in an export's
`fyc_sampling.json` (`sampling`), and fyc-sample / fyc-eval-shapes use it. Precedence, per key:

    command line (a non-null value)  >  the checkpoint's `sampling`  >  the command's fallback

The fallback is for checkpoints written before the block existed: :class:`SamplerSettings`'s
defaults (= conf/train/train.yaml's `sampling:`) for fyc-sample, conf/eval_shapes/eval_shapes.yaml's
`sampling_fallback` for fyc-eval-shapes.
"""
from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

COMMAND_LINE, CHECKPOINT, FALLBACK = "command line", "checkpoint", "fallback"


@dataclass(frozen=True)
class SamplerSettings:
    """How FYCPipeline samples (the defaults are the paper's inference settings)."""
    steps: int = 25                        # DDIM steps (trailing spacing)
    guidance: float = 7.5                  # classifier-free guidance scale; 1.0 = no CFG
    guidance_rescale: float = 0.0          # zero-SNR paper's CFG rescale; 0 = plain CFG
    prompt_in_spatial: bool | None = None  # short prompt also in spatial attention; None = the model's
                                           # fyc.short_prompt_in_spatial
    impose_first_frame: bool = True        # re-impose the input as frame 0 at every step
    clean_last_step: bool = True           # DDIM's last step returns x0 (set_alpha_to_one)

    @classmethod
    def keys(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_sampler_values(values: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Messages for every invalid value (unknown keys included), each naming ``prefix + key``."""
    errors = []
    known = SamplerSettings.keys()
    for key, value in values.items():
        name = f"{prefix}{key}"
        if key not in known:
            errors.append(f"{name}: unknown sampler setting; known: {list(known)}")
        elif value is None:
            if key != "prompt_in_spatial":
                errors.append(f"{name}=null: give a value (only prompt_in_spatial may be null: the model's own)")
        elif key == "steps" and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            errors.append(f"{name}={value!r}: must be an integer >= 1 (DDIM steps)")
        elif key == "guidance" and (not _is_number(value) or value < 1.0):
            errors.append(f"{name}={value!r}: must be >= 1.0 (1.0 = no classifier-free guidance)")
        elif key == "guidance_rescale" and (not _is_number(value) or not 0.0 <= value <= 1.0):
            errors.append(f"{name}={value!r}: must be in [0, 1] (0 = plain CFG)")
        elif key in ("prompt_in_spatial", "impose_first_frame", "clean_last_step") and not isinstance(value, bool):
            errors.append(f"{name}={value!r}: must be true or false")
    return errors


def resolve_sampler_settings(
    command_line: Mapping[str, Any],
    stored: Mapping[str, Any] | None,
    fallback: SamplerSettings | Mapping[str, Any] | None = None,
) -> tuple[SamplerSettings, dict[str, str]]:
    """Per key: a non-null command-line value, else the checkpoint's, else the fallback.

    Returns the settings and, per key, where its value came from ("command line",
    "checkpoint", "fallback"). A key the checkpoint stores but this version does not know is
    logged and ignored (a newer fyc wrote it); invalid values raise ValueError naming the key
    and where it came from.
    """
    fallback = fallback if isinstance(fallback, SamplerSettings) else SamplerSettings(**dict(fallback or {}))
    stored = dict(stored or {})
    unknown = sorted(set(stored) - set(SamplerSettings.keys()))
    if unknown:
        log.warning("the checkpoint's sampler settings %s are unknown to this version: ignored", unknown)
    values, sources = {}, {}
    for key in SamplerSettings.keys():
        if command_line.get(key) is not None:
            values[key], sources[key] = command_line[key], COMMAND_LINE
        elif key in stored:
            values[key], sources[key] = stored[key], CHECKPOINT
        else:
            values[key], sources[key] = getattr(fallback, key), FALLBACK
    errors = [f"{message} (from the {sources[key]})" for key in values
              for message in check_sampler_values({key: values[key]})]
    if errors:
        raise ValueError("invalid sampler settings: " + "; ".join(errors))
    values["guidance"] = float(values["guidance"])
    values["guidance_rescale"] = float(values["guidance_rescale"])
    return SamplerSettings(**values), sources


def describe(settings: SamplerSettings, sources: Mapping[str, str], model_prompt_in_spatial: bool | None = None) -> str:
    """One line: every setting, its value and where it came from."""
    parts = []
    for key in SamplerSettings.keys():
        value = getattr(settings, key)
        shown = (f"null (the model's: {model_prompt_in_spatial})" if value is None and key == "prompt_in_spatial"
                 else value)
        parts.append(f"{key}={shown} ({sources[key]})")
    return "sampler settings: " + ", ".join(parts)
