"""Shard specs (brace pattern, glob, list; local paths or fsspec/pipe URLs) -> shard URLs.

Local patterns are expanded and checked here, before any training starts, so a typo names the
pattern (and the missing file) instead of surfacing as an empty or hanging loader.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence

import braceexpand


def is_remote(url: str) -> bool:
    """True for fsspec/HTTP/pipe URLs, which cannot be listed or checked cheaply here."""
    return url.startswith("pipe:") or "://" in url and not url.startswith("file://")


def expand_shards(spec: str | Sequence[str], key: str = "data.shards") -> list[str]:
    """Expand a shard spec into a sorted, de-duplicated list of URLs.

    Raises FileNotFoundError naming `key` and the pattern when a local pattern matches nothing
    or a brace-expanded local file is missing.
    """
    patterns = [spec] if isinstance(spec, str) else list(spec)
    if not patterns:
        raise FileNotFoundError(f"{key} is empty: give a brace pattern, a glob or a list of shards")
    urls: list[str] = []
    for pattern in patterns:
        pattern = str(pattern)
        for item in braceexpand.braceexpand(pattern):
            if is_remote(item):
                urls.append(item)
                continue
            path = os.path.expanduser(item.removeprefix("file://"))
            if glob.has_magic(path):
                matches = sorted(glob.glob(path))
                if not matches:
                    raise FileNotFoundError(f"{key}: pattern {pattern!r} matches no file")
                urls.extend(matches)
            elif os.path.isdir(path):
                matches = sorted(glob.glob(os.path.join(path, "*.tar")))
                if not matches:
                    raise FileNotFoundError(f"{key}: folder {path!r} holds no .tar shard")
                urls.extend(matches)
            elif os.path.isfile(path):
                urls.append(path)
            else:
                raise FileNotFoundError(
                    f"{key}: shard {path!r} (from pattern {pattern!r}) does not exist"
                )
    seen: set[str] = set()
    return [u for u in urls if not (u in seen or seen.add(u))]
