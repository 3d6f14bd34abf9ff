"""MovingShapes evaluation loop: held-out scenes -> real FYCPipeline -> metrics.

One function, `evaluate_model`, used by `fyc-eval-shapes`, the curve benchmark and the
end-to-end test (in-process, no subprocess):

1. draw held-out scenes (held-out colours and shapes, new positions) at the model's training
   size, keeping only scenes where the target can travel the largest requested distance in
   all four directions without leaving the frame or touching another object;
2. render each scene, encode it with H.264 and decode it back (training data went through the
   same codec): the decoded frame 0 is the input image and the reference for I1-MSE;
3. click the target (mask = its frame-0 mask), ask the pipeline for every direction x every
   magnitude ("move <direction>", no caption: a caption that states a direction would bypass
   the motion prompt), with frame 0 re-imposed during sampling or not (`impose_modes`);
4. measure each video with `fyc_train.eval.moving_shapes.evaluate_video` against the scene
   rendered with the requested motion, and summarise per mode.

Magnitudes are in the model's unit: px per sampled step at the preprocessing flow
resolution, so the requested speed in generated pixels is magnitude * H / flow_size.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import logging
import math
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import av
import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from fyc_train.eval.moving_shapes import evaluate_video, summarize
from fyc_train.models.motion_augment import motion_augment_modules
from fyc_train.sampling.checkpoint_loading import LoadedCheckpoint
from fyc_train.sampling.contact_sheet import make_contact_sheet
from fyc_train.sampling.pipeline import FYCPipeline
from preprocessing.synthetic.moving_shapes import (
    DIRECTIONS,
    SceneSpec,
    fits_every_direction,
    motion_prompt,
    object_mask,
    render_frames,
    sample_scene,
    with_motion,
    write_mp4,
)

log = logging.getLogger(__name__)

ABLATIONS = ("none", "ma_zero", "untrained")
GOALS = {  # the MovingShapes goals (docs/moving_shapes.md)
    "direction_accuracy": (">=", 0.9), "locality": (">=", 0.9), "speed_spearman": (">=", 0.9),
    "speed_within_30pct": (">=", 0.9), "i1_mse": ("<", 25.0),
}


# ---------------------------------------------------------------------------------- scenes
def held_out_scenes(num_scenes: int, seed: int, size: tuple[int, int], num_frames: int,
                    max_speed: float, max_tries: int = 5000) -> list[SceneSpec]:
    """`num_scenes` held-out scenes whose target can move `max_speed` px/frame any way."""
    rng = np.random.default_rng([seed, 7_140_917])  # a stream of its own: not the corpus's
    scenes: list[SceneSpec] = []
    for _ in range(max_tries):
        # Its own motion only decides where sample_scene may place it; the request replaces it.
        spec = sample_scene(rng, size, num_frames, speed_range=(0.5, max(max_speed, 0.5)), held_out=True)
        if fits_every_direction(spec, num_frames, max_speed):
            scenes.append(spec)
            if len(scenes) == num_scenes:
                return scenes
    raise ValueError(
        f"found only {len(scenes)} of {num_scenes} held-out {size[0]}x{size[1]} scenes where the target can "
        f"move {max_speed:.2f} px/frame for {num_frames} frames in every direction: ask for smaller "
        "magnitudes, fewer frames, or a larger flow_size"
    )


def through_h264(frames: np.ndarray, fps: float = 8.0) -> np.ndarray:
    """Encode with the corpus's H.264 settings and decode back: uint8 (F, H, W, 3)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "clip.mp4"
        write_mp4(frames, path, fps)
        with av.open(str(path)) as container:
            decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    if len(decoded) != len(frames):
        raise RuntimeError(f"H.264 round trip returned {len(decoded)} of {len(frames)} frames")
    return np.stack(decoded)


# ---------------------------------------------------------------------------------- model
def speeds_px_per_frame(magnitudes: Sequence[float], height: int, flow_size: int) -> dict[float, float]:
    """Requested magnitude (flow pixels at the training data's flow.size) -> px/frame at `height`."""
    return {float(m): float(m) * height / flow_size for m in magnitudes}


