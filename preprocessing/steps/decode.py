"""DecodeStep: sampled clip frames from a video file with decord, under a watchdog.

Decoding runs in one persistent child process (`preprocessing.decode_worker.serve`, a fresh
interpreter, so no decord reader is ever inherited through fork), reused across rows.
Each row gets `timeout_s`: a worker that overruns it (decord hangs holding the GIL) or dies
(segfault on a corrupt file) is killed and restarted on the next row, and the row gets
status "error" with reason `decode_timeout: >{timeout}s` / `decode_crash: ...`. The worker is
also recycled every `restart_every` rows because decord leaks memory over many files.

Start of the window: centred in the video by default (`start="center"`), deterministic, skips
intros/outros; `start="begin"` starts at frame 0. Indices are `first + stride * i`.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from preprocessing.steps.base import Sample, Step, mark

_REPO_ROOT = str(Path(__file__).resolve().parents[2])  # so the child imports this checkout


class DecodeTimeout(Exception):
    pass


class DecodeCrash(Exception):
    pass


class DecodeWorker:
    """A persistent decode child process with a per-request timeout. Not thread-safe.

    The child is a fresh interpreter (`python -m preprocessing.decode_worker FD`), i.e. the
    'spawn' start method without multiprocessing's re-import of the parent's `__main__` (which
    breaks scripts lacking an `if __name__ == "__main__"` guard, notebooks and some Ray workers).
    Requests and replies travel as pickles over a socketpair wrapped in a
    `multiprocessing.connection.Connection`.
    """

    def __init__(self, startup_timeout_s: float = 120.0, restart_every: int = 500) -> None:
        self.startup_timeout_s = startup_timeout_s
        self.restart_every = restart_every
        self._proc: subprocess.Popen | None = None
        self._conn: Connection | None = None
        self._served = 0
        self.restarts = 0

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def _start(self) -> None:
        parent_sock, child_sock = socket.socketpair()
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [_REPO_ROOT, env.get("PYTHONPATH")]))
        proc = subprocess.Popen(
            [sys.executable, "-m", "preprocessing.decode_worker", str(child_sock.fileno())],
            pass_fds=[child_sock.fileno()], env=env, stdin=subprocess.DEVNULL,
        )
        child_sock.close()
        conn = Connection(parent_sock.detach())
        if not conn.poll(self.startup_timeout_s):
            proc.kill()
            proc.wait()
            conn.close()
            raise RuntimeError(f"decode worker did not start within {self.startup_timeout_s}s")
        try:
            conn.recv()  # "ready"
        except EOFError as exc:
            conn.close()
            raise RuntimeError(
                f"decode worker died at start-up (exit code {proc.wait()}); its stderr is above"
            ) from exc
        self._proc, self._conn, self._served = proc, conn, 0

    def request(self, kwargs: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        if self._proc is None or self._proc.poll() is not None or self._served >= self.restart_every:
            self.stop()
            self._start()
        assert self._conn is not None and self._proc is not None
        self._served += 1
        self._conn.send(kwargs)
        if not self._conn.poll(timeout_s):
            self.kill()
            raise DecodeTimeout()
        try:
            return self._conn.recv()
        except (EOFError, OSError) as exc:
            try:
                code = self._proc.wait(5)
            except subprocess.TimeoutExpired:
                code = None
            self.kill()
            raise DecodeCrash(f"decode worker exited with code {code}") from exc

    def kill(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            self.restarts += 1
        self._close_handles()

    def stop(self) -> None:
        """Ask a healthy worker to exit; kill it if it does not."""
        if self._proc is not None and self._proc.poll() is None and self._conn is not None:
            try:
                self._conn.send(None)
                self._proc.wait(5)
            except (OSError, subprocess.TimeoutExpired):
                self._proc.kill()
                self._proc.wait()
        self._close_handles()

    def _close_handles(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._proc, self._conn = None, None


def _is_url(path: str) -> bool:
    return "://" in path


class DecodeStep(Step):
    """Sample dict with `video` (or `local_path`, set by a fetch step) -> frames + metadata.

    Adds: frames uint8 (F, H, W, 3) at `size`, fps, frame_indices, num_source_frames,
    source_height, source_width, stride, decode_peak_rss_mb (peak RSS of the decode worker);
    with `flow_size`, flow_frames (RAFT's input from the source); with `windows`, shots and
    windows (one dict per window, split into samples by steps/windows.py) instead of frames.
    """

    name = "decode"

    def __init__(
        self,
        num_frames: int,
        stride: int,
        size: tuple[int, int] | list[int],
        timeout_s: float = 60.0,
        start: str = "center",
        threads: int = 1,
        restart_every: int = 500,
        startup_timeout_s: float = 120.0,
        flow_size: int | None = None,
        windows: dict[str, Any] | None = None,
    ) -> None:
        if num_frames < 2:
            raise ValueError(f"clip.num_frames must be >= 2 (flow needs pairs), got {num_frames}")
        if stride < 1:
            raise ValueError(f"clip.stride must be >= 1, got {stride}")
        height, width = (int(v) for v in size)
        if height < 2 or width < 2:
            raise ValueError(f"clip.size must be [H, W] with H, W >= 2, got {list(size)}")
        if start not in ("center", "begin"):
            raise ValueError(f"clip start must be 'center' or 'begin', got {start!r}")
        self.num_frames, self.stride, self.size = num_frames, stride, (height, width)
        self.timeout_s, self.start, self.threads = timeout_s, start, threads
        # flow_size: RAFT input from the source frames; windows: scene-aware windows (decode_clip)
        self.extra = {k: v for k, v in (("flow_size", flow_size), ("windows", windows)) if v is not None}
        self.worker = DecodeWorker(startup_timeout_s=startup_timeout_s, restart_every=restart_every)

    def process(self, sample: Sample) -> Sample:
        path = str(sample.get("local_path") or sample["video"])
        if not _is_url(path):
            if not os.path.exists(path):
                return mark(sample, "error", f"missing: {path}")
            if os.path.isdir(path):
                return mark(sample, "error", f"decode_error: {path} is a directory")
        request = dict(path=path, num_frames=self.num_frames, stride=self.stride, size=self.size,
                       start=self.start, threads=self.threads, **self.extra)
        began = time.perf_counter()
        try:
            result = self.worker.request(request, self.timeout_s)
        except DecodeTimeout:
            return mark(sample, "error", f"decode_timeout: >{self.timeout_s:g}s")
        except DecodeCrash as exc:
            return mark(sample, "error", f"decode_crash: {exc}")
        sample["decode_seconds"] = time.perf_counter() - began
        status = result.pop("status")
        if status != "ok":
            return mark(sample, status, result["reason"])
        sample.update(result)
        sample["stride"] = self.stride
        return sample

    def close(self) -> None:
        self.worker.stop()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass
