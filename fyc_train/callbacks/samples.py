"""Validation sample videos: first frame, mask, prompt, magnitude -> generated clip.

After each validation (every `every_n_epochs`), the first `num_samples` validation clips are
animated with FYCPipeline (the sampling engineer's DDIM + CFG loop), using the EMA weights when
an EMACallback is present. Each result is written as an mp4 panel
[input first frame | mask overlay | generated | ground truth] to
`<run_dir>/samples/step-XXXXXXX/<key>.mp4` and logged to W&B as `wandb.Video` from that file
(wandb builds videos from numpy only through moviepy, which the stack does not carry; the file
is the same uint8 (T, C, H, W) content).

A sample video is a by-product: nothing about one clip may end a training run. Clips with an
empty motion mask (kept by fyc-preprocess at filter.min_magnitude=0; they train "nothing moves",
see docs/training.md) are not picked, a clip that fails to render and a failed W&B upload are
logged with the clip's key and the reason, and the run goes on.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch

from fyc_train.callbacks.ema import find_ema
from fyc_train.sampling.pipeline import FirstFrameLayout, FYCPipeline, make_scheduler, video_to_uint8
from fyc_train.sampling.video_io import write_video

log = logging.getLogger(__name__)


def mask_overlay(frame: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """uint8 (H, W, 3) with the moving region tinted red."""
    out = frame.astype(np.float32)
    out[mask > 0.5] = 0.5 * out[mask > 0.5] + 0.5 * np.array([255, 0, 0], np.float32)
    return out.round().astype(np.uint8)


class SampleVideosCallback(pl.Callback):
    def __init__(self, out_dir: str, num_samples: int = 2, every_n_epochs: int = 1, steps: int = 20,
                 guidance: float = 7.5, fps: float = 8.0, seed: int = 0, use_ema: bool = True) -> None:
        self.out_dir = Path(out_dir)
        self.num_samples, self.every_n_epochs, self.steps = num_samples, every_n_epochs, steps
        self.guidance, self.fps, self.seed, self.use_ema = guidance, fps, seed, use_ema
        self._inputs: list[dict[str, Any]] = []
        self.written: list[Path] = []

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        self._inputs = []

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if trainer.sanity_checking or len(self._inputs) >= self.num_samples or "video" not in batch:
            return
        for i in range(len(batch["key"])):
            if len(self._inputs) >= self.num_samples:
                break
            if not bool((batch["mask"][i, 0] > 0.5).any()):
                # sampling animates the clicked region: an empty mask has none, so take the next clip
                if trainer.is_global_zero:
                    log.info("sample videos: skipped validation clip %r: its motion mask is empty (nothing to "
                             "animate)", batch["key"][i])
                continue
            self._inputs.append({
                "key": batch["key"][i], "video": batch["video"][i].detach().cpu(),
                "mask": batch["mask"][i, 0].detach().cpu().numpy(), "caption": batch["caption"][i],
                "motion_prompt": batch["motion_prompt"][i], "magnitude": float(batch["magnitude"][i]),
            })

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or not self._inputs or trainer.current_epoch % self.every_n_epochs:
            return
        if "FSDP" in type(trainer.strategy).__name__:
            log.warning("sample videos are skipped under FSDP (sharded weights; sample from the checkpoint)")
            return
        if not trainer.is_global_zero:
            return
        try:
            self.write_samples(trainer, pl_module)
        except Exception:  # a by-product: log it, keep training
            log.exception("sample videos: writing the step-%d samples failed; training goes on", trainer.global_step)

    @torch.no_grad()
    def write_samples(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> list[Path]:
        pipe = FYCPipeline(
            pl_module.model, scheduler=make_scheduler(dict(pl_module.noise_scheduler.config)),
            layout=FirstFrameLayout(**pl_module.layout),
            default_num_frames=self._inputs[0]["video"].shape[0],
        )
        ema = find_ema(trainer) if self.use_ema else None
        swap = ema.averaged_weights(pl_module) if ema is not None and ema.ema is not None else contextlib.nullcontext()
        step_dir = self.out_dir / f"step-{trainer.global_step:07d}"
        paths = []
        was_training = pl_module.training
        pl_module.eval()
        rendered = []
        try:
            with swap:
                for item in self._inputs:
                    try:
                        paths.append(self._render(pipe, item, step_dir))
                        rendered.append(item)
                    except Exception as exc:  # one clip's failure (bad input, codec, ...) skips that clip only
                        log.warning("sample videos: skipped validation clip %r at step %d: %s: %s",
                                    item["key"], trainer.global_step, type(exc).__name__, exc)
        finally:
            pl_module.train(was_training)
        self.written.extend(paths)
        self._log_wandb(trainer, paths, rendered)
        return paths

    def _render(self, pipe: FYCPipeline, item: dict[str, Any], step_dir: Path) -> Path:
        truth = video_to_uint8(item["video"])
        result = pipe(image=item["video"][0], mask=item["mask"], prompt=item["motion_prompt"],
                      caption=item["caption"], magnitude=item["magnitude"], steps=self.steps,
                      guidance=self.guidance, seed=self.seed, progress=False)
        first = np.repeat(truth[:1], len(result), axis=0)
        overlay = np.repeat(mask_overlay(truth[0], item["mask"])[None], len(result), axis=0)
        panel = np.concatenate([first, overlay, result, truth[: len(result)]], axis=2)
        return write_video(panel, step_dir / f"{item['key']}.mp4", fps=self.fps)

    def _log_wandb(self, trainer: pl.Trainer, paths: list[Path], items: list[dict[str, Any]]) -> None:
        from lightning.pytorch.loggers import WandbLogger

        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger) and paths:
                try:
                    import wandb

                    videos = [wandb.Video(str(p), format="mp4",
                                          caption=f"{it['motion_prompt']} | magnitude {it['magnitude']:.2f}")
                              for p, it in zip(paths, items)]
                    logger.experiment.log({"val/samples": videos, "trainer/global_step": trainer.global_step})
                except Exception as exc:  # W&B media are a by-product too
                    log.warning("sample videos: W&B upload of %s failed: %s: %s", [p.name for p in paths],
                                type(exc).__name__, exc)
