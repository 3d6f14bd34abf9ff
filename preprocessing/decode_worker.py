"""Child-process side of clip decoding: decord runs here (PyAV where decord fails), never in
the job's own process.

Why a separate process: decord's native code can hang while holding the GIL (dmlc/decord#269,
#363, #373) and leaks memory over many files (dmlc/decord#157, #208). A thread cannot be interrupted in that
state, a process can be killed. `DecodeStep` (preprocessing/steps/decode.py) starts `serve` in a
fresh interpreter (`python -m preprocessing.decode_worker FD`: no decord state is ever inherited
through fork), sends one request per row
and kills + restarts the worker when a request exceeds its timeout.

Everything in this module except `serve`'s loop is a plain function so it can be tested
in-process too.
"""

from __future__ import annotations

import re
import resource
import sys
import traceback
from typing import Any

import numpy as np


def clip_indices(num_source_frames: int, num_frames: int, stride: int, start: str) -> list[int]:
    """Deterministic frame indices `start + stride * i`; raises ValueError if the video is short.

    start="center": the window is centred in the video (skips intros/outros, same clip every
    run); start="begin": from frame 0.
    """
    needed = stride * (num_frames - 1) + 1
    if num_source_frames < needed:
        raise ValueError(f"too_short: {num_source_frames} frames < needed {needed}")
    if start == "center":
        first = (num_source_frames - needed) // 2
    elif start == "begin":
        first = 0
    else:
        raise ValueError(f"clip start must be 'center' or 'begin', got {start!r}")
    return [first + stride * i for i in range(num_frames)]


