"""One PNG that shows what was asked and what came out: input, mask overlay, frame strip, text.

Pillow only (no matplotlib figure state), so training's validation callback can build the same
sheet in a worker and log it to W&B as an image.
"""
from __future__ import annotations

from pathlib import Path
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

OVERLAY_COLOR = np.array([255, 40, 40], dtype=np.float32)


def mask_overlay(image: np.ndarray, mask: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Tint the masked region red and keep the rest of the picture visible."""
    out = image.astype(np.float32).copy()
    m = np.asarray(mask, dtype=bool)
    out[m] = (1 - alpha) * out[m] + alpha * OVERLAY_COLOR
    return out.clip(0, 255).astype(np.uint8)


def _tile(img: np.ndarray, size: tuple[int, int]) -> Image.Image:
    return Image.fromarray(img).resize(size, Image.Resampling.NEAREST)


def make_contact_sheet(
    image: np.ndarray,
    mask: np.ndarray,
    frames: np.ndarray,
    lines: Sequence[str],
    tile: int = 128,
    max_frames: int = 8,
) -> Image.Image:
    """image uint8 (H,W,3), mask bool (H,W), frames uint8 (F,H,W,3), lines of caption text.

    Layout: row 1 = input | mask overlay | text; row 2 = up to `max_frames` frames, evenly
    spaced over the video (first and last included).
    """
    h, w = image.shape[:2]
    tw, th = tile, max(1, round(tile * h / w))
    idx = np.unique(np.linspace(0, len(frames) - 1, min(max_frames, len(frames))).round().astype(int))
    strip_w = len(idx) * tw
    font = ImageFont.load_default()
    text_w = max(2 * tw, strip_w - 2 * tw)
    line_h = 14
    top_h = max(th, line_h * (len(lines) + 1)) + 18
    sheet = Image.new("RGB", (max(2 * tw + text_w, strip_w), top_h + th + 18), "white")
    draw = ImageDraw.Draw(sheet)
    draw.text((2, 2), "input", fill="black", font=font)
    draw.text((tw + 2, 2), "mask", fill="black", font=font)
    sheet.paste(_tile(image, (tw, th)), (0, 16))
    sheet.paste(_tile(mask_overlay(image, mask), (tw, th)), (tw, 16))
    for i, line in enumerate(lines):
        draw.text((2 * tw + 6, 16 + i * line_h), line, fill="black", font=font)
    for k, f in enumerate(idx):
        x = k * tw
        draw.text((x + 2, top_h), f"frame {f}", fill="black", font=font)
        sheet.paste(_tile(frames[f], (tw, th)), (x, top_h + 16))
    return sheet


def save_contact_sheet(path: str | Path, **kwargs) -> Path:
    """make_contact_sheet(**kwargs) saved as PNG at `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    make_contact_sheet(**kwargs).save(path)
    return path