def motion_requests(spec: SceneSpec, magnitudes: Sequence[float],
                    speed_of: dict[float, float]) -> Iterator[tuple[str, float, SceneSpec]]:
    """(direction, magnitude, the scene with its target moving so) for every evaluated motion: the
    held-out video set of `fyc-eval-shapes` and `bench/moving_shapes_locality.py`."""
    for direction in DIRECTIONS:
        for magnitude in magnitudes:
            yield direction, float(magnitude), with_motion(spec, spec.target, direction, speed_of[float(magnitude)])


def untrained_like(loaded: LoadedCheckpoint, checkpoint: str | Path) -> LoadedCheckpoint:
    """The same model freshly initialised (its config's seed), for an untrained baseline: the
    checkpoint's model_config is rebuilt with the allow-listed project builder."""
    from hydra.utils import instantiate

    from fyc_train.sampling.checkpoint_loading import ALLOWED_BUILDERS, safe_torch_load

    config = dict((safe_torch_load(checkpoint).get("fyc") or {}).get("model_config") or {})
    if config.get("_target_") not in ALLOWED_BUILDERS:
        raise ValueError(f"ablate=untrained: {checkpoint} has no model_config built by a project builder")
    fresh = instantiate(config).eval().to(next(loaded.model.parameters()).device)
    return dataclasses.replace(loaded, model=fresh)