def resize_center_crop(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Aspect-preserving resize so the frame covers `size` (H, W), then a centre crop."""
    import cv2

    target_h, target_w = size
    src_h, src_w = frame.shape[:2]
    scale = max(target_h / src_h, target_w / src_w)
    new_h, new_w = max(target_h, round(src_h * scale)), max(target_w, round(src_w * scale))
    if (new_h, new_w) != (src_h, src_w):
        # INTER_AREA avoids aliasing when shrinking 1080p; linear when upscaling tiny sources.
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        frame = cv2.resize(frame, (new_w, new_h), interpolation=interp)
    top, left = (new_h - target_h) // 2, (new_w - target_w) // 2
    return np.ascontiguousarray(frame[top : top + target_h, left : left + target_w])


def flow_input_frame(frame: np.ndarray, clip_size: tuple[int, int], flow_size: int) -> np.ndarray:
    """The clip's crop of a source frame at RAFT's input size (flow_size, flow_size).

    Same region as `resize_center_crop(frame, clip_size)` (the clip's aspect, centred), taken at a
    resolution of at least `flow_size` from the source instead of from the (smaller) clip, then
    resized to the square RAFT input exactly as FlowStep resizes a clip."""
    import cv2

    height, width = clip_size
    scale = max(flow_size / height, flow_size / width)
    crop = resize_center_crop(frame, (max(flow_size, round(height * scale)), max(flow_size, round(width * scale))))
    if crop.shape[:2] != (flow_size, flow_size):
        crop = cv2.resize(crop, (flow_size, flow_size), interpolation=cv2.INTER_AREA)
    return crop


class _FramesFailed(Exception):
    pass


def _decode_window(reader: Any, path: str, indices: list[int], size: tuple[int, int], flow_size: int | None,
                   num_source: int, chunk: int) -> dict[str, Any]:
    """Frames `indices` at clip size (and at flow size from the source when `flow_size` is set)."""
    frames = np.empty((len(indices), size[0], size[1], 3), dtype=np.uint8)
    flow_frames = None if flow_size is None else np.empty((len(indices), flow_size, flow_size, 3), np.uint8)

    def put(position: int, frame: np.ndarray) -> None:
        frames[position] = resize_center_crop(frame, size)
        if flow_frames is not None:
            flow_frames[position] = flow_input_frame(frame, size, flow_size)

    source_hw = (0, 0)
    try:
        for lo in range(0, len(indices), chunk):
            batch = reader.get_batch(indices[lo : lo + chunk]).asnumpy()
            if batch.ndim != 4 or batch.shape[0] != len(indices[lo : lo + chunk]) or batch.shape[-1] != 3:
                raise RuntimeError(f"got frames shaped {batch.shape} for indices {indices[lo:lo + chunk]}")
            source_hw = batch.shape[1:3]
            for j, frame in enumerate(batch):
                put(lo + j, frame)
            del batch
    except Exception as exc:  # truncated files: the container claims more frames than exist
        # decord also fails on some files PyAV reads right (96-px-wide H.264 on some CPUs: its
        # padded rows come back as a 4th channel); a truncated file fails in both.
        try:
            source_hw = pyav_frames(path, indices, put)
        except Exception as fallback_exc:
            raise _FramesFailed(f"decode_error: {_one_line(exc)} (container reports {num_source} frames); "
                                f"PyAV: {_one_line(fallback_exc)}") from None
    out = {"frames": frames, "frame_indices": indices, "source_hw": source_hw}
    if flow_frames is not None:
        out["flow_frames"] = flow_frames
    return out


def decode_clip(
    path: str,
    num_frames: int,
    stride: int,
    size: tuple[int, int],
    start: str = "center",
    threads: int = 1,
    chunk: int = 4,
    flow_size: int | None = None,
    windows: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Decode only the sampled frames of `path`, resized + centre-cropped to `size`.

    Returns {"status": "ok", frames, fps, frame_indices, num_source_frames, source_height,
    source_width} or {"status": "filtered"/"error", "reason": ...}. Frames are decoded `chunk`
    at a time so at most `chunk` full-resolution frames are alive (bounded memory on 1080p/4K).
    `flow_size`: also return `flow_frames` (F, flow_size, flow_size, 3), RAFT's input taken from
    the source frames (see `flow_input_frame`).
    `windows` ({max_windows, detector, threshold}): scene-aware mode. Shots are detected
    (steps/scenes.py), up to max_windows windows planned inside them (steps/windows.py), and the
    result carries `shots` and `windows` (one dict per window: frames, frame_indices,
    window_index, shot, shot_index[, flow_frames]) instead of top-level frames.
    """
    import decord

    try:
        reader = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=threads)
        num_source = len(reader)
        fps = float(reader.get_avg_fps())
    except Exception as exc:  # decord raises RuntimeError / DECORDError on unreadable input
        return {"status": "error", "reason": f"decode_error: {_one_line(exc)}"}
    plans = None
    if windows is None:
        try:
            index_lists = [clip_indices(num_source, num_frames, stride, start)]
        except ValueError as exc:
            return {"status": "filtered", "reason": str(exc)}
    else:
        from preprocessing.steps.scenes import ShotDetector
        from preprocessing.steps.windows import plan_windows, window_span

        try:
            shots = ShotDetector(windows["detector"], windows.get("threshold"))(path, num_source)
        except Exception as exc:  # PyAV cannot scan what decord opened (damaged stream)
            return {"status": "error", "reason": f"scene_detect_error: {_one_line(exc)}"}
        plans = plan_windows(shots, num_frames, stride, int(windows["max_windows"]))
        if not plans:
            span = window_span(num_frames, stride)
            longest = max((len(s) for s in shots), default=0)
            return {"status": "filtered",
                    "reason": f"no_window: no shot holds {span} frames ({len(shots)} shots, longest {longest})"}
        index_lists = [w.frame_indices for w in plans]
    decoded = []
    try:
        for indices in index_lists:
            decoded.append(_decode_window(reader, path, indices, size, flow_size, num_source, chunk))
    except _FramesFailed as exc:
        return {"status": "error", "reason": str(exc)}
    finally:
        del reader
    source_hw = decoded[-1].pop("source_hw")
    for d in decoded:
        d.pop("source_hw", None)
    result: dict[str, Any] = {"status": "ok", "fps": fps, "num_source_frames": num_source,
                              "source_height": int(source_hw[0]), "source_width": int(source_hw[1])}
    if plans is None:
        result = {"status": "ok", **decoded[0], **{k: v for k, v in result.items() if k != "status"}}
    else:
        result["shots"] = [s.as_list() for s in shots]
        result["windows"] = [dict(d, window_index=w.index, shot=w.shot.as_list(), shot_index=w.shot_index)
                             for d, w in zip(decoded, plans)]
    return result


def decode_with_pyav(path: str, indices: list[int], size: tuple[int, int], out: np.ndarray) -> tuple[int, int]:
    """`pyav_frames` into `out`, resized + centre-cropped to `size`; returns the source (H, W)."""

    def put(position: int, frame: np.ndarray) -> None:
        out[position] = resize_center_crop(frame, size)

    return pyav_frames(path, indices, put)


def pyav_frames(path: str, indices: list[int], put: Any) -> tuple[int, int]:
    """The fallback decoder: frames `indices` of `path` (decode order, as decord counts them),
    each handed to `put(position, rgb_frame)`; returns the source (H, W). Decodes sequentially up
    to the last index and converts only the wanted frames, so memory stays at one frame."""
    import av

    wanted = {index: position for position, index in enumerate(indices)}
    source_hw, found = (0, 0), 0
    with av.open(path) as container:
        for number, frame in enumerate(container.decode(video=0)):
            if number in wanted:
                rgb = frame.to_ndarray(format="rgb24")
                put(wanted[number], rgb)
                source_hw, found = rgb.shape[:2], found + 1
                if found == len(wanted):
                    return source_hw
    raise RuntimeError(f"the stream has {found} of the {len(wanted)} frames asked for (last index {indices[-1]})")


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MiB.

    Linux: VmHWM, the high-water mark of this process image (ru_maxrss is not usable here: it
    survives fork+exec, so a worker would report its parent's peak). Elsewhere ru_maxrss (KiB on
    Linux, bytes on macOS)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 1024 / 1024 if sys.platform == "darwin" else rss / 1024


def _one_line(exc: BaseException) -> str:
    """One short line: decord's messages carry timestamps and its own source paths, drop them."""
    text = re.sub(r"\[\d\d:\d\d:\d\d\] \S+:\d+: ", "", str(exc))
    text = " ".join(text.split()) or type(exc).__name__
    return text[:300]


def serve(conn: Any) -> None:
    """Worker loop: receive decode kwargs, send back the result dict; None stops the loop."""
    import decord  # noqa: F401  (import cost paid at start-up, not inside the first timeout)

    conn.send("ready")
    while True:
        try:
            request = conn.recv()
        except EOFError:
            return
        if request is None:
            return
        try:
            result = decode_clip(**request)
        except Exception as exc:  # a bug must not kill the worker silently
            result = {
                "status": "error",
                "reason": f"decode_error: {_one_line(exc)}",
                "traceback": traceback.format_exc(),
            }
        result["decode_peak_rss_mb"] = peak_rss_mb()
        conn.send(result)


def _die_with_parent() -> None:
    """Linux: get SIGKILL when the parent dies, so a hung worker never outlives the job."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


if __name__ == "__main__":
    from multiprocessing.connection import Connection

    _die_with_parent()
    serve(Connection(int(sys.argv[1])))
