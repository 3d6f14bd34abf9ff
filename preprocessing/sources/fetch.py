"""Make a row's video available as a local file: local paths as-is, http(s) URLs downloaded
into a temporary folder with a timeout and a size cap, deleted when the caller is done."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from pathlib import Path
from collections.abc import Iterator, Sequence
from urllib.parse import urlparse

import requests
import urllib3


class FetchError(RuntimeError):
    """Carries a manifest reason, e.g. `fetch_error: HTTP 404` or `missing_file: /a.mp4`."""


def _download(url: str, dest: Path, timeout_s: float, max_bytes: int) -> None:
    deadline = time.monotonic() + timeout_s
    try:
        with requests.get(url, stream=True, timeout=(timeout_s, timeout_s)) as resp:
            if resp.status_code != 200:
                raise FetchError(f"fetch_error: HTTP {resp.status_code} for {url}")
            declared = int(resp.headers.get("Content-Length") or 0)
            if declared > max_bytes:
                raise FetchError(f"fetch_error: {declared} bytes exceeds input.max_bytes={max_bytes}")
            size = 0
            with dest.open("wb") as out:
                # read1, not iter_content: iter_content(n) blocks until n bytes arrive, so a server
                # dripping a byte at a time (never idle long enough for the read timeout) would
                # hold the row far past fetch_timeout_s; read1 returns what arrived, and the
                # deadline is checked after every read.
                while True:
                    block = resp.raw.read1(1 << 16, decode_content=True)
                    if not block:
                        break
                    size += len(block)
                    if size > max_bytes:
                        raise FetchError(f"fetch_error: more than input.max_bytes={max_bytes} bytes")
                    if time.monotonic() > deadline:
                        raise FetchError(f"fetch_error: download exceeded input.fetch_timeout_s={timeout_s}")
                    out.write(block)
    except (requests.RequestException, urllib3.exceptions.HTTPError) as exc:  # read1 raises urllib3's own
        raise FetchError(f"fetch_error: {type(exc).__name__}: {exc}"[:300]) from None


@contextlib.contextmanager
def local_video(video: str, allowed_schemes: Sequence[str], timeout_s: float, max_bytes: int) -> Iterator[str]:
    """Yield a local path for `video`; raise FetchError (with a manifest reason) if unusable."""
    if "://" not in video:
        path = Path(video)
        if not path.is_file():
            raise FetchError(f"missing_file: {video}")
        if path.stat().st_size == 0:
            raise FetchError(f"empty_file: {video}")
        yield video
        return
    scheme = urlparse(video).scheme.lower()
    if scheme not in allowed_schemes:
        raise FetchError(f"bad_url: scheme {scheme!r} not in input.allowed_schemes={list(allowed_schemes)}")
    tmp = tempfile.mkdtemp(prefix="fyc-fetch-")
    try:
        suffix = Path(urlparse(video).path).suffix[:8] or ".mp4"
        dest = Path(tmp) / f"video{suffix}"
        _download(video, dest, timeout_s, max_bytes)
        if os.path.getsize(dest) == 0:
            raise FetchError(f"empty_file: {video} returned no bytes")
        yield str(dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