def zero_motion_augment(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of the model whose MA layers output exactly zero (output projection zeroed):
    the motion prompt then reaches the U-Net through no path but the spatial text."""
    model = copy.deepcopy(model)
    modules = motion_augment_modules(model.unet.unet)
    if not modules:
        raise ValueError("ablate=ma_zero: the model has no motion-augmentation layers")
    with torch.no_grad():
        for module in modules:
            module.attn.to_out[0].weight.zero_()
            if module.attn.to_out[0].bias is not None:
                module.attn.to_out[0].bias.zero_()
    return model


# ---------------------------------------------------------------------------------- loop
def _sheet(image, mask, videos: list[tuple[str, np.ndarray]]) -> Image.Image:
    sheets = [make_contact_sheet(image=image, mask=mask, frames=v, lines=[label], tile=96) for label, v in videos]
    width = max(s.width for s in sheets)
    out = Image.new("RGB", (width, sum(s.height for s in sheets)), "white")
    y = 0
    for s in sheets:
        out.paste(s, (0, y))
        y += s.height
    return out


def evaluate_model(
    loaded: LoadedCheckpoint,
    num_scenes: int = 8,
    seed: int = 0,
    magnitudes: Sequence[float] = (2.0, 3.5, 5.0),
    flow_size: int = 128,
    num_frames: int = 8,
    steps: int = 8,
    guidance: float = 1.0,
    impose_modes: Sequence[bool] = (False, True),
    ablate: str = "none",
    prompt_in_spatial: bool | None = None,
    out_dir: str | Path | None = None,
    metric_flow_size: int = 256,
    progress: bool = True,
    checkpoint: str | Path | None = None,
    clean_last_step: bool = True,
    guidance_rescale: float = 0.0,
) -> dict[str, Any]:
    """Evaluate a loaded model on held-out MovingShapes scenes; returns (and, with `out_dir`,
    writes as metrics.json) {"config", "summary": {mode: summarize(...)}, "rows": [...]}.
    `ablate`: "ma_zero" zeroes the MA output; "untrained" evaluates the same architecture
    freshly initialised (needs `checkpoint`, the path `loaded` came from). `clean_last_step`:
    DDIM's last step returns x0 (False: keeps ~0.03 of the noise, see `make_scheduler`)."""
    if ablate not in ABLATIONS:
        raise ValueError(f"ablate={ablate!r} is not one of {list(ABLATIONS)}")
    if not magnitudes or min(magnitudes) <= 0:
        raise ValueError(f"magnitudes must be positive numbers, got {list(magnitudes)}")
    if ablate == "untrained" and checkpoint is None:
        raise ValueError("ablate=untrained needs the checkpoint path (its model_config)")
    if ablate == "untrained":
        loaded = untrained_like(loaded, checkpoint)
    model = zero_motion_augment(loaded.model) if ablate == "ma_zero" else loaded.model
    height, width = loaded.size or (64, 64)
    speed_of = speeds_px_per_frame(magnitudes, height, flow_size)
    scenes = held_out_scenes(num_scenes, seed, (height, width), num_frames, max(speed_of.values()))
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        (out / "sheets").mkdir(parents=True, exist_ok=True)

    rows: list[dict[str, Any]] = []
    results: dict[str, list] = {}
    total = len(scenes) * len(DIRECTIONS) * len(magnitudes) * len(impose_modes)
    bar = tqdm(total=total, desc="eval videos", disable=not progress)
    for s, spec in enumerate(scenes):
        scene_id = f"scene{s:03d}"
        clip = through_h264(render_frames(spec, num_frames))
        image, mask = clip[0], object_mask(spec, spec.target, 0)
        sheet_videos: list[tuple[str, np.ndarray]] = []
        for impose in impose_modes:
            mode = "impose_first_frame" if impose else "model_first_frame"
            pipe = FYCPipeline(model, scheduler=loaded.scheduler(clean_last_step), impose_first_frame=impose,
                               layout=loaded.layout, default_num_frames=num_frames, fps=loaded.fps,
                               prompt_in_spatial=prompt_in_spatial)
            for direction, magnitude, request in motion_requests(spec, magnitudes, speed_of):
                video = pipe(image, mask, motion_prompt(direction), caption=None, magnitude=magnitude,
                             num_frames=num_frames, steps=steps, guidance=guidance,
                             guidance_rescale=guidance_rescale, seed=seed + s,
                             progress=False)
                result = evaluate_video(video, request, stride=1, image=image, flow_size=metric_flow_size,
                                        group=f"{scene_id}/{direction}")
                results.setdefault(mode, []).append(result)
                rows.append({"mode": mode, "scene": scene_id, "magnitude": float(magnitude), **result.as_dict()})
                if not impose and magnitude == magnitudes[len(magnitudes) // 2]:
                    sheet_videos.append((f"move {direction}, magnitude {magnitude:g}: measured "
                                         f"{result.direction_measured} {result.speed_measured:.2f} px/f", video))
                bar.update()
        if out is not None and sheet_videos:
            _sheet(image, mask, sheet_videos).save(out / "sheets" / f"{scene_id}.png")
    bar.close()
    report = {
        "config": dict(num_scenes=num_scenes, seed=seed, magnitudes=[float(m) for m in magnitudes],
                       speeds_px_per_frame=[speed_of[float(m)] for m in magnitudes], flow_size=flow_size,
                       size=[height, width], num_frames=num_frames, steps=steps, guidance=guidance, ablate=ablate,
                       prompt_in_spatial=prompt_in_spatial, metric_flow_size=metric_flow_size,
                       clean_last_step=clean_last_step, guidance_rescale=guidance_rescale),
        "summary": {mode: summarize(rs) for mode, rs in results.items()},
        "rows": rows,
    }
    if out is not None:
        (out / "metrics.json").write_text(json.dumps(_finite(report), indent=2))
    return report


def _finite(obj: Any) -> Any:
    """JSON has no NaN: write null instead."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if dataclasses.is_dataclass(obj):
        return _finite(dataclasses.asdict(obj))
    return obj


def format_table(report: dict[str, Any]) -> str:
    """Summary metrics per mode, with the goals, as a Markdown table."""
    keys = ["direction_accuracy", "locality", "fraction_still", "speed_spearman", "speed_spearman_within_scene",
            "speed_within_30pct", "speed_rel_error", "i1_mse"]
    modes = list(report["summary"])
    lines = ["| metric | goal | " + " | ".join(modes) + " |", "| --- | --- | " + " | ".join("---" for _ in modes) + " |"]
    for key in keys:
        goal = " ".join(str(x) for x in GOALS[key]) if key in GOALS else ""
        values = []
        for mode in modes:
            v = report["summary"][mode].get(key)
            values.append("nan" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3g}")
        lines.append(f"| {key} | {goal} | " + " | ".join(values) + " |")
    return "\n".join(lines)
