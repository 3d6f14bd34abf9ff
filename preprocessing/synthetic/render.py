"""MovingShapes scenes: the scene description (`SceneSpec`) and its deterministic rendering.

A scene is a textured, static background plus a few flat-coloured shapes. One (or some) of the
shapes translates `left`, `right`, `up` or `down` at a constant speed (pixels per native frame);
the others stay still. Everything is drawn from a `SceneSpec`, which is JSON-serialisable, so the
exact scene can be re-rendered at evaluation time (masks, reachable regions, first frame).

Drawing is handwritten with numpy signed-distance functions because no library renders
anti-aliased, sub-pixel-positioned primitives deterministically into arrays (PIL/cv2 snap to the
pixel grid, which would make "speed * t" only approximately true).

The train / held-out split of colours and shapes (see `datasets/moving_shapes.md`):
- train shapes: disc, square, triangle, plus, ring; held-out shapes: diamond, hexagon, pentagon
- train colours: red, orange, yellow, green, cyan, blue, purple, white;
  held-out colours: pink, lime, teal, brown, magenta
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field

import cv2
import numpy as np

DIRECTIONS: dict[str, tuple[int, int]] = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}

TRAIN_SHAPES = ("disc", "square", "triangle", "plus", "ring")
HELD_OUT_SHAPES = ("diamond", "hexagon", "pentagon")

TRAIN_COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "orange": (245, 140, 20),
    "yellow": (240, 220, 40),
    "green": (40, 170, 60),
    "cyan": (40, 200, 220),
    "blue": (40, 70, 220),
    "purple": (140, 50, 200),
    "white": (245, 245, 245),
}
HELD_OUT_COLORS: dict[str, tuple[int, int, int]] = {
    "pink": (250, 130, 190),
    "lime": (170, 235, 50),
    "teal": (20, 140, 140),
    "brown": (130, 80, 35),
    "magenta": (225, 30, 200),
}

# Muted background tints: objects are drawn only in colours far enough from the tint.
BACKGROUND_COLORS: dict[str, tuple[int, int, int]] = {
    "grey": (128, 128, 128),
    "beige": (200, 186, 152),
    "slate": (92, 108, 140),
    "olive": (112, 124, 84),
    "sand": (176, 150, 110),
    "charcoal": (58, 60, 64),
}
BACKGROUND_KINDS: dict[str, str] = {  # kind -> adjective used in captions
    "noise": "mottled",
    "stripes": "striped",
    "checker": "checkered",
    "gradient": "softly shaded",
}
MIN_COLOR_DISTANCE = 110.0  # RGB distance between an object colour and the background tint
# ... and luma difference: grey-level optical flow (Farneback in the metrics, and any flow model
# that works on luminance) must see every object, e.g. not green (Y 119) on grey (Y 128).
MIN_LUMA_DIFFERENCE = 20.0


def luma(rgb: tuple[int, int, int]) -> float:
    """Rec. 601 luma, as in OpenCV's RGB -> grey conversion."""
    return 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]


def contrasts(color: tuple[int, int, int], background: tuple[int, int, int]) -> bool:
    """Whether an object colour stands out from a background tint (in RGB and in luma)."""
    distance = float(np.linalg.norm(np.subtract(color, background, dtype=np.float64)))
    return distance >= MIN_COLOR_DISTANCE and abs(luma(color) - luma(background)) >= MIN_LUMA_DIFFERENCE


@dataclass
class BackgroundSpec:
    kind: str  # one of BACKGROUND_KINDS
    color_name: str
    rgb: tuple[int, int, int]
    seed: int  # texture randomness (noise grid, stripe angle/period, phase)
    contrast: float = 0.2  # texture amplitude as a fraction of full range


@dataclass
class ShapeObject:
    shape: str
    color_name: str
    rgb: tuple[int, int, int]
    size: float  # "radius" in pixels: half the side of a square, radius of a disc
    x: float  # centre at frame 0, pixels (x to the right, y down; pixel centres at integers)
    y: float
    direction: str | None = None  # None: the object stays still
    speed: float = 0.0  # pixels per native frame
    angle: float = 0.0  # rotation in degrees (shape orientation; constant over time)

    @property
    def moving(self) -> bool:
        return self.direction is not None and self.speed > 0

    def center(self, frame: float) -> tuple[float, float]:
        if not self.moving:
            return self.x, self.y
        dx, dy = DIRECTIONS[self.direction]
        return self.x + dx * self.speed * frame, self.y + dy * self.speed * frame


