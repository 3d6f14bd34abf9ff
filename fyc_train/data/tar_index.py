"""Random access to the samples of WebDataset tar shards: an index of byte ranges per sample.

Exact mid-epoch resume needs to start reading at any sample of the epoch's order without
reading what came before it. webdataset reads tars as streams (its random-access `wids`
module is not part of webdataset 1.x), so the index is built here: one pass over each
shard's tar headers (seeks past the data; a few ms per shard on local disk), then each
sample is read by its members' (offset, size). Local paths use plain files; other URLs
(s3://, gs://, https://) go through fsspec's seekable files (range requests). `pipe:` URLs
cannot seek and are refused with a message.

Safety and damage follow tar_stream.py: member names with path separators or a leading dot
are skipped (reported once per sample), and a shard cut short keeps only the members whose
bytes are all there; each problem goes to the handler (warn + count), naming the shard.
"""

from __future__ import annotations

import collections
import os
import tarfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

from fyc_train.data.shards import is_remote
from fyc_train.data.tar_stream import ShardError, unsafe_member_sample


@dataclass
class ShardIndex:
    """Byte ranges of the samples of one shard: sample i has members {ext: (offset, size)}."""

    url: str
    keys: list[str] = field(default_factory=list)
    members: list[dict[str, tuple[int, int]]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.keys)


def open_shard(url: str) -> IO[bytes]:
    """A seekable binary file for a shard URL (local path, file://, or an fsspec URL)."""
    if url.startswith("pipe:"):
        raise ShardError(f"shard {url!r}: a pipe: URL cannot be read at a given sample (exact resume reads "
                         "samples by byte range); give a local path or an fsspec URL (s3://, gs://, https://)")
    if is_remote(url):
        import fsspec

        return fsspec.open(url, "rb").open()
    return open(os.path.expanduser(url.removeprefix("file://")), "rb")


def _split_name(name: str) -> tuple[str, str]:
    """webdataset's convention: key = path up to the first dot of the base name, ext = the rest."""
    base = name.rsplit("/", 1)[-1]
    key, _, ext = base.partition(".")
    return key, ext


def index_shard(url: str, handler: Callable[[Exception], bool]) -> ShardIndex:
    """Read the tar headers of one shard (not the data) into a ShardIndex."""
    index = ShardIndex(url)
    refused: set[str] = set()
    try:
        with open_shard(url) as raw:
            raw.seek(0, os.SEEK_END)
            size = raw.tell()
            raw.seek(0)
            with tarfile.open(fileobj=raw, mode="r:") as tar:
                for info in tar:
                    if not info.isreg() or info.name.startswith("__"):
                        continue
                    if (sample := unsafe_member_sample(info.name)) is not None:
                        if sample not in refused:
                            refused.add(sample)
                            handler(ShardError(f"shard {url}: member name {info.name!r} is not a plain file name "
                                               "(no path separators, no leading dot); sample skipped"))
                        continue
                    if info.offset_data + info.size > size:
                        raise ShardError(f"shard {url} is truncated: member {info.name!r} has "
                                         f"{max(0, size - info.offset_data)} of {info.size} bytes")
                    key, ext = _split_name(info.name)
                    if not index.keys or index.keys[-1] != key:
                        index.keys.append(key)
                        index.members.append({})
                    index.members[-1][ext] = (info.offset_data, info.size)
    except (tarfile.TarError, OSError, EOFError) as exc:
        # what was indexed before the damage stays usable (its bytes are all there)
        error = exc if isinstance(exc, ShardError) else ShardError(f"shard {url}: {type(exc).__name__}: {exc}")
        if not handler(error):
            raise error from exc
    return index


class SampleReader:
    """Reads samples by (shard, sample) from an index; keeps a few shards open per process
    (each DataLoader worker opens its own files after the fork)."""

    def __init__(self, shards: Sequence[ShardIndex], max_open: int = 8) -> None:
        self.shards, self.max_open = list(shards), max_open
        self._open: collections.OrderedDict[int, IO[bytes]] = collections.OrderedDict()
        self._pid = os.getpid()

    def _file(self, shard: int) -> IO[bytes]:
        if self._pid != os.getpid():  # forked: the parent's file offsets are shared, never reuse them
            self._open.clear()
            self._pid = os.getpid()
        handle = self._open.pop(shard, None) or open_shard(self.shards[shard].url)
        self._open[shard] = handle
        while len(self._open) > self.max_open:
            self._open.popitem(last=False)[1].close()
        return handle

    def read(self, shard: int, sample: int) -> dict[str, Any]:
        """{__key__, __url__, ext: bytes} like a webdataset sample."""
        index = self.shards[shard]
        handle = self._file(shard)
        out: dict[str, Any] = {"__key__": index.keys[sample], "__url__": index.url}
        for ext, (offset, size) in index.members[sample].items():
            handle.seek(offset)
            data = handle.read(size)
            if len(data) != size:
                raise ShardError(f"shard {index.url}: member {index.keys[sample]}.{ext} reads {len(data)} of "
                                 f"{size} bytes (the shard changed after it was indexed?)")
            out[ext] = data
        return out

    def __getstate__(self) -> dict[str, Any]:  # open files stay in the process that opened them
        return {**self.__dict__, "_open": collections.OrderedDict()}
