"""Non-finite loss / gradients / weights: skip the step, stop after too many, never checkpoint NaN.

- A non-finite loss: FYCLitModule.training_step returns None (all ranks agree), so Lightning
  skips backward and the optimizer step; this callback counts consecutive skips and stops the
  run with a message after `max_consecutive`.
- Finite loss but non-finite gradients (overflow in backward): the gradients are dropped
  before the optimizer step (AdamW skips parameters without a gradient).
- Before any checkpoint is written, every floating tensor of the state dict is checked; a
  non-finite one aborts the save with an error naming the tensor.
"""

from __future__ import annotations

import logging
from typing import Any

import lightning.pytorch as pl
import torch

log = logging.getLogger(__name__)


class NonFiniteError(RuntimeError):
    pass


class NaNGuardCallback(pl.Callback):
    def __init__(self, max_consecutive: int = 10) -> None:
        self.max_consecutive = max_consecutive
        self.consecutive = 0
        self.skipped_grad_steps = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if outputs is None or (isinstance(outputs, dict) and outputs.get("loss") is None):
            self.consecutive += 1
            if self.consecutive >= self.max_consecutive:
                raise NonFiniteError(
                    f"{self.consecutive} consecutive steps with a non-finite loss (up to step "
                    f"{trainer.global_step}): stopping. Lower module.lr, check the data "
                    "(magnitudes, clips), or raise callbacks.nan_guard.max_consecutive. The last "
                    "checkpoint (written before the failure) holds finite weights."
                )
        else:
            self.consecutive = 0

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        if params and not all(torch.isfinite(p.grad).all() for p in params):
            self.skipped_grad_steps += 1
            log.warning("step %d: non-finite gradients: optimizer step skipped", trainer.global_step)
            for p in params:
                p.grad = None
        pl_module.log("train/nonfinite_grad_steps", float(self.skipped_grad_steps), batch_size=1)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        for name, tensor in checkpoint.get("state_dict", {}).items():
            if torch.is_tensor(tensor) and tensor.is_floating_point() and not torch.isfinite(tensor).all():
                raise NonFiniteError(f"refusing to write a checkpoint: weight {name!r} is not finite "
                                     f"(step {trainer.global_step})")

    def state_dict(self) -> dict[str, Any]:
        return {"skipped_grad_steps": self.skipped_grad_steps}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.skipped_grad_steps = int(state_dict.get("skipped_grad_steps", 0))