@dataclass
class SceneSpec:
    height: int
    width: int
    background: BackgroundSpec
    objects: list[ShapeObject] = field(default_factory=list)
    target: int | None = 0  # index of the object whose motion the ground truth describes

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | dict) -> SceneSpec:
        data = json.loads(text) if isinstance(text, str) else dict(text)
        background = BackgroundSpec(**{**data["background"], "rgb": tuple(data["background"]["rgb"])})
        objects = [ShapeObject(**{**o, "rgb": tuple(o["rgb"])}) for o in data["objects"]]
        return cls(data["height"], data["width"], background, objects, data.get("target"))


def with_motion(spec: SceneSpec, index: int, direction: str | None, speed: float) -> SceneSpec:
    """Copy of `spec` where object `index` moves `direction` at `speed` (px per frame)."""
    if direction is not None and direction not in DIRECTIONS:
        raise ValueError(f"direction {direction!r} is not one of {sorted(DIRECTIONS)}")
    objects = list(spec.objects)
    objects[index] = dataclasses.replace(objects[index], direction=direction, speed=float(speed))
    return dataclasses.replace(spec, objects=objects)


# ----------------------------------------------------------------------------- drawing


def _polygon_sdf(px: np.ndarray, py: np.ndarray, num_sides: int, radius: float) -> np.ndarray:
    """Approximate signed distance to a regular polygon (max over edge half-planes).

    Exact along edges, which is all anti-aliasing needs. Vertex 0 points up."""
    apothem = radius * math.cos(math.pi / num_sides)
    dist = np.full(px.shape, -np.inf, dtype=np.float32)
    for k in range(num_sides):
        theta = -math.pi / 2 + math.pi / num_sides + 2 * math.pi * k / num_sides
        dist = np.maximum(dist, px * math.cos(theta) + py * math.sin(theta) - apothem)
    return dist


def _box_sdf(px: np.ndarray, py: np.ndarray, half_w: float, half_h: float) -> np.ndarray:
    qx, qy = np.abs(px) - half_w, np.abs(py) - half_h
    outside = np.hypot(np.maximum(qx, 0), np.maximum(qy, 0))
    return outside + np.minimum(np.maximum(qx, qy), 0)


def shape_sdf(shape: str, px: np.ndarray, py: np.ndarray, size: float) -> np.ndarray:
    """Signed distance (pixels, negative inside) of `shape` centred at the origin."""
    if shape == "disc":
        return np.hypot(px, py) - size
    if shape == "square":
        return _box_sdf(px, py, size, size)
    if shape == "diamond":
        return (np.abs(px) + np.abs(py) - size * 1.3) / math.sqrt(2)
    if shape == "triangle":
        return _polygon_sdf(px, py + size * 0.2, 3, size * 1.3)
    if shape == "pentagon":
        return _polygon_sdf(px, py, 5, size * 1.1)
    if shape == "hexagon":
        return _polygon_sdf(px, py, 6, size * 1.05)
    if shape == "plus":
        arm = size * 0.38
        return np.minimum(_box_sdf(px, py, size, arm), _box_sdf(px, py, arm, size))
    if shape == "ring":
        return np.abs(np.hypot(px, py) - size * 0.72) - size * 0.3
    raise ValueError(f"unknown shape {shape!r}; known: {TRAIN_SHAPES + HELD_OUT_SHAPES}")


