"""Atomic, byte-deterministic WebDataset shard writing.

Why not `webdataset.ShardWriter`: it opens its first tar at once under the final name and never
renames atomically, so a killed run leaves a truncated shard that readers
take for complete. Here each shard is written with `webdataset.TarWriter` to `<name>.tar.tmp`,
fsynced, then `os.replace`d into place; a fixed mtime/owner makes the same samples give the same
bytes, so a resumed run equals an uninterrupted one.
"""

from __future__ import annotations

import errno
import json
import os
import re
from pathlib import Path
from typing import Any
from collections.abc import Iterable

import webdataset as wds

KEY_PATTERN = re.compile(r"^[A-Za-z0-9_-]+$")


class ShardWriteError(OSError):
    """The output folder cannot take the shard (read-only, full, ...); nothing partial remains."""


def encode_json(data: dict[str, Any]) -> bytes:
    return json.dumps(data, sort_keys=True, ensure_ascii=False, allow_nan=False).encode("utf-8")


def output_write_error(what: str, exc: OSError) -> ShardWriteError:
    """A ShardWriteError saying `what` failed, why in words (full, read-only, ...), and what to do."""
    hint = {errno.ENOSPC: "the disk is full", errno.EROFS: "the file system is read-only",
            errno.EACCES: "permission denied", errno.EFBIG: "file size limit reached",
            errno.EDQUOT: "disk quota exceeded"}.get(exc.errno or 0, exc.strerror or str(exc))
    return ShardWriteError(exc.errno or errno.EIO,
                           f"{what}: {hint} ({exc}); free space or set output.dir to a writable folder, "
                           "then re-run to resume")


def check_key(key: str) -> str:
    if not KEY_PATTERN.fullmatch(key):  # fullmatch: `$` would accept a trailing newline
        raise ValueError(f"invalid sample key {key!r}: only [A-Za-z0-9_-] allowed (no dots or slashes)")
    return key


def write_shard(path: str | Path, samples: Iterable[dict[str, Any]]) -> int:
    """Write samples ({key, mp4: bytes, json: dict, mask_png: bytes}) to `path` atomically.

    Returns the number of samples written. On any OSError the temporary file is removed and a
    ShardWriteError naming the path and the cause is raised.
    """
    return write_member_shard(path, ({"__key__": s["key"], "mp4": s["mp4"], "json": encode_json(s["json"]),
                                      "mask.png": s["mask_png"]} for s in samples))


def write_member_shard(path: str | Path, samples: Iterable[dict[str, Any]]) -> int:
    """Write samples given as raw members ({"__key__": key, ext: bytes, ...}) to `path` atomically
    (same guarantees as write_shard; members are stored as given, in sorted extension order)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    count = 0
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as stream:
            writer = wds.TarWriter(stream, user="fyc", group="fyc", mode=0o444, encoder=False, mtime=0.0)
            for sample in samples:
                writer.write({**sample, "__key__": check_key(sample["__key__"])})
                count += 1
            writer.close()
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(tmp, path)
    except BaseException as exc:  # any failure (bad key, disk, kill signal): no partial file stays
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        if not isinstance(exc, OSError):
            raise
        raise output_write_error(f"cannot write shard {path}", exc) from exc
    return count


def remove_stale_temporaries(out_dir: str | Path) -> list[Path]:
    """Delete `*.tmp` files a killed run left behind (called under the output lock)."""
    removed = []
    for sub in ("shards", "parts", "."):
        folder = Path(out_dir) / sub
        if folder.is_dir():
            for tmp in folder.glob("*.tmp"):
                tmp.unlink(missing_ok=True)
                removed.append(tmp)
    return removed
