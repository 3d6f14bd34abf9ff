"""fyc-sample: image + click(s) / mask / box + short motion prompt -> video + contact sheet.

All user input is checked (files, clicks, mask sizes, checkpoint format, speed) before the
model is loaded, so a typo costs seconds, not a model load. Sampler settings (steps, guidance,
prompt_in_spatial, impose_first_frame, ...) left null come from the checkpoint: the `sampling:`
block of the experiment it was trained with (fyc_train/sampling/settings.py).
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from PIL import Image

from fyc_train.sampling.checkpoint_loading import detect_format, load_for_sampling
from fyc_train.sampling.contact_sheet import save_contact_sheet
from fyc_train.sampling.masks import (
    SamplingInputError, box_to_mask, check_box, check_points, fit_mask_to_image, load_image,
    load_mask_png, union,
)
from fyc_train.sampling.pipeline import FYCPipeline
from fyc_train.sampling.settings import SamplerSettings, check_sampler_values, describe, resolve_sampler_settings
from fyc_train.sampling.speed import SPEED_QUANTILES, resolve_magnitude
from fyc_train.sampling.video_io import check_output_path, write_video
from fyc_conf import config_dir

log = logging.getLogger("fyc-sample")
CONFIG_DIR = config_dir("sample")  # absolute: works from any cwd


@dataclass
class Request:
    """A validated sampling request: everything a model run needs, at the input's size."""
    image: Image.Image
    masks: np.ndarray  # bool (R, H, W)
    prompts: list[str]
    output: Path


def _plain(x: Any) -> Any:
    return OmegaConf.to_container(x, resolve=True) if OmegaConf.is_config(x) else x


def _as_list(x: Any) -> list | None:
    x = _plain(x)
    return None if x is None else (x if isinstance(x, list) else [x])


def _clicks(cfg: DictConfig) -> tuple[np.ndarray | None, np.ndarray | None]:
    if cfg.click is not None and cfg.clicks is not None:
        raise SamplingInputError("give click=[x,y] or clicks=[[x,y],...], not both.")
    raw = _plain(cfg.clicks if cfg.clicks is not None else cfg.click)
    if raw is None:
        return None, None
    points = np.asarray(raw, dtype=np.float64).reshape(-1, 2)
    labels = _as_list(cfg.labels)
    labels = np.ones(len(points), dtype=np.int64) if labels is None else np.asarray(labels)
    if labels.shape != (len(points),) or not np.isin(labels, (0, 1)).all():
        raise SamplingInputError(f"labels={labels.tolist()}: need one 1 (object) or 0 (not the object) per click ({len(points)} clicks).")
    return points, labels


def regions_from_config(cfg: DictConfig, image: Image.Image) -> np.ndarray:
    """mask= / click(s)= / box= -> bool (R, H, W) at the image size."""
    w, h = image.size
    points, labels = _clicks(cfg)
    box = _plain(cfg.box)
    given = [name for name, v in (("mask", cfg.mask), ("click", points), ("box", box)) if v is not None]
    if not given:
        raise SamplingInputError("say what moves: mask=PATH.png, click=[x,y] (with sam.checkpoint=...) or box=[x0,y0,x1,y1].")
    if cfg.mask is not None:
        if len(given) > 1:
            raise SamplingInputError(f"give mask= alone, not together with {given[1:]}.")
        paths = _as_list(cfg.mask)
        return np.stack([fit_mask_to_image(load_mask_png(p), h, w, f"mask={p}") for p in paths])
    if points is not None:
        check_points(points, h, w)  # before loading SAM
    if box is not None:
        check_box(box, h, w)
    if points is None and not cfg.sam.checkpoint:
        log.warning("no sam.checkpoint: using box=%s itself as the mask", box)
        return box_to_mask(box, h, w)[None]
    from fyc_train.sampling.sam import ClickSegmenter, load_sam  # SAM only when clicks need it

    segmenter = ClickSegmenter(load_sam(cfg.sam.checkpoint, cfg.sam.model_type), cfg.sam.device)
    rgb = np.asarray(image)
    if cfg.click_mode == "per_click" and points is not None:
        negatives = points[labels == 0]
        groups = [np.concatenate([p[None], negatives]) for p in points[labels == 1]]
        group_labels = [np.array([1] + [0] * len(negatives)) for _ in groups]
    elif cfg.click_mode in ("object", "per_click"):
        groups, group_labels = [points], [labels]
    else:
        raise SamplingInputError(f"click_mode={cfg.click_mode}: use object or per_click.")
    masks = [
        fit_mask_to_image(segmenter.segment(rgb, g, gl, box), h, w, "SAM mask (click elsewhere)")
        for g, gl in zip(groups, group_labels)
    ]
    return np.stack(masks)