def _grid(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    return xs, ys


def object_coverage(spec: SceneSpec, index: int, frame: float = 0) -> np.ndarray:
    """Anti-aliased coverage in [0, 1] (H, W) of object `index` at (possibly fractional) `frame`."""
    obj = spec.objects[index]
    cx, cy = obj.center(frame)
    xs, ys = _grid(spec.height, spec.width)
    px, py = xs - cx, ys - cy
    if obj.angle:
        a = math.radians(obj.angle)
        px, py = px * math.cos(a) + py * math.sin(a), -px * math.sin(a) + py * math.cos(a)
    return np.clip(0.5 - shape_sdf(obj.shape, px, py, obj.size), 0.0, 1.0)


def object_mask(spec: SceneSpec, index: int, frame: float = 0) -> np.ndarray:
    """Boolean (H, W) mask of object `index` at `frame` (pixels at least half covered)."""
    return object_coverage(spec, index, frame) >= 0.5


def reachable_region(spec: SceneSpec, index: int, num_frames: int, stride: int = 1) -> np.ndarray:
    """Union of the object's masks over a clip of `num_frames` frames taken every `stride`
    native frames: the region where the object's motion is allowed (what locality is measured
    against)."""
    region = np.zeros((spec.height, spec.width), dtype=bool)
    for t in range(num_frames):
        region |= object_mask(spec, index, t * stride)
    return region


def object_bbox(spec: SceneSpec, index: int, frame: float = 0) -> list[int]:
    """[x0, y0, x1, y1] (inclusive pixel bounds) of object `index` at `frame`."""
    ys, xs = np.nonzero(object_mask(spec, index, frame))
    if len(xs) == 0:
        return []
    return [int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())]


def render_background(bg: BackgroundSpec, height: int, width: int) -> np.ndarray:
    """Static textured background, float32 (H, W, 3) in 0..255."""
    rng = np.random.default_rng(bg.seed)
    xs, ys = _grid(height, width)
    if bg.kind == "noise":  # smooth value noise: a coarse random grid upsampled bicubically
        cells = int(rng.integers(4, 8))
        coarse = rng.random((cells, cells)).astype(np.float32)
        tex = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
        tex = (tex - tex.min()) / max(float(np.ptp(tex)), 1e-6)
    elif bg.kind == "stripes":
        theta = rng.uniform(0, math.pi)
        period = rng.uniform(0.1, 0.25) * min(height, width)
        phase = rng.uniform(0, 2 * math.pi)
        tex = 0.5 + 0.5 * np.sin(2 * math.pi * (xs * math.cos(theta) + ys * math.sin(theta)) / period + phase)
    elif bg.kind == "checker":
        cell = rng.uniform(0.1, 0.2) * min(height, width)
        ox, oy = rng.uniform(0, cell, size=2)
        wave = np.sin(math.pi * (xs + ox) / cell) * np.sin(math.pi * (ys + oy) / cell)
        tex = 0.5 + 0.5 * np.tanh(4 * wave)  # soft edges: no aliasing, no hard codec ringing
    elif bg.kind == "gradient":
        theta = rng.uniform(0, 2 * math.pi)
        ramp = xs * math.cos(theta) + ys * math.sin(theta)
        tex = (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1e-6)
    else:
        raise ValueError(f"unknown background kind {bg.kind!r}; known: {sorted(BACKGROUND_KINDS)}")
    # Fine grain on top, so the static background has texture everywhere (like real footage).
    grain = rng.normal(0, 0.04, size=(height, width)).astype(np.float32)
    grain = cv2.GaussianBlur(grain, (0, 0), 0.8)
    lum = (tex.astype(np.float32) - 0.5) * 2 * bg.contrast * 255 + grain * 255
    return np.clip(np.asarray(bg.rgb, dtype=np.float32)[None, None] + lum[..., None], 0, 255)


def render_frame(spec: SceneSpec, frame: float, background: np.ndarray | None = None) -> np.ndarray:
    """One frame, uint8 (H, W, 3)."""
    image = render_background(spec.background, spec.height, spec.width) if background is None else background.copy()
    xs, ys = _grid(spec.height, spec.width)
    for index, obj in enumerate(spec.objects):
        alpha = object_coverage(spec, index, frame)[..., None]
        cx, cy = obj.center(frame)
        # Gentle light from the top-left, moving with the object: gives its interior some
        # texture (helps optical flow) without changing its colour name.
        shade = 1.0 + 0.12 * np.clip(-((xs - cx) + (ys - cy)) / (obj.size * 1.5), -1, 1)
        color = np.clip(np.asarray(obj.rgb, dtype=np.float32)[None, None] * shade[..., None], 0, 255)
        image = image * (1 - alpha) + color * alpha
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def render_frames(spec: SceneSpec, num_frames: int, stride: int = 1) -> np.ndarray:
    """uint8 (F, H, W, 3): native frames 0, stride, 2*stride, ..."""
    background = render_background(spec.background, spec.height, spec.width)
    return np.stack([render_frame(spec, t * stride, background) for t in range(num_frames)])
