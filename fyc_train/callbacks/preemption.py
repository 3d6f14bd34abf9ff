"""Preemption: a signal -> a checkpoint at the next step boundary -> exit with the requeue code.

SLURM (preemption, `scancel`, the end of the time limit), Kubernetes (pod eviction) and
torchrun's agent send SIGTERM and kill a little later; SLURM can also send a chosen signal ahead
of the limit (`#SBATCH --signal=USR1@120`). On either, this callback lets the current step
finish, then every rank (agreeing through one all-reduce of a flag per step, so a signal that
reached rank 0 only still stops all of them at the same step) saves `last.ckpt` and leaves fit
with `Preempted`; fyc-train then exits with `exit_code` (75, EX_TEMPFAIL: "try again"). The
same command re-run resumes from that checkpoint, exactly (the data position is in it).
On the requeue signal under SLURM, global rank 0 also runs `scontrol requeue <job>`.

Why not Lightning's own handling: Lightning 2.x runs a collective inside its SIGTERM handler
(at whatever point the main thread was), stops each rank when that rank saw the flag, and saves
nothing; its SLURM SIGUSR1 handler saves `hpc_ckpt_*.ckpt` from inside the handler, possibly
mid-step (after the optimizer, before the EMA update), which is not a state an uninterrupted
run ever passes through. Here the handler only sets a flag; saving happens between steps.
Lightning installs its SLURM SIGUSR1 handler only where none exists, so installing ours at
setup keeps it out; its SIGTERM handler is replaced at train start (Lightning restores the
handlers it found when fit ends, and this callback restores the ones before it).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
from pathlib import Path
from types import FrameType
from typing import Any

import lightning.pytorch as pl

log = logging.getLogger(__name__)

EX_TEMPFAIL = 75  # sysexits.h: temporary failure, the user is invited to retry


class Preempted(Exception):
    """Raised out of `trainer.fit` once the preemption checkpoint is written (on every rank)."""

    def __init__(self, signal_name: str, step: int, path: str, exit_code: int) -> None:
        super().__init__(f"{signal_name}: checkpoint at step {step} in {path}")
        self.signal_name, self.step, self.path, self.exit_code = signal_name, step, path, exit_code


class PreemptionCallback(pl.Callback):
    def __init__(self, checkpoint_path: str, signals: tuple[str, ...] | list[str] = ("SIGTERM", "SIGUSR1"),
                 requeue_signal: str | None = "SIGUSR1", exit_code: int = EX_TEMPFAIL) -> None:
        self.checkpoint_path, self.exit_code = str(checkpoint_path), int(exit_code)
        try:
            self.signals = [signal.Signals[name] for name in signals]
            self.requeue_signal = signal.Signals[requeue_signal] if requeue_signal else None
        except KeyError as exc:
            raise ValueError(f"callbacks.preemption: unknown signal {exc.args[0]!r}; use names like SIGTERM, "
                             "SIGUSR1") from exc
        self.received: signal.Signals | None = None
        self._previous: dict[signal.Signals, Any] = {}
        self._active = False

    # ---- signals: the handler only records; everything else happens between steps ----------
    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if not self._active:  # outside fit (export, final validation): the default action
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        self.received = signal.Signals(signum)

    def _install(self) -> None:
        self._active = True
        if threading.current_thread() is not threading.main_thread():
            # Python handles signals in the main thread only; Ray Train runs the training function in
            # a worker thread: there the signal belongs to Ray (FailureConfig restarts resume from last.ckpt)
            log.warning("preemption: training runs outside the main thread (e.g. a Ray Train worker): "
                        "no signal handlers installed")
            return
        for sig in self.signals:
            current = signal.getsignal(sig)
            if current != self._handle:
                self._previous.setdefault(sig, current)
                signal.signal(sig, self._handle)

    def _restore(self) -> None:
        self._active = False
        for sig, handler in self._previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        self._previous.clear()

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit":
            self._install()  # before Lightning's: it then leaves the SLURM requeue signal to us

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._install()  # again: Lightning put its SIGTERM handler over ours in between

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit":
            self._restore()

    # ---- at the step boundary ----------------------------------------------------------------
    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        # collective: every rank takes part every step, so all decide alike
        if not trainer.strategy.reduce_boolean_decision(self.received is not None, all=False):
            return
        name = self.received.name if self.received is not None else "a signal on another rank"
        Path(self.checkpoint_path).parent.mkdir(parents=True, exist_ok=True)
        trainer.save_checkpoint(self.checkpoint_path)  # collective too (FSDP gathers)
        log.warning("%s: saved %s at step %d; leaving with exit code %d (re-run the same command to resume)",
                    name, self.checkpoint_path, trainer.global_step, self.exit_code)
        if self.received is not None and self.received == self.requeue_signal and trainer.is_global_zero:
            requeue_slurm_job()
        raise Preempted(name, trainer.global_step, self.checkpoint_path, self.exit_code)


def requeue_slurm_job() -> None:
    """`scontrol requeue` this SLURM job (array-aware); a no-op outside SLURM."""
    job = os.environ.get("SLURM_JOB_ID")
    if os.environ.get("SLURM_ARRAY_JOB_ID"):
        job = f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    if not job:
        return
    result = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True)
    if result.returncode == 0:
        log.warning("requeued SLURM job %s", job)
    else:
        log.error("scontrol requeue %s failed (%d): %s", job, result.returncode, result.stderr.strip())
