"""MovingShapes metrics: does a generated video move the clicked object, only it, the way and as
fast as asked, starting from the input image?

Inputs are generated videos, uint8 (F, H, W, 3), and the scene's ground truth (`SceneSpec` at the
video's resolution, whose target object carries the *requested* direction and speed; build it
with `preprocessing.synthetic.moving_shapes.with_motion`). Motion is measured independently of
the RAFT used in preprocessing:

- Optical flow: OpenCV Farneback on consecutive grey frames, computed on frames upscaled so
  their short side is ~`flow_size` px and scaled back to pixels of the video. At 64 px and 1x
  Farneback misses small objects (locality of perfect renders down to 0.71); upscaled, with a
  small window (9: less spill along background stripes), perfect renders of 40 random scenes
  score locality >= 0.98 and direction 40/40 (64 and 96 px, stride 1 and 2). The generator
  guarantees a luma difference between objects and background, so grey-level flow sees them.
- locality: share of motion energy (sum of |flow|^2 over all pairs) inside the target's
  reachable region (union of its masks over the clip at the requested motion) dilated by
  `dilate_px` (3 px: Farneback's own spill on perfect renders); NaN when the video has no
  motion at all (nothing to localise).
- direction: dominant axis and sign of the mean flow inside the dilated reachable region;
  "none" when that mean is below `min_flow` px/frame (a still video).
- speed: object tracking, not flow. Farneback underestimates the motion of flat-coloured
  objects (their interior has no texture: measured 0.3-1.0x the true speed), so the target is
  tracked by masked template matching (its frame-0 appearance under the click mask, searched in
  every frame, sub-pixel peak) and the speed is the norm of a Theil-Sen line fit of its positions:
  robust to a few frames where the object is lost, and exact on ground-truth renders (< 2% error).
- i1_mse: mean squared error between frame 0 and the input image on the 0..255 scale.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import cv2
import numpy as np
from scipy import stats

from preprocessing.synthetic.moving_shapes import (
    DIRECTIONS,
    SceneSpec,
    object_mask,
    reachable_region,
)

FLOW_SIZE = 256
FARNEBACK = dict(pyr_scale=0.5, levels=4, winsize=9, iterations=3, poly_n=5, poly_sigma=1.2, flags=0)


@dataclass
class ShapeEvalResult:
    direction_requested: str
    direction_measured: str
    direction_correct: bool
    locality: float  # NaN when the video does not move at all
    speed_requested: float  # px per generated frame at the video's resolution
    speed_measured: float
    speed_rel_error: float
    i1_mse: float  # NaN when no input image was given
    group: str = ""  # e.g. the scene id: summarize() also reports Spearman within groups

    def as_dict(self) -> dict:
        return asdict(self)


def _check_video(video: np.ndarray) -> None:
    if video.dtype != np.uint8 or video.ndim != 4 or video.shape[-1] != 3 or len(video) < 2:
        raise ValueError(f"expected a uint8 video (F>=2, H, W, 3), got {video.dtype} {video.shape}")


def _upscale_factor(height: int, width: int, flow_size: int) -> int:
    return max(1, round(flow_size / min(height, width)))


def farneback_flows(video: np.ndarray, flow_size: int = FLOW_SIZE) -> np.ndarray:
    """Dense flow between consecutive frames: float32 (F-1, H, W, 2), (dx, dy) in px of the video."""
    _check_video(video)
    height, width = video.shape[1:3]
    scale = _upscale_factor(height, width, flow_size)
    grey = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in video]
    if scale > 1:
        grey = [cv2.resize(g, (width * scale, height * scale), interpolation=cv2.INTER_CUBIC) for g in grey]
    flows = []
    for a, b in zip(grey, grey[1:]):
        flow = cv2.calcOpticalFlowFarneback(a, b, None, **FARNEBACK)
        if scale > 1:
            flow = cv2.resize(flow, (width, height), interpolation=cv2.INTER_AREA) / scale
        flows.append(flow)
    return np.stack(flows).astype(np.float32)


def dilate(mask: np.ndarray, pixels: int) -> np.ndarray:
    if pixels <= 0:
        return mask.astype(bool)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * pixels + 1, 2 * pixels + 1))
    return cv2.dilate(mask.astype(np.uint8), kernel) > 0


def locality(flows: np.ndarray, region: np.ndarray, min_flow: float = 0.01) -> float:
    """Share of motion energy sum |flow|^2 inside `region` (bool (H, W)); NaN when the RMS flow
    is below `min_flow` px/frame (a still video: Farneback returns ~1e-4 px on equal frames)."""
    energy = (flows.astype(np.float64) ** 2).sum(axis=-1)
    if energy.mean() < min_flow**2:
        return math.nan
    energy = energy.sum(axis=0)
    return float(energy[region].sum() / energy.sum())


def flow_direction(flows: np.ndarray, region: np.ndarray, min_flow: float = 0.01) -> str:
    """Dominant direction (left/right/up/down) of the mean flow inside `region`; "none" if still."""
    mean = flows[:, region].reshape(-1, 2).mean(axis=0)
    if np.abs(mean).max() < min_flow:
        return "none"
    if abs(mean[0]) >= abs(mean[1]):
        return "right" if mean[0] > 0 else "left"
    return "down" if mean[1] > 0 else "up"


def track_object(video: np.ndarray, mask: np.ndarray, upscale: int = 4) -> np.ndarray:
    """Position (x, y) of the object under `mask` (bool (H, W), at frame 0) in every frame:
    float (F, 2), relative to frame 0. Masked template matching on RGB over the whole frame,
    on frames upscaled `upscale`x, with a parabolic sub-pixel peak."""
    _check_video(video)
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        raise ValueError("the object mask is empty: nothing to track")
    height, width = video.shape[1:3]
    pad = 1
    x0, x1 = max(xs.min() - pad, 0), min(xs.max() + pad, width - 1)
    y0, y1 = max(ys.min() - pad, 0), min(ys.max() + pad, height - 1)

    def up(image: np.ndarray, interpolation: int = cv2.INTER_CUBIC) -> np.ndarray:
        return cv2.resize(image, (image.shape[1] * upscale, image.shape[0] * upscale), interpolation=interpolation)

    frames = [up(f.astype(np.float32)) for f in video]
    template = frames[0][y0 * upscale:(y1 + 1) * upscale, x0 * upscale:(x1 + 1) * upscale]
    template_mask = up(mask[y0:y1 + 1, x0:x1 + 1].astype(np.float32), cv2.INTER_LINEAR)
    template_mask = np.repeat(template_mask[..., None], 3, axis=-1)
    positions = []
    for frame in frames:
        cost = cv2.matchTemplate(frame, template, cv2.TM_SQDIFF, mask=template_mask)
        iy, ix = np.unravel_index(int(np.argmin(cost)), cost.shape)
        positions.append((ix + _subpixel(cost[iy, max(ix - 1, 0):ix + 2], ix),
                          iy + _subpixel(cost[max(iy - 1, 0):iy + 2, ix], iy)))
    positions = np.asarray(positions, dtype=np.float64) / upscale
    return positions - positions[0]


def _subpixel(values: np.ndarray, index: int) -> float:
    """Offset of a parabola's minimum through three neighbouring costs (0 at a border)."""
    if len(values) != 3 or index == 0:
        return 0.0
    left, centre, right = (float(v) for v in values)
    denom = left - 2 * centre + right
    return 0.0 if denom <= 0 else float(np.clip(0.5 * (left - right) / denom, -0.5, 0.5))


