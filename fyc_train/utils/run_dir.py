"""Pinned run directory, stable run id, and which checkpoint to resume from.

Every rank (srun/torchrun start one process per GPU, each running Hydra) and every requeue of
a job must land in the same directory, or they would each make their own and a requeued job
would start from scratch. So the run directory is `paths.output_dir/run_name` (no timestamp),
Hydra's run.dir is pinned to it, and the W&B run id is derived from its absolute path.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

from omegaconf import OmegaConf

log = logging.getLogger(__name__)


def stable_run_id(run_dir: str) -> str:
    """12 hex chars from the absolute run directory: same dir -> same W&B run across requeues."""
    return hashlib.sha1(os.path.abspath(str(run_dir)).encode()).hexdigest()[:12]


def sqlite_url(path: str) -> str:
    """`sqlite:///<path>` with the parent folder created (sqlite cannot create it, and an Optuna
    study is created before Hydra makes the sweep's folders)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def register_resolvers() -> None:
    """`${fyc_run_id:${paths.run_dir}}` and `${fyc_sqlite_url:PATH}` for configs (idempotent:
    safe to call in every rank)."""
    if not OmegaConf.has_resolver("fyc_run_id"):
        OmegaConf.register_new_resolver("fyc_run_id", stable_run_id)
    if not OmegaConf.has_resolver("fyc_sqlite_url"):
        OmegaConf.register_new_resolver("fyc_sqlite_url", sqlite_url)


def resume_checkpoint(run_dir: str | Path, ckpt_path: str | None) -> str | None:
    """The checkpoint to resume from.

    `ckpt_path` given: that one (must exist). Otherwise the newest of
    `<run_dir>/checkpoints/last.ckpt` and Lightning's SLURM `hpc_ckpt_*.ckpt` (written on
    SIGUSR1 before a requeue), or None for a fresh start.
    """
    if ckpt_path:
        if not Path(ckpt_path).is_file():
            raise FileNotFoundError(f"ckpt_path={ckpt_path!r} does not exist")
        return str(ckpt_path)
    run_dir = Path(run_dir)
    candidates = [run_dir / "checkpoints" / "last.ckpt", *run_dir.glob("hpc_ckpt_*.ckpt")]
    existing = [c for c in candidates if c.is_file()]
    if not existing:
        return None
    newest = max(existing, key=lambda p: p.stat().st_mtime)
    log.info("auto-resume from %s", newest)
    return str(newest)
