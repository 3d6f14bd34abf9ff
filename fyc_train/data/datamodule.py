"""LightningDataModule over WebDataset shards written by fyc-preprocess.

Training data, exact at any step: the shards are indexed once (tar headers: the byte range of
every sample, tar_index.py), and every rank reads its own part of an endless, seeded order of
passes over the corpus (sample_order.py: shard order and block shuffle per pass; rank r takes
every world_size-th sample, so ranks see different samples and run equal step counts). A
map-style dataset reads and decodes sample i; the DataLoader's workers keep the sampler's order.

Resume: the data module counts the training batches the steps actually consumed
(`on_before_batch_transfer`, which Lightning calls for the batch a step runs on, never for a
batch prefetched by the loader or its workers) and saves that count in every checkpoint. A
resumed run starts its sampler at that position: nothing consumed is read or decoded again, and
the cost does not grow with the steps done. Written by hand because webdataset's streams
(shuffle buffers, resampled shards) cannot be restarted at a sample, and a loader's own state
(torchdata's StatefulDataLoader) counts what its workers fetched ahead; the count of consumed
batches is the one figure that is right whatever the workers and the prefetching did (as in
mosaicml-streaming, which stores the samples seen in the epoch).

The validation stream is read whole by every rank through webdataset (split by worker).
Bad samples (corrupt mp4, broken png/json, truncated tar) are skipped by `SkipCounter`, which
warns, counts in a shared-memory integer visible from all DataLoader workers, and stops the run
once `max_skipped` is exceeded (a stream of nothing but errors would otherwise spin forever).
"""

from __future__ import annotations

import functools
import io
import warnings
import json
import logging
import multiprocessing
import tarfile
from collections.abc import Sequence
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
import webdataset as wds
from torch.utils.data import DataLoader

from fyc_train.data.decode import collate, decode_sample
from fyc_train.data.indexed_dataset import IndexedShardDataset
from fyc_train.data.sample_order import ResumableSampler
from fyc_train.data.shards import expand_shards, is_remote
from fyc_train.data.tar_index import ShardIndex, index_shard
from fyc_train.data.tar_stream import tar_samples

log = logging.getLogger(__name__)
# Lightning cannot see that the sampler restarts at the consumed position (module docstring)
warnings.filterwarnings("ignore", message=r"You're resuming from a checkpoint that ended before the epoch ended")


class TooManyBadSamples(RuntimeError):
    pass


class SkipCounter:
    """webdataset handler: warn, count, continue. The count lives in shared memory (created
    before workers fork/spawn), so the main process sees what every worker skipped."""

    def __init__(self, max_skipped: int = 1000) -> None:
        self.value = multiprocessing.Value("q", 0)
        self.max_skipped = max_skipped

    @property
    def count(self) -> int:
        return int(self.value.value)

    def __call__(self, exn: Exception) -> bool:
        with self.value.get_lock():
            self.value.value += 1
            count = self.value.value
        log.warning("skipped bad sample #%d: %s: %s", count, type(exn).__name__, exn)
        if count > self.max_skipped:
            raise TooManyBadSamples(
                f"{count} samples skipped (data.max_skipped={self.max_skipped}); last: {exn}. "
                "Check the shards (fyc-preprocess report) or raise data.max_skipped."
            ) from exn
        return True


def first_sample_json(urls: Sequence[str]) -> tuple[str, dict[str, Any]] | None:
    """(shard, json) of the first sample of the first readable local shard; None when no local
    shard could be read (remote shards are not downloaded for the checks before training)."""
    for url in urls:
        if is_remote(url):
            continue
        try:
            with tarfile.open(url) as tar:
                for member in tar:
                    if member.name.endswith(".json"):
                        return url, json.load(io.TextIOWrapper(tar.extractfile(member), "utf-8"))
        except (tarfile.TarError, OSError, ValueError):
            continue
    return None


def first_clip_meta(urls: Sequence[str]) -> dict[str, Any] | None:
    """json of the first sample of the first local shard (clip size check before training)."""
    found = first_sample_json(urls)
    return found[1] if found else None


def magnitude_quantiles(urls: Sequence[str], max_samples: int = 10000,
                        qs: Sequence[float] = (0.0, 0.1, 0.2, 0.25, 0.5, 0.75, 0.8, 0.9, 1.0)) -> dict[str, float]:
    """Quantiles of json `magnitude` over local shards (read json members only, no video).

    Saved in the checkpoint so sampling can map speed=slow|medium|fast to magnitudes that the
    model saw in training. Remote shards are skipped (scanning them would download them).
    """
    values: list[float] = []
    for url in urls:
        if is_remote(url) or len(values) >= max_samples:
            continue
        try:
            with tarfile.open(url) as tar:
                for member in tar:
                    if not member.name.endswith(".json") or len(values) >= max_samples:
                        continue
                    meta = json.load(io.TextIOWrapper(tar.extractfile(member), "utf-8"))
                    magnitude = float(meta.get("magnitude", "nan"))
                    if np.isfinite(magnitude):
                        values.append(magnitude)
        except (tarfile.TarError, OSError, ValueError) as exc:  # truncated shard: use what was read
            log.warning("magnitude scan of %s stopped early: %s", url, exc)
    if not values:
        return {}
    # keys are the quantile levels as strings ("0.5"): what fyc_train.sampling.speed reads
    return {str(float(q)): float(np.quantile(values, q)) for q in qs}