def measured_velocity(video: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(vx, vy) of the tracked object in px per frame (Theil-Sen fit: robust to lost frames)."""
    track = track_object(video, mask)
    t = np.arange(len(track))
    return np.array([stats.theilslopes(track[:, k], t)[0] for k in range(2)])


def first_frame_mse(video: np.ndarray, image: np.ndarray) -> float:
    """MSE between frame 0 and the input image, both uint8 (H, W, 3), on the 0..255 scale."""
    if image.shape != video.shape[1:]:
        raise ValueError(f"input image {image.shape} does not match the video's frames {video.shape[1:]}")
    return float(((video[0].astype(np.float64) - image.astype(np.float64)) ** 2).mean())


def evaluate_video(
    video: np.ndarray,
    spec: SceneSpec,
    index: int | None = None,
    stride: int = 1,
    image: np.ndarray | None = None,
    dilate_px: int = 3,
    flow_size: int = FLOW_SIZE,
    group: str = "",
) -> ShapeEvalResult:
    """All metrics for one generated video.

    `spec` is the scene at the video's resolution; its object `index` (default `spec.target`)
    carries the requested direction and speed in px per *native* frame; the video's frames are
    `stride` native frames apart, so the requested speed per generated frame is speed * stride.
    `image` is the input image (default: none, i1_mse NaN)."""
    _check_video(video)
    if (spec.height, spec.width) != video.shape[1:3]:
        raise ValueError(f"scene is {spec.height}x{spec.width} but the video is {video.shape[1]}x{video.shape[2]}: "
                         "render the evaluation scene at the video's resolution")
    index = spec.target if index is None else index
    obj = spec.objects[index]
    if obj.direction not in DIRECTIONS or obj.speed <= 0:
        raise ValueError(f"object {index} of the scene has no requested motion (direction={obj.direction!r}, "
                         f"speed={obj.speed}); set it with with_motion(spec, index, direction, speed)")
    flows = farneback_flows(video, flow_size)
    region = dilate(reachable_region(spec, index, len(video), stride), dilate_px)
    requested = obj.speed * stride
    measured = float(np.linalg.norm(measured_velocity(video, object_mask(spec, index, 0))))
    direction = flow_direction(flows, region)
    return ShapeEvalResult(
        direction_requested=obj.direction,
        direction_measured=direction,
        direction_correct=direction == obj.direction,
        locality=locality(flows, region),
        speed_requested=requested,
        speed_measured=measured,
        speed_rel_error=abs(measured - requested) / requested,
        i1_mse=first_frame_mse(video, image) if image is not None else math.nan,
        group=group,
    )


def _spearman(requested: Sequence[float], measured: Sequence[float]) -> float:
    if len(requested) < 3 or np.ptp(requested) == 0 or np.ptp(measured) == 0:
        return math.nan
    return float(stats.spearmanr(requested, measured).statistic)


def summarize(results: Sequence[ShapeEvalResult], within: float = 0.3) -> dict:
    """Aggregate metrics: direction_accuracy, locality (mean over videos that move), speed
    Spearman (all videos, and mean within `group`s that vary the requested speed), fraction of
    measured speeds within `within` (30%) of the request, mean relative speed error, i1_mse."""
    if not results:
        raise ValueError("no results to summarize")
    requested = [r.speed_requested for r in results]
    measured = [r.speed_measured for r in results]
    groups: dict[str, list[ShapeEvalResult]] = {}
    for r in results:
        if r.group:
            groups.setdefault(r.group, []).append(r)
    within_group = [_spearman([r.speed_requested for r in g], [r.speed_measured for r in g]) for g in groups.values()]
    within_group = [s for s in within_group if not math.isnan(s)]
    localities = np.array([r.locality for r in results], dtype=float)
    mses = np.array([r.i1_mse for r in results], dtype=float)
    return {
        "num_videos": len(results),
        "direction_accuracy": float(np.mean([r.direction_correct for r in results])),
        "locality": float(np.nanmean(localities)) if np.isfinite(localities).any() else math.nan,
        "fraction_still": float(np.mean(np.isnan(localities))),
        "speed_spearman": _spearman(requested, measured),
        "speed_spearman_within_scene": float(np.mean(within_group)) if within_group else math.nan,
        f"speed_within_{int(round(within * 100))}pct": float(np.mean([r.speed_rel_error <= within for r in results])),
        "speed_rel_error": float(np.mean([r.speed_rel_error for r in results])),
        "i1_mse": float(np.nanmean(mses)) if np.isfinite(mses).any() else math.nan,
    }
