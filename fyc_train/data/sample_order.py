"""The training sample order: a pure function of (seed, pass, rank, position).

Every rank reads an endless stream of passes over the corpus. Pass p shuffles the shard order
(seeded by seed and p), cuts the concatenated samples into blocks of `block` samples and
shuffles inside each block (mosaicml-streaming's block shuffle: random enough, and the ranks
read from the same few shards at a time). Rank r takes every world_size-th sample of that
order starting at r, so the ranks of one step see different samples; a pass ends after
`len // world_size` samples per rank, the same count on every rank (DDP needs equal steps).

Position q of rank r is computable without generating anything before it (one permutation of
the current pass, cached), so a resumed run starts at its position directly: this is what
makes resume at any step cost the same at step 10 and at step 60,000. torch's samplers
(DistributedSampler, RandomSampler) have no notion of an endless multi-pass position, hence
this small sampler.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler


class PassOrder:
    """Global sample indices (into the concatenated shards) of pass p, in training order."""

    def __init__(self, shard_sizes: Sequence[int], seed: int, block: int) -> None:
        self.sizes = np.asarray(shard_sizes, dtype=np.int64)
        self.starts = np.concatenate([[0], np.cumsum(self.sizes)[:-1]]).astype(np.int64)
        self.total = int(self.sizes.sum())
        self.seed, self.block = seed, max(1, int(block))
        self._cached: tuple[int, np.ndarray] | None = None

    def __call__(self, p: int) -> np.ndarray:
        if self._cached is None or self._cached[0] != p:
            rng = np.random.default_rng([self.seed, p])
            shards = rng.permutation(len(self.sizes))
            order = np.concatenate([np.arange(self.starts[s], self.starts[s] + self.sizes[s]) for s in shards])
            for begin in range(0, len(order), self.block):
                rng.shuffle(order[begin:begin + self.block])
            self._cached = (p, order)
        return self._cached[1]


class ResumableSampler(Sampler[int]):
    """Rank `rank`'s sample indices for positions [start, start + length) of its endless stream.

    The data module builds one per loader epoch with start = epoch * steps_per_epoch * batch_size;
    within the epoch, torchdata's StatefulDataLoader skips the indices of the batches already
    yielded (integers only, no sample is read or decoded).
    """

    def __init__(self, shard_sizes: Sequence[int], seed: int, rank: int, world_size: int, start: int,
                 length: int, block: int = 256, epoch_length: int | None = None) -> None:
        self.order = PassOrder(shard_sizes, seed, block)
        if self.order.total < world_size:
            raise ValueError(f"{self.order.total} training samples cannot feed {world_size} ranks: every rank "
                             "needs at least one sample per pass; add shards")
        self.rank, self.world_size, self.start, self.length = rank, world_size, start, length
        self.per_rank = self.order.total // world_size
        self.epoch_length = length if epoch_length is None else epoch_length

    def index_at(self, position: int) -> int:
        p, j = divmod(position, self.per_rank)
        return int(self.order(p)[j * self.world_size + self.rank])

    def __iter__(self) -> Iterator[int]:
        for position in range(self.start, self.start + self.length):
            yield self.index_at(position)

    def __len__(self) -> int:
        return self.epoch_length
