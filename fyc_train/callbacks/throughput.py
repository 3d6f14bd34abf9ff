"""Samples/s, time spent waiting for data, and the loader's skipped-sample count, per step."""

from __future__ import annotations

import time

import lightning.pytorch as pl


class ThroughputCallback(pl.Callback):
    def __init__(self, log_every_n_steps: int = 1) -> None:
        self.log_every_n_steps = log_every_n_steps
        self._batch_start: float | None = None
        self._batch_end: float | None = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        now = time.perf_counter()
        if self._batch_end is not None:  # time between steps = waiting on the data loader
            pl_module.log("train/data_wait_s", now - self._batch_end, batch_size=1)
        self._batch_start = now

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        now = time.perf_counter()
        self._batch_end = now
        if self._batch_start is None or trainer.global_step % self.log_every_n_steps:
            return
        samples = len(batch["key"]) * trainer.world_size
        pl_module.log("train/samples_per_s", samples / max(now - self._batch_start, 1e-9), batch_size=1)
        skipped = getattr(getattr(trainer, "datamodule", None), "skipped", None)
        if skipped is not None:
            # per-rank count, summed over ranks when Lightning reduces at epoch end
            pl_module.log("data/skipped_samples", float(skipped.count), batch_size=1, reduce_fx="max")

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        skipped = getattr(getattr(trainer, "datamodule", None), "skipped", None)
        if skipped is not None and not trainer.sanity_checking:
            pl_module.log("data/skipped_samples_total", float(skipped.count), sync_dist=True, reduce_fx="sum")
