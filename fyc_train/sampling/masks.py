"""Region masks for sampling: read, validate, combine and shrink to latent size.

All validation happens here, on cheap numpy arrays, so bad input fails before any model work.
"""
from __future__ import annotations

import logging
from pathlib import Path
from collections.abc import Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

log = logging.getLogger(__name__)


class SamplingInputError(ValueError):
    """A user input (image, mask, click, box, checkpoint) is unusable; the message says why."""


def load_image(path: str | Path) -> Image.Image:
    """Open an RGB image or raise SamplingInputError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise SamplingInputError(f"image={path}: no such file. Pass image=PATH to a PNG/JPEG.")
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except (UnidentifiedImageError, OSError) as err:
        raise SamplingInputError(f"image={path}: cannot be read as an image ({err}).") from err


def load_mask_png(path: str | Path) -> np.ndarray:
    """A mask PNG -> bool (H, W); any non-zero pixel (of any channel) counts as 'moves'."""
    path = Path(path)
    if not path.is_file():
        raise SamplingInputError(f"mask={path}: no such file. Pass mask=PATH to a PNG.")
    try:
        with Image.open(path) as img:
            arr = np.asarray(img.convert("L"))
    except (UnidentifiedImageError, OSError) as err:
        raise SamplingInputError(f"mask={path}: cannot be read as an image ({err}).") from err
    return arr > 127


def fit_mask_to_image(mask: np.ndarray, height: int, width: int, name: str = "mask") -> np.ndarray:
    """Check a bool mask is non-empty; nearest-resize it (with a warning) to (height, width)."""
    mask = np.asarray(mask).astype(bool)
    if mask.ndim != 2:
        raise SamplingInputError(f"{name}: expected a 2-D mask, got shape {mask.shape}.")
    if mask.shape != (height, width):
        log.warning(
            "%s is %dx%d but the image is %dx%d: resizing the mask (nearest). "
            "Make them the same size to silence this.",
            name, mask.shape[1], mask.shape[0], width, height,
        )
        resized = Image.fromarray(mask.astype(np.uint8) * 255).resize(
            (width, height), Image.Resampling.NEAREST
        )
        mask = np.asarray(resized) > 127
    if not mask.any():
        raise SamplingInputError(
            f"{name} is empty (no pixel set): nothing would move. Give a mask with white "
            "pixels on the region to animate, or click inside the object."
        )
    return mask


def check_points(points: Sequence[Sequence[float]], height: int, width: int) -> np.ndarray:
    """Clicks [[x, y], ...] in pixels -> float (N, 2); every click must lie inside the image."""
    arr = np.asarray(points, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[None]
    if arr.ndim != 2 or arr.shape[1] != 2 or len(arr) == 0:
        raise SamplingInputError(f"clicks must be [x, y] or [[x, y], ...]; got {points!r}.")
    for x, y in arr:
        if not (0 <= x < width and 0 <= y < height):
            raise SamplingInputError(
                f"click [{x:g}, {y:g}] is outside the image ({width}x{height}): "
                f"x must be in [0, {width}) and y in [0, {height})."
            )
    return arr


def check_box(box: Sequence[float], height: int, width: int) -> np.ndarray:
    """Box [x0, y0, x1, y1] in pixels, inside the image, with x0 < x1 and y0 < y1."""
    arr = np.asarray(box, dtype=np.float64).reshape(-1)
    if arr.shape != (4,):
        raise SamplingInputError(f"box must be [x0, y0, x1, y1]; got {box!r}.")
    x0, y0, x1, y1 = arr
    if not (x0 < x1 and y0 < y1):
        raise SamplingInputError(f"box {box!r}: need x0 < x1 and y0 < y1.")
    if x0 < 0 or y0 < 0 or x1 > width or y1 > height:
        raise SamplingInputError(f"box {box!r} is outside the image ({width}x{height}).")
    return arr


def box_to_mask(box: Sequence[float], height: int, width: int) -> np.ndarray:
    """The box itself as a mask: the fallback when no SAM checkpoint is configured."""
    x0, y0, x1, y1 = check_box(box, height, width)
    mask = np.zeros((height, width), dtype=bool)
    mask[int(np.floor(y0)) : int(np.ceil(y1)), int(np.floor(x0)) : int(np.ceil(x1))] = True
    return mask


def union(masks: Sequence[np.ndarray]) -> np.ndarray:
    """Several objects animated together with one prompt: their union."""
    return np.logical_or.reduce([np.asarray(m, dtype=bool) for m in masks])
