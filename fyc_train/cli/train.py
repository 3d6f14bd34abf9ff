"""fyc-train: compose (Hydra) -> validate -> build -> fit (auto-resume) -> export.

    fyc-train data.shards='out/shards/shard-{000000..000003}.tar'
    fyc-train experiment=stage1_256 data.shards=... trainer=ddp
    fyc-train -m hparams_search=optuna_lr data.shards=...      # Optuna sweep

Under srun/torchrun every rank runs this whole function (Lightning's own ddp launcher re-runs
the command line for ranks > 0): everything before `fit` must be cheap and identical across
ranks, which the pinned run directory and the seeded builders make it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from fyc_train.config_validation import ConfigError, validate_config
from fyc_train.utils.run_dir import register_resolvers, resume_checkpoint
from fyc_conf import config_dir

log = logging.getLogger("fyc_train.train")
CONFIG_DIR = config_dir("train")

register_resolvers()  # before Hydra composes (logger id uses ${fyc_run_id:...})


def _instantiate_group(group: DictConfig | None) -> list[Any]:
    """Instantiate every `_target_` entry of a group (callbacks, loggers); null entries are off."""
    from hydra.utils import instantiate

    return [instantiate(node) for node in (group or {}).values() if node is not None and "_target_" in node]


def export_model(lit_module, trainer, cfg: DictConfig) -> Path | None:
    """Diffusers-format export of the trained model (EMA weights if enabled) on rank 0."""
    from fyc_train.callbacks.ema import find_ema
    from fyc_train.models.export import save_fyc_model
    from fyc_train.sampling.checkpoint_loading import SAMPLING_JSON

    if not cfg.export.enabled or not trainer.is_global_zero:
        return None
    if "FSDP" in type(trainer.strategy).__name__:
        log.warning("export skipped under FSDP: export from %s with fyc_train.models.export", cfg.paths.checkpoint_dir)
        return None
    ema = find_ema(trainer) if cfg.export.use_ema else None
    swap = ema.averaged_weights(lit_module) if ema is not None and ema.ema is not None else contextlib.nullcontext()
    with swap:
        path = save_fyc_model(lit_module.model, cfg.paths.export_dir)
    # sampling from the folder then uses the training schedule, layout, speeds and clip shape
    (Path(path) / SAMPLING_JSON).write_text(json.dumps(lit_module.sampling_metadata(), indent=2, default=float))
    log.info("exported the trained model (diffusers format) to %s", path)
    return path


def train(cfg: DictConfig) -> float | None:
    """Run one training; returns the objective (cfg.objective, e.g. val/loss) for sweepers."""
    plain = validate_config(cfg)
    if cfg.validate_only_config:
        print(OmegaConf.to_yaml(cfg, resolve=True))
        return None

    import lightning.pytorch as pl
    import torch
    from hydra.utils import get_object, instantiate

    pl.seed_everything(cfg.seed, workers=True)
    torch.set_float32_matmul_precision("high")
    run_dir = Path(cfg.paths.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)

    datamodule = instantiate(cfg.data)
    model = instantiate(cfg.model)
    from fyc_train.data.latents import LatentsMismatchError, check_latent_shards

    try:  # latent shards (fyc-curate latents.enabled=true) must come from this model's autoencoder
        check_latent_shards(datamodule.train_urls + datamodule.val_urls, model.autoencoder, cfg.data.get("resolution"))
    except LatentsMismatchError as exc:
        raise ConfigError(str(exc)) from exc
    # plain containers (no recursive instantiation: model_config holds the model's _target_,
    # stored in checkpoints so sampling can rebuild the model)
    module_kwargs = dict(plain["module"])
    module_cls = get_object(module_kwargs.pop("_target_"))
    lit_module = module_cls(model=model, model_config=plain["model"], sampling=plain.get("sampling"), **module_kwargs)
    callbacks = _instantiate_group(cfg.callbacks)
    loggers = _instantiate_group(cfg.logger)
    if not loggers:  # LearningRateMonitor refuses to run without a logger
        callbacks = [c for c in callbacks if not isinstance(c, pl.callbacks.LearningRateMonitor)]
    trainer: pl.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)

    for logger in loggers:  # the resolved config, once (rank 0 only inside Lightning)
        logger.log_hyperparams(plain)
    ckpt_path = resume_checkpoint(run_dir, cfg.ckpt_path)
    if ckpt_path:
        log.info("resuming from %s", ckpt_path)
    from fyc_train.callbacks.preemption import Preempted

    try:
        trainer.fit(lit_module, datamodule=datamodule, ckpt_path=ckpt_path)
    except Preempted as stop:  # the checkpoint is written (every rank gets here at the same step)
        print(f"fyc-train: rank {trainer.global_rank} preempted by {stop.signal_name} at step {stop.step}; "
              f"checkpoint {stop.path}; exit {stop.exit_code} (run the same command again to resume)", flush=True)
        sys.exit(stop.exit_code)

    if not cfg.trainer.get("fast_dev_run"):
        # ModelCheckpoint(every_n_train_steps) saves nothing when max_steps / max_time ends the
        # run between two saves: the final weights would be lost. Collective: every rank calls.
        trainer.save_checkpoint(Path(cfg.paths.checkpoint_dir) / "last.ckpt")
        try:
            export_model(lit_module, trainer, cfg)
        except Exception:  # the checkpoint above holds the run; an export failure must not lose it
            log.exception("export to %s failed; the weights are in %s/last.ckpt (export from it with "
                          "fyc_train.models.export)", cfg.paths.export_dir, cfg.paths.checkpoint_dir)
    # one line per rank (DDP tests and cluster logs check that every rank got here)
    print(f"fyc-train: rank {trainer.global_rank} finished at step {trainer.global_step}; "
          f"skipped samples on this rank: {datamodule.skipped.count}", flush=True)
    metric = trainer.callback_metrics.get(cfg.objective)
    if metric is None and str(cfg.objective).startswith("val/") and not cfg.trainer.get("fast_dev_run"):
        # max_steps/max_time can end a run before its first validation; a sweep trial must
        # still report its objective, so validate the final weights once
        trainer.validate(lit_module, datamodule=datamodule, verbose=False)
        metric = trainer.callback_metrics.get(cfg.objective)
    if metric is None:
        log.warning("objective %s was not logged (metrics: %s)", cfg.objective, sorted(trainer.callback_metrics))
    for logger in loggers:
        with contextlib.suppress(Exception):
            logger.finalize("success")
    return float(metric) if metric is not None else None


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def main(cfg: DictConfig) -> float | None:
    try:
        return train(cfg)
    except ConfigError as exc:
        # a clean message and exit code 2, not a traceback: the user's config is at fault
        print(f"fyc-train: {exc}", file=sys.stderr)
        if os.environ.get("FYC_RAISE_CONFIG_ERRORS"):
            raise
        sys.exit(2)


if __name__ == "__main__":
    main()
