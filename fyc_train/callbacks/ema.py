"""EMA of the trainable parameters only (motion modules, conv_in, magnitude embedding).

Lightning's EMA helpers deep-copy the whole module (frozen VAE and text encoder too) and break
under FSDP; diffusers' EMAModel over the list of trainable parameters does neither. The
shadow weights live in this callback's state, which Lightning writes into every checkpoint
(and restores on resume), so a resumed run continues the same average.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import lightning.pytorch as pl
from diffusers.training_utils import EMAModel


class EMACallback(pl.Callback):
    def __init__(self, decay: float = 0.9999, use_ema_warmup: bool = True, power: float = 2 / 3,
                 update_after_step: int = 0, validate_with_ema: bool = False, foreach: bool = True) -> None:
        self.decay, self.use_ema_warmup, self.power = decay, use_ema_warmup, power
        # foreach: one fused update over all shadow tensors instead of one per parameter
        # (hundreds of small kernels per step on a GPU); same numbers
        self.foreach = foreach
        self.update_after_step, self.validate_with_ema = update_after_step, validate_with_ema
        self.ema: EMAModel | None = None
        self._pending_state: dict[str, Any] | None = None
        self._last_step = -1
        self._swapped = False

    @staticmethod
    def _params(pl_module: pl.LightningModule) -> list:
        return pl_module.trainable_parameters()

    def _ensure(self, pl_module: pl.LightningModule) -> EMAModel:
        # Built lazily, after the strategy wrapped the model (FSDP shards the parameters).
        if self.ema is None:
            self.ema = EMAModel(self._params(pl_module), decay=self.decay, use_ema_warmup=self.use_ema_warmup,
                                power=self.power, update_after_step=self.update_after_step, foreach=self.foreach)
            if self._pending_state is not None:
                self.ema.load_state_dict(self._pending_state)
                self._pending_state = None
            self.ema.to(pl_module.device)
        return self.ema

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._ensure(pl_module)
        self._last_step = trainer.global_step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step != self._last_step:  # an optimizer step happened (accumulation-aware)
            self._last_step = trainer.global_step
            self._ensure(pl_module).step(self._params(pl_module))

    @contextlib.contextmanager
    def averaged_weights(self, pl_module: pl.LightningModule) -> Iterator[None]:
        """Swap the EMA weights in for the duration of the block (samples, validation)."""
        ema, params = self._ensure(pl_module), self._params(pl_module)
        ema.store(params)
        ema.copy_to(params)
        try:
            yield
        finally:
            ema.restore(params)

    def on_validation_start(self, trainer, pl_module) -> None:
        if self.validate_with_ema and not trainer.sanity_checking and self.ema is not None:
            params = self._params(pl_module)
            self.ema.store(params)
            self.ema.copy_to(params)
            self._swapped = True

    def on_validation_end(self, trainer, pl_module) -> None:
        if self._swapped:
            self.ema.restore(self._params(pl_module))
            self._swapped = False

    def state_dict(self) -> dict[str, Any]:
        if self.ema is None:
            return self._pending_state or {}
        return self.ema.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if not state_dict:
            return
        if self.ema is None:
            self._pending_state = state_dict
        else:
            self.ema.load_state_dict(state_dict)


def find_ema(trainer: pl.Trainer) -> EMACallback | None:
    return next((c for c in trainer.callbacks if isinstance(c, EMACallback)), None)
