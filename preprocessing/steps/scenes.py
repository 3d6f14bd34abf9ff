"""ShotDetector: shot boundaries (scene cuts) of a video, with PySceneDetect's detectors.

Runs inside the decode worker (preprocessing/decode_worker.py), so a video that hangs or crashes
the decoder is killed by the same watchdog as clip decoding. The video is decoded once,
sequentially, with PyAV at a small analysis width (cut detection compares colour histograms and
needs no detail; a 1080p frame costs ~50x more to convert), and each frame is fed to the
detector's `process_frame`. Why PyAV here and not decord: random access is useless for a
sequential scan, and decord's threaded decoder fails on some VP9 files when asked for every
frame; frame numbers count decoded frames, the same numbering decord's indices and the PyAV
fallback of `decode_clip` use.

Why PySceneDetect's detector objects and not `scenedetect.detect(path)`: that helper opens the
file with its own backend (OpenCV by default), whose frame count can differ from decord's on
files with edit lists; feeding our own decoded frames keeps one numbering for shots and windows.

`min_scene_len` defaults to 1 frame (PySceneDetect's own default is 15): a cut suppressed because
it follows another within 15 frames would sit inside a "shot" and a window could span it; a
false cut (a flash) only costs the windows that would have crossed it.
"""

from __future__ import annotations

from dataclasses import dataclass

DETECTORS = ("content", "adaptive", "none")


@dataclass(frozen=True)
class Shot:
    """Source frames [start, end) between two cuts (end exclusive)."""

    start: int
    end: int

    def __len__(self) -> int:
        return self.end - self.start

    def as_list(self) -> list[int]:
        return [self.start, self.end]


def shots_from_cuts(cuts: list[int], num_frames: int) -> list[Shot]:
    """Cut frame numbers (first frame of each new shot) -> the shots covering [0, num_frames)."""
    bounds = [0] + sorted({c for c in cuts if 0 < c < num_frames}) + [num_frames]
    return [Shot(a, b) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]


def _make_detector(name: str, threshold: float | None, min_scene_len: int):
    from scenedetect.detectors import AdaptiveDetector, ContentDetector

    if name == "content":
        return ContentDetector(min_scene_len=min_scene_len,
                               **({} if threshold is None else {"threshold": float(threshold)}))
    if name == "adaptive":
        return AdaptiveDetector(min_scene_len=min_scene_len,
                                **({} if threshold is None else {"adaptive_threshold": float(threshold)}))
    raise ValueError(f"clip.scene_detector must be one of {DETECTORS}, got {name!r}")


class ShotDetector:
    """path -> (shots, number of decoded frames). `detector="none"`: the whole video is one shot."""

    name = "scenes"

    def __init__(self, detector: str = "content", threshold: float | None = None, min_scene_len: int = 1,
                 analysis_width: int = 160) -> None:
        if detector not in DETECTORS:
            raise ValueError(f"clip.scene_detector must be one of {DETECTORS}, got {detector!r}")
        self.detector, self.threshold = detector, threshold
        self.min_scene_len, self.analysis_width = int(min_scene_len), int(analysis_width)

    def cuts(self, path: str) -> tuple[list[int], int, float]:
        """(cut frame numbers, frames decoded, fps) of `path`; raises on undecodable input."""
        import av
        from scenedetect import FrameTimecode

        detector = None if self.detector == "none" else _make_detector(self.detector, self.threshold,
                                                                        self.min_scene_len)
        cuts: list[int] = []
        count = 0
        with av.open(path) as container:
            stream = container.streams.video[0]
            fps = float(stream.average_rate or stream.guessed_rate or 25.0)
            for frame in container.decode(video=0):
                if detector is not None:
                    width = min(self.analysis_width, frame.width)
                    height = max(2, round(frame.height * width / frame.width))
                    image = frame.to_ndarray(width=width, height=height, format="bgr24")
                    cuts += [c.frame_num for c in detector.process_frame(FrameTimecode(count, fps), image)]
                count += 1
        if detector is not None and count:
            cuts += [c.frame_num for c in detector.post_process(FrameTimecode(count, fps))]
        return sorted(set(cuts)), count, fps

    def __call__(self, path: str, num_source_frames: int | None = None) -> list[Shot]:
        """Shots of `path`. `num_source_frames` (the decoder's count, when known) bounds the last
        shot, so a container that decodes fewer frames than it declares ends the shots early."""
        cuts, count, _ = self.cuts(path)
        total = count if num_source_frames is None else min(count, int(num_source_frames))
        return shots_from_cuts(cuts, total)

