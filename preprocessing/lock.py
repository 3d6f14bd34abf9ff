"""An exclusive lock on the output folder, so two runs never write the same shards."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path


class OutputLockedError(RuntimeError):
    pass


class OutputLock:
    """fcntl.flock on `<dir>/.lock`; released by the kernel even if the process is killed."""

    def __init__(self, out_dir: str | Path) -> None:
        self.path = Path(out_dir) / ".lock"
        self._fd: int | None = None

    def __enter__(self) -> OutputLock:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:  # read-only / full / not permitted: say so before any work starts
            from preprocessing.shards import output_write_error

            raise output_write_error(f"cannot create the lock {self.path} in output.dir", exc) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise OutputLockedError(
                f"output.dir {self.path.parent} is in use by another fyc-preprocess run "
                f"(pid {holder}, lock {self.path}); wait for it to finish or pick another output.dir"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
