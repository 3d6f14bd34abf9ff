"""Windowing: where a video's clips are cut (`plan_windows`) and one sample per window (`WindowSplitStep`).

A window is `num_frames` source frames `stride` apart, i.e. a span of `stride * (num_frames - 1) + 1`
source frames. Windows never span a shot boundary (steps/scenes.py) and never overlap: a shot
holds up to `len(shot) // span` of them. When the video holds more than `clip.windows_per_video`,
the kept ones are spread evenly over all of those slots in time order, so a long video is sampled
from beginning to end; the windows a shot keeps are then spread evenly inside it (a single one
sits in the shot's centre). Deterministic: the same windows every run.
"""

from __future__ import annotations

from dataclasses import dataclass

from preprocessing.steps.base import Sample, is_ok
from preprocessing.steps.scenes import Shot


@dataclass(frozen=True)
class Window:
    index: int  # position among the video's kept windows (0-based, time order)
    shot_index: int
    shot: Shot
    frame_indices: list[int]


def window_span(num_frames: int, stride: int) -> int:
    return stride * (num_frames - 1) + 1


def _spread(shot: Shot, count: int, span: int) -> list[int]:
    """First frames of `count` non-overlapping windows in `shot`, the free frames spread evenly
    around them (one window sits in the shot's centre)."""
    leftover = len(shot) - count * span
    return [shot.start + j * span + leftover * (j + 1) // (count + 1) for j in range(count)]


def plan_windows(shots: list[Shot], num_frames: int, stride: int, max_windows: int) -> list[Window]:
    """Up to `max_windows` windows, none crossing a shot boundary (see module docstring)."""
    if max_windows < 1:
        raise ValueError(f"clip.windows_per_video must be >= 1, got {max_windows}")
    span = window_span(num_frames, stride)
    slots = [shot_index for shot_index, shot in enumerate(shots) for _ in range(len(shot) // span)]
    if len(slots) > max_windows:  # keep max_windows of the packed slots, evenly spread in time
        n = len(slots)
        slots = [slots[(2 * i + 1) * n // (2 * max_windows)] for i in range(max_windows)]
    windows: list[Window] = []
    for shot_index in sorted(set(slots)):
        shot = shots[shot_index]
        for first in _spread(shot, slots.count(shot_index), span):
            windows.append(Window(len(windows), shot_index, shot, [first + stride * k for k in range(num_frames)]))
    return windows


def window_key(row_key: str, index: int) -> str:
    return f"{row_key}_w{index:03d}"


class WindowSplitStep:
    """One decoded row -> one sample per window (the fan-out after decoding).

    Not a `Step` subclass: it returns a list (one row in, N samples out), which the Step contract
    (sample -> sample) cannot express. Every output sample carries `row_samples`, the number of
    samples its input row became, so the pipeline knows when a row is complete; a row without
    windows (it failed or was filtered before windowing, or runs in one-window mode) stays one
    sample, untouched.
    """

    name = "windows"

    def __call__(self, sample: Sample) -> list[Sample]:
        windows = sample.pop("windows", None)
        if windows is None or not is_ok(sample):
            sample["row_samples"] = 1
            return [sample]
        shared = {k: v for k, v in sample.items() if k not in ("key",)}
        out = []
        for window in windows:
            s = dict(shared)
            s.update(window)  # frames, frame_indices, window_index, shot, shot_index (+ flow_frames)
            s["row_key"] = sample["key"]
            s["key"] = window_key(sample["key"], int(window["window_index"]))
            s["num_windows"] = len(windows)
            s["row_samples"] = len(windows)
            # the row's decode time is shared by its windows (stats sum timings over samples)
            s["timings"] = {k: v / len(windows) for k, v in (sample.get("timings") or {}).items()}
            out.append(s)
        return out
