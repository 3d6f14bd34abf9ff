"""Map-style training dataset over indexed shards: sample i -> decoded training item.

Map-style (not a stream) so that a DataLoader with any number of workers yields batches in
the sampler's order, and resuming only has to restart the sampler at a position.

A sample that does not decode is reported to the handler (warn, count, stop past
data.max_skipped) and replaced by the next sample of the corpus that does: the batch keeps its
size (every DDP rank does the same work per step) and the replacement is the same on every run,
so a resumed run stays identical to an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from fyc_train.data.tar_index import SampleReader, ShardIndex


class IndexedShardDataset(Dataset):
    def __init__(self, shards: Sequence[ShardIndex], decode: Callable[[dict[str, Any]], dict[str, Any]],
                 handler: Callable[[Exception], bool]) -> None:
        self.shards = [s for s in shards if len(s)]
        self.sizes = [len(s) for s in self.shards]
        self.starts = np.concatenate([[0], np.cumsum(self.sizes)]).astype(np.int64)
        self.reader = SampleReader(self.shards)
        self.decode, self.handler = decode, handler

    def __len__(self) -> int:
        return int(self.starts[-1])

    def locate(self, index: int) -> tuple[int, int]:
        shard = int(np.searchsorted(self.starts, index, side="right")) - 1
        return shard, index - int(self.starts[shard])

    def __getitem__(self, index: int) -> dict[str, Any]:
        total = len(self)
        for attempt in range(total):
            candidate = (index + attempt) % total
            try:
                return self.decode(self.reader.read(*self.locate(candidate)))
            except Exception as exc:  # any per-sample failure: the handler decides (skip or stop)
                if not self.handler(exc):
                    raise
        raise RuntimeError(f"no sample of the {total} training samples decodes; see the warnings above")