DTYPES = ("float32", "float16", "bfloat16")
CLICK_MODES = ("object", "per_click")
_DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(:\d+)?")


def _number(cfg: DictConfig, key: str) -> float:
    value = cfg[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{key}={value!r}: must be a number.")
    return float(value)


def check_run_settings(cfg: DictConfig) -> None:
    """Settings read only after the model load (device, dtype, fps, guidance, ...): checked first,
    so a typo fails in seconds instead of after loading a multi-GB checkpoint."""
    device = str(cfg.device)
    if not _DEVICE_PATTERN.fullmatch(device):
        raise ValueError(f"device={device}: allowed values are auto, cpu, cuda, cuda:N (N = GPU index).")
    if device.startswith("cuda"):
        index = int(device.split(":")[1]) if ":" in device else 0
        count = torch.cuda.device_count()
        if index >= count:
            raise ValueError(f"device={device}: this machine has {count} CUDA device(s); use auto, cpu"
                             + (f" or cuda:0..cuda:{count - 1}." if count else "."))
    if cfg.dtype not in DTYPES:
        raise ValueError(f"dtype={cfg.dtype}: allowed values are {', '.join(DTYPES)}.")
    if cfg.click_mode not in CLICK_MODES:
        raise ValueError(f"click_mode={cfg.click_mode}: allowed values are {', '.join(CLICK_MODES)}.")
    if _number(cfg, "fps") <= 0:
        raise ValueError(f"fps={cfg.fps}: must be > 0 (frames per second of the written video).")
    # sampler settings given here (null ones come from the checkpoint, checked when read)
    errors = check_sampler_values(sampler_overrides(cfg))
    if errors:
        raise ValueError("; ".join(errors) + ".")


def sampler_overrides(cfg: DictConfig) -> dict[str, Any]:
    """The sampler settings this command gives (non-null); the rest come from the checkpoint."""
    return {k: _plain(cfg[k]) for k in SamplerSettings.keys() if cfg.get(k) is not None}


def model_paths(cfg: DictConfig) -> dict[str, Any]:
    """Base-model folders that re-point a training checkpoint's (null: as stored)."""
    return {k: cfg.get(k) for k in ("pretrained_path", "motion_adapter_path")}


def build_request(cfg: DictConfig) -> Request:
    """Check every user input; raise SamplingInputError/ValueError naming the culprit."""
    output = check_output_path(cfg.output)
    detect_format(cfg.checkpoint)
    check_run_settings(cfg)
    if cfg.speed is not None and cfg.speed not in SPEED_QUANTILES:
        raise ValueError(f"speed={cfg.speed}: choose slow, medium or fast (or set magnitude=).")
    if cfg.num_frames is not None and int(cfg.num_frames) < 1:
        raise ValueError(f"num_frames={cfg.num_frames}: must be a positive integer.")
    image = load_image(cfg.image)
    masks = regions_from_config(cfg, image)
    prompts = [str(p) for p in _as_list(cfg.prompt)]
    if len(prompts) > 1 and len(prompts) != len(masks):
        raise SamplingInputError(
            f"{len(prompts)} prompts for {len(masks)} regions: give one prompt (all regions move "
            "together) or one per region (mask=[a.png,b.png] or click_mode=per_click)."
        )
    if len(prompts) == 1 and len(masks) > 1:
        masks = union(masks)[None]
    return Request(image=image, masks=masks, prompts=prompts, output=output)


def resize_request(req: Request, size: tuple[int, int]) -> tuple[Image.Image, np.ndarray]:
    """Image (bicubic) and masks (nearest) to the sampling size (H, W)."""
    h, w = size
    if req.image.size == (w, h):
        return req.image, req.masks
    log.info("resizing input %dx%d -> %dx%d", *req.image.size, w, h)
    img = req.image.resize((w, h), Image.Resampling.BICUBIC)
    masks = np.stack([
        np.asarray(Image.fromarray(m.astype(np.uint8) * 255).resize((w, h), Image.Resampling.NEAREST)) > 127
        for m in req.masks
    ])
    for i, m in enumerate(masks):
        fit_mask_to_image(m, h, w, f"region {i} after resizing to {w}x{h}")
    return img, masks


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def run(cfg: DictConfig) -> Path:
    req = build_request(cfg)
    device = _device(cfg.device)
    loaded = load_for_sampling(cfg.checkpoint, use_ema=cfg.use_ema, device=device,
                               dtype=getattr(torch, cfg.dtype), model_paths=model_paths(cfg))
    settings, sources = resolve_sampler_settings(sampler_overrides(cfg), loaded.sampling, SamplerSettings())
    log.info("%s", describe(settings, sources, loaded.model.config.short_prompt_in_spatial))
    magnitude = resolve_magnitude(cfg.magnitude, cfg.speed, loaded.magnitude_quantiles)
    log.info("magnitude %.3g%s", magnitude, f" (speed={cfg.speed})" if cfg.magnitude is None and cfg.speed else "")
    size = tuple(_plain(cfg.size)) if cfg.size is not None else loaded.sample_size(req.image.size[::-1])
    image, masks = resize_request(req, size)
    pipe = FYCPipeline(
        loaded.model, loaded.scheduler(settings.clean_last_step), prompt_in_spatial=settings.prompt_in_spatial,
        impose_first_frame=settings.impose_first_frame, layout=loaded.layout,
        default_num_frames=loaded.num_frames, fps=loaded.fps,
    )
    frames = pipe(
        image, masks, req.prompts if len(req.prompts) > 1 else req.prompts[0],
        caption=cfg.caption, magnitude=magnitude, num_frames=cfg.num_frames, steps=settings.steps,
        guidance=settings.guidance, guidance_rescale=settings.guidance_rescale, seed=cfg.seed,
    )
    write_video(frames, req.output, fps=cfg.fps)
    log.info("wrote %s (%d frames, %dx%d)", req.output, *frames.shape[:3])
    if cfg.contact_sheet:
        sheet = req.output.with_name(req.output.stem + "_sheet.png")
        save_contact_sheet(
            sheet, image=np.asarray(image), mask=masks.any(0), frames=frames,
            lines=[f"prompt: {' | '.join(req.prompts)}", f"caption: {cfg.caption or ''}",
                   f"magnitude: {magnitude:.3g}" + (f" (speed={cfg.speed})" if cfg.speed and cfg.magnitude is None else ""),
                   f"seed {cfg.seed}, {settings.steps} steps, guidance {settings.guidance}",
                   f"checkpoint: {Path(str(cfg.checkpoint)).name}"],
        )
        log.info("wrote %s", sheet)
    return req.output


@hydra.main(config_path=CONFIG_DIR, config_name="sample", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from fyc_train.config_validation import mandatory_key_errors

    if missing := mandatory_key_errors(cfg, "sample"):  # before loading any model
        log.error("mandatory keys not set:\n  %s", "\n  ".join(missing))
        raise SystemExit(2)
    try:
        run(cfg)
    except (SamplingInputError, ValueError, FileNotFoundError) as err:
        log.error("%s", err)
        raise SystemExit(2) from err


if __name__ == "__main__":
    main()
