"""MovingShapes: a synthetic corpus of clips with known motion and captions that describe it.

Public API (rendering lives in `render.py`, captions in `captions.py`, re-exported here):
- `sample_scene(rng, size, ...) -> SceneSpec`
- `render_frames(spec, num_frames, stride=1) -> uint8 (F, H, W, 3)`
- `object_mask(spec, index, frame=0) -> bool (H, W)`,
  `reachable_region(spec, index, num_frames, stride=1) -> bool (H, W)`
- `describe_scene(spec, rng) -> str`, `motion_prompt(direction) -> "move left"`
- `fits_every_direction(spec, num_frames, speed) -> bool`
- `generate_corpus(out_dir, num_videos, seed, ...) -> Path` of `manifest.csv`
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import av
import cv2
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from preprocessing.synthetic.captions import describe_scene, motion_prompt
from preprocessing.synthetic.render import (
    BACKGROUND_COLORS,
    BACKGROUND_KINDS,
    DIRECTIONS,
    HELD_OUT_COLORS,
    HELD_OUT_SHAPES,
    TRAIN_COLORS,
    TRAIN_SHAPES,
    BackgroundSpec,
    SceneSpec,
    ShapeObject,
    contrasts,
    object_bbox,
    object_coverage,
    object_mask,
    reachable_region,
    render_frame,
    render_frames,
    with_motion,
)

__all__ = [
    "DIRECTIONS",
    "HELD_OUT_COLORS",
    "HELD_OUT_SHAPES",
    "MANIFEST_COLUMNS",
    "TRAIN_COLORS",
    "TRAIN_SHAPES",
    "BackgroundSpec",
    "SceneSpec",
    "ShapeObject",
    "describe_scene",
    "fits_every_direction",
    "generate_corpus",
    "motion_prompt",
    "object_bbox",
    "object_coverage",
    "object_mask",
    "reachable_region",
    "render_frame",
    "render_frames",
    "sample_scene",
    "with_motion",
    "write_mp4",
]

log = logging.getLogger(__name__)

MANIFEST_COLUMNS = ("video", "caption", "id", "motion_prompt", "direction", "speed", "shape", "color",
                    "bbox", "scene", "num_frames", "fps", "height", "width", "split")
EXTENT = 1.35  # farthest point of any shape from its centre, in units of `size` (diamond, triangle)
SPLIT_SEED = {"train": 0, "held_out": 1}  # disjoint random streams for the two splits
MAX_SCENE_TRIES = 5000  # rejection sampling of a scene that fits every direction


def _extent(size: float) -> float:
    return EXTENT * size + 1.0  # +1: anti-aliased rim


def _check_fits(height: int, width: int, num_frames: int, speed_max: float, size_min: float) -> None:
    free = min(height, width) - 1 - 2 * _extent(size_min)
    travel = speed_max * (num_frames - 1)
    if travel > free:
        fits = max(free, 0) / max(num_frames - 1, 1)
        raise ValueError(
            f"speed_range max {speed_max} px/frame over {num_frames} frames travels {travel:.0f} px, but a "
            f"{height}x{width} frame leaves {free:.0f} px for the object to stay in view; use a max speed "
            f"<= {fits:.2f}, fewer frames, or a larger size"
        )


def _boxes_overlap(a: Sequence[float], b: Sequence[float], margin: float) -> bool:
    return not (a[2] + margin < b[0] or b[2] + margin < a[0] or a[3] + margin < b[1] or b[3] + margin < a[1])


def _swept_box(obj: ShapeObject, num_frames: int) -> tuple[float, float, float, float]:
    e = _extent(obj.size)
    (x0, y0), (x1, y1) = obj.center(0), obj.center(num_frames - 1)
    return min(x0, x1) - e, min(y0, y1) - e, max(x0, x1) + e, max(y0, y1) + e


def sample_scene(
    rng: np.random.Generator,
    size: tuple[int, int] = (96, 96),
    num_frames: int = 24,
    speed_range: tuple[float, float] = (0.5, 3.0),
    held_out: bool = False,
    num_moving: tuple[int, int] = (1, 1),
    num_static: tuple[int, int] = (1, 2),
    static: bool = False,
    size_range: tuple[float, float] = (0.07, 0.11),
) -> SceneSpec:
    """Draw a random scene of `size` = (H, W) whose moving objects stay fully in view for
    `num_frames` native frames. `held_out` draws colours and shapes from the held-out split;
    `static=True` makes a scene where nothing moves. `size_range` is the object radius as a
    fraction of min(H, W). Object 0 (`spec.target`) is the moving object the ground truth
    describes."""
    height, width = size
    radius_min, radius_max = (f * min(height, width) for f in size_range)
    _check_fits(height, width, num_frames, speed_range[1], radius_min)
    colors = HELD_OUT_COLORS if held_out else TRAIN_COLORS
    shapes = HELD_OUT_SHAPES if held_out else TRAIN_SHAPES

    bg_name = str(rng.choice(sorted(BACKGROUND_COLORS)))
    background = BackgroundSpec(
        kind=str(rng.choice(sorted(BACKGROUND_KINDS))), color_name=bg_name, rgb=BACKGROUND_COLORS[bg_name],
        seed=int(rng.integers(2**31)), contrast=float(rng.uniform(0.08, 0.22)),
    )
    palette = [c for c in sorted(colors) if contrasts(colors[c], background.rgb)]
    palette = [str(c) for c in rng.permutation(palette)]  # distinct colours within a scene

    n_moving = 0 if static else int(rng.integers(num_moving[0], num_moving[1] + 1))
    n_static = int(rng.integers(num_static[0], num_static[1] + 1))
    if static:
        n_static = max(n_static, 1)
    objects: list[ShapeObject] = []
    boxes: list[tuple[float, float, float, float]] = []
    for k in range(min(n_moving + n_static, len(palette))):
        moving = k < n_moving
        for _attempt in range(100):
            obj = _sample_object(rng, height, width, num_frames, palette[k], colors, shapes,
                                 (radius_min, radius_max), speed_range if moving else None)
            box = _swept_box(obj, num_frames)
            if not any(_boxes_overlap(box, other, margin=2.0) for other in boxes):
                objects.append(obj)
                boxes.append(box)
                break
        else:
            if k == 0:  # cannot happen with _check_fits passed: the frame is empty
                raise RuntimeError("could not place the target object")
    return SceneSpec(height=height, width=width, background=background, objects=objects, target=0)


def _sample_object(rng, height, width, num_frames, color, colors, shapes, radius_range, speed_range) -> ShapeObject:
    shape = str(rng.choice(shapes))
    radius = float(rng.uniform(*radius_range))
    angle = 0.0 if shape in ("disc", "ring", "square", "diamond") else float(rng.uniform(-10, 10))
    direction, speed = None, 0.0
    if speed_range is not None:
        direction = str(rng.choice(sorted(DIRECTIONS)))
        speed = float(rng.uniform(*speed_range))
        travel = speed * (num_frames - 1)
        axis_len = width if direction in ("left", "right") else height
        # Shrink the object if it is too large to cross the frame at this speed (bounded below
        # by radius_range[0], which _check_fits guarantees fits).
        radius = min(radius, ((axis_len - 1 - travel) / 2 - 1) / EXTENT)
    e = _extent(radius)
    x = float(rng.uniform(e, width - 1 - e))
    y = float(rng.uniform(e, height - 1 - e))
    if direction is not None:
        dx, dy = DIRECTIONS[direction]
        travel = speed * (num_frames - 1)
        if dx:  # start so that the whole path stays in view
            lo, hi = (e + travel, width - 1 - e) if dx < 0 else (e, width - 1 - e - travel)
            x = float(rng.uniform(lo, hi))
        else:
            lo, hi = (e + travel, height - 1 - e) if dy < 0 else (e, height - 1 - e - travel)
            y = float(rng.uniform(lo, hi))
    return ShapeObject(shape=shape, color_name=color, rgb=colors[color], size=radius, x=x, y=y,
                       direction=direction, speed=speed, angle=angle)


def fits_every_direction(spec: SceneSpec, num_frames: int, speed: float, margin_px: int = 3) -> bool:
    """The target stays fully in view and away from the other objects whatever direction it
    is asked to move at `speed` px/frame for `num_frames` frames."""
    obj = spec.objects[spec.target]
    extent = _extent(obj.size)
    travel = speed * (num_frames - 1)
    if not (extent + travel <= obj.x <= spec.width - 1 - extent - travel
            and extent + travel <= obj.y <= spec.height - 1 - extent - travel):
        return False
    others = np.zeros((spec.height, spec.width), dtype=bool)
    for k in range(len(spec.objects)):
        if k != spec.target:
            others |= object_mask(spec, k, 0)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * margin_px + 1, 2 * margin_px + 1))
    for direction in DIRECTIONS:
        region = reachable_region(with_motion(spec, spec.target, direction, speed), spec.target, num_frames)
        if margin_px > 0:
            region = cv2.dilate(region.astype(np.uint8), kernel) > 0
        if (region & others).any():
            return False
    return True


def _scene_for_every_direction(rng, size, num_frames, speed_range, speed_max, held_out, num_moving, num_static,
                               size_range, motions_per_scene) -> SceneSpec:
    """Rejection-sample a scene whose target can move `speed_max` px/frame any way."""
    for _ in range(MAX_SCENE_TRIES):
        # The target's own motion only decides where sample_scene places it; with_motion replaces it.
        spec = sample_scene(rng, size, num_frames, (speed_range[0], speed_max), held_out, num_moving, num_static,
                            False, size_range)
        if fits_every_direction(spec, num_frames, speed_max):
            return spec
    raise ValueError(
        f"motions_per_scene={motions_per_scene}: no {size[0]}x{size[1]} scene in {MAX_SCENE_TRIES} tries where "
        f"the target can move {speed_max:.2f} px/frame for {num_frames} frames in every direction; lower the "
        "max of speed_range, use fewer frames, a larger size, a smaller size_range or fewer num_static objects"
    )


def _motion_group(rng, size, num_frames, speed_range, held_out, num_moving, num_static, size_range,
                  motions_per_scene) -> list[tuple[SceneSpec, str]]:
    """One scene, `motions_per_scene` distinct directions with their own speeds: (variant, caption) each."""
    directions = [str(d) for d in rng.permutation(sorted(DIRECTIONS))[:motions_per_scene]]
    speeds = [float(rng.uniform(*speed_range)) for _ in directions]
    spec = _scene_for_every_direction(rng, size, num_frames, speed_range, max(speeds), held_out, num_moving,
                                      num_static, size_range, motions_per_scene)
    variants = [with_motion(spec, spec.target, d, v) for d, v in zip(directions, speeds)]
    return [(variant, describe_scene(variant, rng)) for variant in variants]


def _manifest_row(spec: SceneSpec, caption: str, video_id: str, rel: str, num_frames: int, fps: float,
                  split: str) -> dict:
    target = spec.objects[spec.target]
    return {
        "video": rel, "caption": caption, "id": video_id, "motion_prompt": motion_prompt(target.direction),
        "direction": target.direction or "none", "speed": round(target.speed, 6) if target.moving else 0.0,
        "shape": target.shape, "color": target.color_name,
        "bbox": json.dumps(object_bbox(spec, spec.target, 0)), "scene": spec.to_json(),
        "num_frames": num_frames, "fps": fps, "height": spec.height, "width": spec.width, "split": split,
    }


def write_mp4(frames: np.ndarray, path: str | os.PathLike, fps: float, crf: int = 18) -> None:
    """Encode uint8 (F, H, W, 3) RGB frames as H.264 yuv420p (playable anywhere, decodable by
    decord and PyAV). Written to a temporary name and renamed, so a file that exists is complete."""
    path = Path(path)
    height, width = frames.shape[1:3]
    if height % 2 or width % 2:
        raise ValueError(f"H.264 yuv420p needs even frame sizes, got {height}x{width}")
    tmp = path.with_name(path.name + ".tmp")
    with av.open(str(tmp), mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=int(round(fps)))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        # threads=1: deterministic bytes and no oversubscription on small machines.
        stream.options = {"crf": str(crf), "preset": "medium", "threads": "1"}
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")))
        container.mux(stream.encode())
    os.replace(tmp, path)


def generate_corpus(
    out_dir: str | os.PathLike,
    num_videos: int,
    seed: int = 0,
    height: int = 96,
    width: int = 96,
    num_frames: int = 24,
    fps: float = 8.0,
    speed_range: tuple[float, float] = (0.5, 3.0),
    held_out: bool = False,
    static_fraction: float = 0.0,
    num_moving: tuple[int, int] = (1, 1),
    num_static: tuple[int, int] = (1, 2),
    size_range: tuple[float, float] = (0.07, 0.11),
    crf: int = 18,
    progress: bool = True,
    motions_per_scene: int = 1,
) -> Path:
    """Write `num_videos` clips to `out_dir/videos/*.mp4` plus `out_dir/manifest.csv` (columns
    `MANIFEST_COLUMNS`) and `out_dir/corpus.json` (the parameters); returns the manifest's path.

    Deterministic: video i depends only on (seed, split, i, parameters), so a larger corpus with
    the same seed starts with the same videos. Ground truth (`direction`, `speed` in px per
    native frame, `shape`, `color`, `bbox` = [x0, y0, x1, y1] at frame 0) describes the target
    object (`direction` is "none" and `speed` 0 in a static scene); `scene` is the full SceneSpec as JSON (`SceneSpec.from_json`) to re-render it.

    `motions_per_scene` K > 1: clips come in groups of K consecutive clips (group g = i // K,
    drawn from its own stream (seed, split, g)) that share one scene, so frame 0 is identical,
    and differ only in the target's motion: K distinct directions (a random permutation of the
    four), each with its own speed from `speed_range`, and each clip its own caption. The scene
    is rejection-sampled so that the target fits the group's largest speed in every direction
    (`fits_every_direction`). Then frame 0 does not tell the direction: only the prompt does."""
    if not 0.0 <= static_fraction <= 1.0:
        raise ValueError(f"static_fraction must be in [0, 1], got {static_fraction}")
    if isinstance(motions_per_scene, bool) or not isinstance(motions_per_scene, (int, np.integer)) \
            or not 1 <= motions_per_scene <= len(DIRECTIONS):
        raise ValueError(f"motions_per_scene must be an integer in 1..{len(DIRECTIONS)}, got {motions_per_scene!r}")
    motions_per_scene = int(motions_per_scene)
    if motions_per_scene > 1 and static_fraction > 0:
        raise ValueError(f"motions_per_scene={motions_per_scene} needs moving scenes: use static_fraction 0 "
                         f"(got {static_fraction}) or motions_per_scene 1")
    _check_fits(height, width, num_frames, speed_range[1], size_range[0] * min(height, width))
    out = Path(out_dir)
    (out / "videos").mkdir(parents=True, exist_ok=True)
    split = "held_out" if held_out else "train"
    rows = []
    group: list[tuple[SceneSpec, str]] = []  # K > 1: the current group's (variant, caption) per clip
    for i in tqdm(range(num_videos), desc=f"MovingShapes ({split})", disable=not progress):
        video_id = f"shapes_{split}_s{seed}_{i:06d}"
        rel = f"videos/{video_id}.mp4"
        if motions_per_scene > 1:
            if i % motions_per_scene == 0:
                group = _motion_group(np.random.default_rng([seed, SPLIT_SEED[split], i // motions_per_scene]),
                                      (height, width), num_frames, speed_range, held_out, num_moving, num_static,
                                      size_range, motions_per_scene)
            spec, caption = group[i % motions_per_scene]
            write_mp4(render_frames(spec, num_frames), out / rel, fps, crf)
            rows.append(_manifest_row(spec, caption, video_id, rel, num_frames, fps, split))
            continue
        rng = np.random.default_rng([seed, SPLIT_SEED[split], i])
        static = bool(rng.random() < static_fraction)
        spec = sample_scene(rng, (height, width), num_frames, speed_range, held_out, num_moving, num_static,
                            static, size_range)
        caption = describe_scene(spec, rng)
        write_mp4(render_frames(spec, num_frames), out / rel, fps, crf)
        rows.append(_manifest_row(spec, caption, video_id, rel, num_frames, fps, split))
    manifest = out / "manifest.csv"
    tmp = manifest.with_name("manifest.csv.tmp")
    pd.DataFrame(rows, columns=list(MANIFEST_COLUMNS)).to_csv(tmp, index=False)
    os.replace(tmp, manifest)
    params = dict(num_videos=num_videos, seed=seed, height=height, width=width, num_frames=num_frames, fps=fps,
                  speed_range=list(speed_range), held_out=held_out, static_fraction=static_fraction,
                  num_moving=list(num_moving), num_static=list(num_static), size_range=list(size_range), crf=crf,
                  motions_per_scene=motions_per_scene,
                  shapes=list(HELD_OUT_SHAPES if held_out else TRAIN_SHAPES),
                  colors=sorted(HELD_OUT_COLORS if held_out else TRAIN_COLORS))
    (out / "corpus.json").write_text(json.dumps(params, indent=2))
    log.info("wrote %d MovingShapes clips to %s", num_videos, out)
    return manifest
