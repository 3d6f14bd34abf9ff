"""fyc-train on a Ray cluster with Ray Train (TorchTrainer + Lightning's Ray strategy).

    python jobs/ray_train.py --workers 8 --gpu -- experiment=stage1_256 data.shards=... run_name=ray-a
    ray job submit --working-dir . -- python jobs/ray_train.py --workers 8 --gpu -- <overrides>

Each Ray worker composes the same Hydra config (overrides passed as a list, never through a
shell), builds the FYC modules, and runs Lightning with RayDDPStrategy /
RayLightningEnvironment / prepare_trainer from ray.train.lightning. Only `lightning.pytorch`
is imported (mixing `pytorch_lightning` breaks Ray Train). Checkpoints and auto-resume use the
same pinned run directory (paths.output_dir must be shared storage).
"""

from __future__ import annotations

import argparse
from typing import Any


def train_loop_per_worker(config: dict[str, Any]) -> None:
    import lightning.pytorch as pl
    from hydra import compose, initialize_config_dir
    from hydra.utils import get_object, instantiate
    from ray.train.lightning import RayDDPStrategy, RayLightningEnvironment, prepare_trainer

    from fyc_train.cli.train import CONFIG_DIR, _instantiate_group
    from fyc_train.config_validation import validate_config
    from fyc_train.utils.run_dir import register_resolvers, resume_checkpoint

    register_resolvers()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=config["overrides"])
    plain = validate_config(cfg)
    pl.seed_everything(cfg.seed, workers=True)
    datamodule = instantiate(cfg.data)
    model = instantiate(cfg.model)
    kwargs = dict(plain["module"])
    lit = get_object(kwargs.pop("_target_"))(model=model, model_config=plain["model"], **kwargs)
    callbacks = _instantiate_group(cfg.callbacks)
    loggers = _instantiate_group(cfg.logger)
    trainer_kwargs = {k: v for k, v in plain["trainer"].items()
                      if k not in ("_target_", "strategy", "devices", "num_nodes", "accelerator")}
    trainer = pl.Trainer(**trainer_kwargs, accelerator="auto", devices="auto", strategy=RayDDPStrategy(),
                         plugins=[RayLightningEnvironment()], callbacks=callbacks, logger=loggers or False)
    trainer = prepare_trainer(trainer)
    ckpt_path = resume_checkpoint(cfg.paths.run_dir, cfg.ckpt_path)
    if ckpt_path:
        print(f"fyc-train (Ray worker {trainer.global_rank}): resuming from {ckpt_path}", flush=True)
    trainer.fit(lit, datamodule=datamodule, ckpt_path=ckpt_path)
    # as fyc-train does: the final weights even when max_steps ends between two periodic saves
    # (collective: every worker calls it, rank 0 writes)
    trainer.save_checkpoint(f"{cfg.paths.checkpoint_dir}/last.ckpt")
    print(f"fyc-train (Ray worker {trainer.global_rank}): finished at step {trainer.global_step}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--gpu", action="store_true")
    parser.add_argument("--address", default=None, help="Ray address (default: auto / local)")
    parser.add_argument("--num-cpus", type=int, default=None, help="CPUs of a local Ray (default: all)")
    parser.add_argument("overrides", nargs="*", help="fyc-train Hydra overrides (after --)")
    args = parser.parse_args()

    import ray
    from ray.train import ScalingConfig
    from ray.train.torch import TorchTrainer

    ray.init(address=args.address, num_cpus=args.num_cpus if args.address is None else None,
             include_dashboard=False)
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"overrides": list(args.overrides)},
        scaling_config=ScalingConfig(num_workers=args.workers, use_gpu=args.gpu),
    )
    trainer.fit()


if __name__ == "__main__":
    main()
