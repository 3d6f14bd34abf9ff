"""Copy samples' tar members out of input shards as raw bytes (no decode, no re-encode).

Random access by byte offset: `tarfile` lists a shard's headers once (each member's data
offset and size); reading a sample is then a seek and a read per member. webdataset only
streams whole shards, which would read every clip of a shard to copy one of them.
"""

from __future__ import annotations

import json
import tarfile
from functools import lru_cache
from pathlib import Path

from preprocessing.shards import encode_json

Index = dict[str, dict[str, tuple[int, int]]]  # key -> ext -> (offset, size)


class MemberError(OSError):
    """An input shard does not hold what its manifest says (names the shard and the key)."""


@lru_cache(maxsize=64)
def shard_index(path: str) -> Index:
    index: Index = {}
    try:
        with tarfile.open(path) as tar:
            for info in tar:
                if info.isreg():
                    key, _, ext = info.name.partition(".")
                    index.setdefault(key, {})[ext] = (info.offset_data, info.size)
    except (tarfile.TarError, OSError) as exc:
        raise MemberError(f"input shard {path} cannot be read ({type(exc).__name__}: {exc}); "
                          "re-run fyc-preprocess on that input to repair it") from exc
    return index


def read_members(shard: str | Path, key: str) -> dict[str, bytes]:
    """{ext: bytes} of sample `key` in `shard`, in the shard's member order."""
    shard = str(shard)
    members = shard_index(shard).get(key)
    if not members:
        raise MemberError(f"input shard {shard} has no sample {key!r} although its manifest lists it there")
    out = {}
    with open(shard, "rb") as f:
        for ext, (offset, size) in members.items():
            f.seek(offset)
            data = f.read(size)
            if len(data) != size:
                raise MemberError(f"input shard {shard} is truncated in {key}.{ext}")
            out[ext] = data
    return out


def with_prompt(json_bytes: bytes, motion_prompt: str) -> bytes:
    """The sample json with only `motion_prompt` replaced (same encoding as fyc-preprocess)."""
    meta = json.loads(json_bytes)
    meta["motion_prompt"] = motion_prompt
    return encode_json(meta)
