"""FilterStep: drop clips by source length / resolution (after decode) or by motion magnitude
(after the motion step), each with a reason naming the value and the config key."""

from __future__ import annotations


from preprocessing.steps.base import Sample, Step, mark


class SourceFilterStep(Step):
    """After decode: `filter.min_source_frames`, `filter.min_resolution`."""

    name = "filter"

    def __init__(self, min_source_frames: int = 0, min_resolution: int = 0) -> None:
        self.min_source_frames, self.min_resolution = int(min_source_frames), int(min_resolution)

    def process(self, sample: Sample) -> Sample:
        frames = sample.get("num_source_frames")
        if self.min_source_frames and frames is not None and frames < self.min_source_frames:
            return mark(sample, "filtered",
                        f"too_short: {frames} source frames < filter.min_source_frames={self.min_source_frames}")
        h, w = sample.get("source_height"), sample.get("source_width")
        if self.min_resolution and h is not None and w is not None and min(h, w) < self.min_resolution:
            return mark(sample, "filtered",
                        f"low_resolution: {w}x{h} < filter.min_resolution={self.min_resolution}")
        return sample


class MagnitudeFilterStep(Step):
    """After motion: `filter.min_magnitude` <= magnitude <= `filter.max_magnitude`."""

    name = "filter"

    def __init__(self, min_magnitude: float = 0.0, max_magnitude: float | None = None) -> None:
        self.min_magnitude = float(min_magnitude)
        self.max_magnitude = None if max_magnitude is None else float(max_magnitude)

    def process(self, sample: Sample) -> Sample:
        magnitude = float(sample["magnitude"])
        if magnitude != magnitude:  # NaN
            return mark(sample, "error", "bad_magnitude: NaN")
        if magnitude < self.min_magnitude:
            return mark(sample, "filtered",
                        f"low_motion: magnitude {magnitude:.3f} < filter.min_magnitude={self.min_magnitude:g}")
        if self.max_magnitude is not None and magnitude > self.max_magnitude:
            return mark(sample, "filtered",
                        f"high_motion: magnitude {magnitude:.3f} > filter.max_magnitude={self.max_magnitude:g}")
        return sample
