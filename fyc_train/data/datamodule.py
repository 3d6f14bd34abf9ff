"""LightningDataModule over WebDataset shards written by fyc-preprocess.

Training stream (every stage built from webdataset's own pieces):
  ResampledShards (seeded) -> tar members -> samples -> seeded shuffle buffer -> decode -> batch
and a WebLoader with `with_epoch(steps_per_epoch)`: each rank draws shards with replacement
from its own seeded stream, so every DDP rank runs exactly `steps_per_epoch` steps (split
shards give unequal counts and hang DDP). Resampling already spreads shards over nodes and
workers (webdataset seeds by rank*1000+worker); the validation stream, which is not
resampled, is split by worker and read whole by every rank.

Why a DataPipeline and not `WebDataset(resampled=True)`: that constructor seeds its resampler
from pid and time, so the data order could never be replayed; exact resume needs it to be.
Determinism: the stream seed is `seed + global_step` at the time the loader is (re)built
(`reload_dataloaders_every_n_epochs=1`), so a run resumed at an epoch boundary reads exactly
what the uninterrupted run reads. A resume mid-epoch starts a fresh, still deterministic stream.

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
import random
import tarfile
from collections.abc import Sequence
from typing import Any

import lightning.pytorch as pl
import numpy as np
import webdataset as wds
from webdataset.utils import make_seed, pytorch_worker_seed

from fyc_train.data.decode import collate, decode_sample
from fyc_train.data.shards import expand_shards, is_remote
from fyc_train.data.tar_stream import tar_samples

log = logging.getLogger(__name__)
warnings.filterwarnings("ignore", message=r"\.with_length\(\) only sets the value of __len__")


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


def _seeded_shuffle(src, bufsize: int, initial: int, seed: int):
    """Shuffle buffer whose rng depends on (seed, rank, worker): reproducible, distinct per worker."""
    rng = random.Random(make_seed(pytorch_worker_seed(), seed))
    return wds.filters._shuffle(src, bufsize, initial, rng=rng)


def first_clip_meta(urls: Sequence[str]) -> dict[str, Any] | None:
    """json of the first sample of the first local shard (clip size check before training)."""
    for url in urls:
        if is_remote(url):
            continue
        try:
            with tarfile.open(url) as tar:
                for member in tar:
                    if member.name.endswith(".json"):
                        return json.load(io.TextIOWrapper(tar.extractfile(member), "utf-8"))
        except (tarfile.TarError, OSError, ValueError):
            continue
    return None


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
        shuffle_initial: int = 32,
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
        self.shuffle_buffer, self.shuffle_initial, self.seed = shuffle_buffer, shuffle_initial, seed
        self.pin_memory, self.quantile_scan_samples = pin_memory, quantile_scan_samples
        self.skipped = SkipCounter(max_skipped)  # created before any worker starts
        self.train_urls, self.val_urls = self.split_urls()
        self.magnitude_quantiles: dict[str, float] = {}

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

    def _stream_seed(self) -> int:
        step = self.trainer.global_step if self.trainer is not None else 0
        return self.seed * 1_000_003 + step

    def train_dataloader(self) -> wds.WebLoader:
        seed = self._stream_seed()
        pipeline = wds.DataPipeline(
            wds.ResampledShards(self.train_urls, seed=seed, deterministic=True),
            tar_samples(handler=self.skipped),
            functools.partial(_seeded_shuffle, bufsize=self.shuffle_buffer,
                              initial=self.shuffle_initial, seed=seed),
            wds.map(self._decode(), handler=self.skipped),
            wds.batched(self.batch_size, collation_fn=collate, partial=False),
        )
        loader = wds.WebLoader(pipeline, batch_size=None, num_workers=self.num_workers,
                               pin_memory=self.pin_memory, persistent_workers=False)
        # Equal step counts on every rank; the length lets Lightning size epochs and progress.
        return loader.with_epoch(self.steps_per_epoch).with_length(self.steps_per_epoch)

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
        return {"skipped": self.skipped.count, "magnitude_quantiles": self.magnitude_quantiles}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.skipped.value.value = int(state.get("skipped", 0))
        self.magnitude_quantiles = dict(state.get("magnitude_quantiles", {})) or self.magnitude_quantiles