class FYCDataModule(pl.LightningDataModule):
    """Train/val loaders over FYC shards; batches follow docs/ARCHITECTURE.md (training batch)."""

    def __init__(
        self,
        shards: str | list[str],
        val_shards: str | list[str] | None = None,
        batch_size: int = 2,
        num_workers: int = 2,
        num_frames: int | None = None,
        resolution: list[int] | None = None,
        steps_per_epoch: int = 1000,
        val_batches: int = 4,
        shuffle_buffer: int = 256,
        seed: int = 0,
        max_skipped: int = 1000,
        pin_memory: bool = True,
        quantile_scan_samples: int = 10000,
    ) -> None:
        super().__init__()
        self.shards, self.val_shards_spec = shards, val_shards
        self.batch_size, self.num_workers, self.num_frames = batch_size, num_workers, num_frames
        self.resolution = tuple(resolution) if resolution else None
        self.steps_per_epoch, self.val_batches = steps_per_epoch, val_batches
        self.shuffle_buffer, self.seed = shuffle_buffer, seed
        self.pin_memory, self.quantile_scan_samples = pin_memory, quantile_scan_samples
        self.skipped = SkipCounter(max_skipped)  # created before any worker starts
        self.train_urls, self.val_urls = self.split_urls()
        self.magnitude_quantiles: dict[str, float] = {}
        self.train_index: list[ShardIndex] | None = None
        self.consumed_batches = 0  # training batches this rank's steps consumed (all ranks alike)

    def split_urls(self) -> tuple[list[str], list[str]]:
        """data.val_shards when given; else the last shard is held out (if there are 2+)."""
        train = expand_shards(self.shards, "data.shards")
        if self.val_shards_spec:
            return train, expand_shards(self.val_shards_spec, "data.val_shards")
        if len(train) >= 2:
            return train[:-1], train[-1:]
        log.warning("only one shard (%s): validating on the training shard; set data.val_shards "
                    "to hold data out", train[0])
        return train, train

    def setup(self, stage: str | None = None) -> None:
        if not self.magnitude_quantiles:
            self.magnitude_quantiles = magnitude_quantiles(self.train_urls, self.quantile_scan_samples)

    def _decode(self):
        return functools.partial(decode_sample, num_frames=self.num_frames, resolution=self.resolution)

    def index_train_shards(self) -> list[ShardIndex]:
        """Byte ranges of every training sample (tar headers only), built once per process."""
        if self.train_index is None:
            self.train_index = [index_shard(url, self.skipped) for url in self.train_urls]
            if not sum(len(s) for s in self.train_index):
                raise ValueError(f"data.shards: no readable sample in the {len(self.train_urls)} training shard(s) "
                                 f"{self.train_urls[:3]}...; see the warnings above")
        return self.train_index

    def _rank(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def train_dataloader(self) -> DataLoader:
        """The rest of the current epoch: positions consumed_batches .. the epoch's end (every
        epoch is exactly steps_per_epoch batches on every rank). Lightning rebuilds it each
        epoch (reload_dataloaders_every_n_epochs=1) and after a resume."""
        dataset = IndexedShardDataset(self.index_train_shards(), self._decode(), self.skipped)
        rank, world_size = self._rank()
        epoch, done = divmod(self.consumed_batches, self.steps_per_epoch)
        sampler = ResumableSampler(dataset.sizes, self.seed, rank, world_size,
                                   start=self.consumed_batches * self.batch_size,
                                   length=(self.steps_per_epoch - done) * self.batch_size,
                                   block=self.shuffle_buffer,
                                   # Lightning sizes the epoch from len(): the whole epoch, of which
                                   # the sampler yields the rest
                                   epoch_length=self.steps_per_epoch * self.batch_size)
        # the generator only seeds the workers (decoding draws no random numbers); seeded so the
        # loader never draws from the global RNG
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch * 7919 + rank)
        return DataLoader(dataset, batch_size=self.batch_size, sampler=sampler, collate_fn=collate,
                          num_workers=self.num_workers, pin_memory=self.pin_memory, drop_last=True,
                          generator=generator, persistent_workers=False)

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        trainer = self.trainer
        if trainer is not None and trainer.training:
            self.consumed_batches += 1
        return batch

    def val_dataloader(self) -> wds.WebLoader:
        pipeline = wds.DataPipeline(
            wds.SimpleShardList(self.val_urls),
            wds.split_by_worker,
            tar_samples(handler=self.skipped),
            wds.map(self._decode(), handler=self.skipped),
            wds.batched(self.batch_size, collation_fn=collate, partial=True),
        )
        workers = min(self.num_workers, len(self.val_urls))
        loader = wds.WebLoader(pipeline, batch_size=None, num_workers=workers,
                               pin_memory=self.pin_memory)
        # slice, not with_epoch: with_epoch would restart the finite stream and repeat samples
        return loader.slice(self.val_batches)

    def state_dict(self) -> dict[str, Any]:
        return {"skipped": self.skipped.count, "magnitude_quantiles": self.magnitude_quantiles,
                "consumed_batches": self.consumed_batches}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.skipped.value.value = int(state.get("skipped", 0))
        self.consumed_batches = int(state.get("consumed_batches", 0))
        self.magnitude_quantiles = dict(state.get("magnitude_quantiles", {})) or self.magnitude_quantiles
