"""fyc-eval-shapes: MovingShapes evaluation of a checkpoint (Hydra app, conf/eval_shapes/eval_shapes.yaml).

    fyc-eval-shapes checkpoint=outputs/moving_shapes/checkpoints/last.ckpt out=outputs/eval
    fyc-eval-shapes checkpoint=... ablate=ma_zero out=outputs/eval_ma_zero

Writes OUT/metrics.json (config, summary per sampling mode, one row per video) and
OUT/sheets/sceneNNN.png, and prints the summary table with the goals.
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf
from fyc_conf import config_dir

CONFIG_DIR = config_dir("eval_shapes")
log = logging.getLogger("fyc_train.eval_shapes")


def sampler_overrides(cfg: DictConfig) -> dict:
    """Sampler settings this command gives (non-null), but impose_first_frame: a list of modes here."""
    from fyc_train.sampling.settings import SamplerSettings

    keys = [k for k in SamplerSettings.keys() if k != "impose_first_frame"]
    return {k: cfg[k] for k in keys if cfg.get(k) is not None}


def run(cfg: DictConfig) -> dict:
    import torch

    from fyc_train.eval.run import evaluate_model, format_table
    from fyc_train.sampling.checkpoint_loading import load_for_sampling
    from fyc_train.sampling.masks import SamplingInputError
    from fyc_train.sampling.settings import describe, resolve_sampler_settings

    torch.set_grad_enabled(False)
    try:
        loaded = load_for_sampling(cfg.checkpoint, use_ema=cfg.use_ema, model_paths={
            k: cfg.get(k) for k in ("pretrained_path", "motion_adapter_path")})
        settings, sources = resolve_sampler_settings(sampler_overrides(cfg), loaded.sampling,
                                                     OmegaConf.to_container(cfg.sampling_fallback))
    except (SamplingInputError, FileNotFoundError, ValueError) as err:
        print(f"fyc-eval-shapes: {err}", file=sys.stderr)
        sys.exit(2)
    log.info("%s", describe(settings, sources, loaded.model.config.short_prompt_in_spatial))
    modes = cfg.impose_first_frame
    if modes is None:
        modes = [settings.impose_first_frame]
    else:  # the evaluated modes, given by the command (conf/eval_shapes/eval_shapes.yaml: both)
        modes = [bool(m) for m in (modes if OmegaConf.is_list(modes) else [modes])]
        log.info("impose_first_frame: evaluating the modes %s (this command's impose_first_frame)", modes)
    report = evaluate_model(
        loaded, num_scenes=cfg.num_scenes, seed=cfg.seed, magnitudes=list(cfg.magnitudes),
        flow_size=cfg.flow_size, num_frames=cfg.num_frames, steps=settings.steps, guidance=settings.guidance,
        impose_modes=modes, ablate=cfg.ablate, prompt_in_spatial=settings.prompt_in_spatial, out_dir=cfg.out,
        metric_flow_size=cfg.metric_flow_size, checkpoint=cfg.checkpoint,
        clean_last_step=settings.clean_last_step, guidance_rescale=settings.guidance_rescale,
    )
    print(f"checkpoint: {cfg.checkpoint}  ablate={cfg.ablate}  {report['config']['num_scenes']} scenes x 4 "
          f"directions x magnitudes {report['config']['magnitudes']} (= {report['config']['speeds_px_per_frame']} "
          f"px/frame at {report['config']['size'][0]}x{report['config']['size'][1]})")
    print(format_table(report))
    if cfg.out:
        print(f"wrote {Path(cfg.out) / 'metrics.json'} and contact sheets in {Path(cfg.out) / 'sheets'}")
    return report


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="eval_shapes")
def main(cfg: DictConfig) -> None:
    logging.basicConfig(level=logging.INFO)
    from fyc_train.config_validation import mandatory_key_errors

    if missing := mandatory_key_errors(cfg, "eval_shapes"):  # before loading any model
        log.error("mandatory keys not set:\n  %s", "\n  ".join(missing))
        sys.exit(2)
    run(cfg)


if __name__ == "__main__":
    main()
