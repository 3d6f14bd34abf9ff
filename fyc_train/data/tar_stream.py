"""Tar shard -> samples, like webdataset.tarfile_to_samples, but truncation is an error.

webdataset's tar iterator reads members in stream mode and a shard cut short (interrupted
copy, partial download) simply ends early: the lost samples vanish without a trace. Here every
member's data length is checked against its header, a broken stream raises, and members whose
names carry path separators or a leading dot are skipped (the rest of the shard is still read);
each problem goes to the handler (skip + count) naming the shard. The remaining stages (url opening, grouping by key) are webdataset's own.
"""

from __future__ import annotations

import re
import tarfile
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from webdataset.tariterators import group_by_keys, url_opener


class ShardError(IOError):
    """A shard that cannot be read to its end (names the shard and the member)."""


class _TailTracker:
    """File-like wrapper remembering the last 1024 bytes read: a complete tar ends with two
    zero blocks; a shard cut at a member boundary does not (tarfile ends silently there)."""

    def __init__(self, raw) -> None:
        self.raw, self.tail = raw, b""

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size)
        self.tail = (self.tail + data)[-1024:]
        return data

    def drain_and_check(self) -> bool:
        while self.read(1 << 16):
            pass
        return len(self.tail) == 1024 and not any(self.tail)


def unsafe_member_sample(name: str) -> str | None:
    """The sample a member belongs to when its name is not a plain file name (path separators or
    a leading dot: such a member is skipped, never written anywhere); None for a safe name."""
    if "/" in name or "\\" in name or name.startswith("."):
        return re.split(r"[/\\]", name)[-1].split(".")[0]
    return None


def _members(source: dict[str, Any], handler: Callable[[Exception], bool]) -> Iterator[dict[str, Any]]:
    url = source.get("url", "?")
    raw = _TailTracker(source["stream"])
    refused: set[str] = set()  # unsafe sample names already reported in this shard
    try:
        stream = tarfile.open(fileobj=raw, mode="r|*")
        for info in stream:
            if not info.isreg() or info.name.startswith("__"):
                continue
            if (sample := unsafe_member_sample(info.name)) is not None:
                # Skip just this member (stream mode moves past its data on the next header):
                # the good samples after it in the shard are still read. Reported once per
                # sample (its members share the part before the first dot of the base name).
                if sample not in refused:
                    refused.add(sample)
                    if not handler(ShardError(f"shard {url}: member name {info.name!r} is not a plain file "
                                              "name (no path separators, no leading dot); sample skipped")):
                        raise ShardError(f"shard {url}: member name {info.name!r} is not a plain file name")
                continue
            data = stream.extractfile(info).read()
            if len(data) != info.size:
                raise ShardError(f"shard {url} is truncated: member {info.name!r} has "
                                 f"{len(data)} of {info.size} bytes")
            yield {"fname": info.name, "data": data, "__url__": url}
            stream.members = []  # stream mode would otherwise keep every header in memory
        if not raw.drain_and_check():
            raise ShardError(f"shard {url} is truncated: it ends without the tar end-of-archive blocks")
    except (tarfile.TarError, OSError, EOFError) as exc:
        error = exc if isinstance(exc, ShardError) else ShardError(f"shard {url}: {type(exc).__name__}: {exc}")
        if not handler(error):
            raise error from exc
    finally:
        close = getattr(source.get("stream"), "close", None)
        if close:
            close()


def checked_tar_samples(src: Iterable[dict[str, Any]], handler: Callable[[Exception], bool]) -> Iterator[dict[str, Any]]:
    """Pipeline stage: stream of {url} -> stream of samples {__key__, __url__, ext: bytes}."""

    def files() -> Iterator[dict[str, Any]]:
        for source in url_opener(src, handler=handler):
            yield from _members(source, handler)

    return group_by_keys(files(), handler=handler)


def tar_samples(handler: Callable[[Exception], bool]) -> Callable[[Iterable[dict[str, Any]]], Iterator[dict[str, Any]]]:
    """`wds.DataPipeline` stage factory (like wds.tarfile_to_samples(handler=...))."""
    return lambda src: checked_tar_samples(src, handler)
