"""FYCLitModule: the Follow-Your-Click training objective in one readable LightningModule.

One step (the paper's objective, docs/training.md):
  video -> frozen autoencoder -> latents z (B, C, F, h, w)            (or precomputed latents)
  first-frame latent z0 = z[:, :, 0], randomly masked (ratio R), dropped to zeros with p_image
  region mask (mask.png) -> latent size (nearest or max-pool)
  t ~ U{0..T-1}, noise ~ N(0, I), z_t = scheduler.add_noise(z, noise, t)
  U-Net input = [z_t | mask | z0] (9 ch for SD), caption -> spatial cross-attention,
  short motion prompt -> MA cross-attention, magnitude -> timestep embedding
  loss = MSE(pred, v or eps), optionally min-SNR weighted in the v-prediction form.

Noise schedule: diffusers DDPMScheduler, 1000 steps, betas 0.00085..0.012, beta_schedule
"linear" (AnimateDiff's training config, on which the released FYC code is built: "rescaled
linear" in the paper = linear betas rescaled to zero terminal SNR), rescale_betas_zero_snr=True,
v-prediction. "scaled_linear" (SD1.5's own schedule) and epsilon are options.

Randomness of a step (timesteps, noise, CFG dropout, first-frame masking) comes from a
generator seeded by (seed, global_step, rank): a resumed run draws exactly what an
uninterrupted one would (global RNG state is not in Lightning checkpoints).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any, Literal

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler
from diffusers.optimization import get_scheduler

from fyc_train.models.first_frame import assemble_input, mask_first_latent, noise_sigma, resize_mask
from fyc_train.models.noise_prior import frame_correlated_noise

log = logging.getLogger(__name__)

LR_SCHEDULES = ("constant", "constant_with_warmup", "cosine", "linear", "cosine_with_restarts", "polynomial")


def with_copy_gate_rows(state: dict[str, torch.Tensor], own: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` with each ``conv_out`` that has fewer output channels than ``own``'s (a checkpoint
    without a copy gate, loaded into a U-Net with one) padded by ``own``'s initial gate rows."""
    state = dict(state)
    for key, value in state.items():
        target = own.get(key)
        if (key.endswith(("conv_out.weight", "conv_out.bias")) and target is not None
                and value.shape[0] < target.shape[0] and value.shape[1:] == target.shape[1:]):
            state[key] = torch.cat([value.to(target.dtype), target[value.shape[0]:].cpu()], dim=0)
    return state


def change_from(latents: torch.Tensor, reference: torch.Tensor, per_channel: bool = False) -> torch.Tensor:
    """|z_f - reference| for latents (B, C, F, h, w) and a reference frame (B, C, h, w): per channel,
    or (B, 1, F, h, w) as the channel mean."""
    change = (latents - reference.unsqueeze(2)).abs()
    return change if per_channel else change.mean(dim=1, keepdim=True)


class FYCLitModule(pl.LightningModule):
    def __init__(
        self,
        model: torch.nn.Module,
        # noise schedule and objective
        prediction_type: Literal["v_prediction", "epsilon"] = "v_prediction",
        beta_schedule: Literal["linear", "scaled_linear"] = "linear",
        beta_start: float = 0.00085,
        beta_end: float = 0.012,
        zero_terminal_snr: bool = True,
        num_train_timesteps: int = 1000,
        min_snr_gamma: float | None = None,
        timestep_power: float = 1.0,  # > 1 biases training towards high-noise timesteps
        motion_region_loss_weight: float = 1.0,  # > 1 up-weights the loss inside the motion region
        motion_region_change_threshold: float | None = None,  # region += latents that differ from frame 0
        copy_gate_loss_weight: float = 0.0,  # > 0: BCE teaching the copy gate where the clip equals its z0
        copy_gate_still_threshold: float = 0.05,  # channel-mean |z_f - z0| at or below this is "still"
        # conditioning
        caption_dropout: float = 0.1,
        motion_prompt_dropout: float = 0.1,
        first_frame_dropout: float = 0.05,
        first_frame_mask_ratio: float | list[float] | None = None,
        mask_resize: Literal["nearest", "max"] = "max",
        # optimisation
        lr: float = 1e-4,
        weight_decay: float = 1e-2,
        adam_betas: tuple[float, float] = (0.9, 0.999),
        adam_eps: float = 1e-8,
        lr_schedule: Literal[LR_SCHEDULES] = "constant_with_warmup",  # type: ignore[valid-type]
        warmup_steps: int = 0,
        lr_schedule_steps: int | None = None,  # the schedule's length; None: the trainer's max_steps
        motion_augment_lr_scale: float = 1.0,  # the MA layers' lr = lr * this (their output starts at zero)
        # checkpoints
        save_frozen_weights: bool = True,
        init_from: str | None = None,
        seed: int = 0,
        model_config: dict[str, Any] | None = None,
        sampling: dict[str, Any] | None = None,  # the experiment's sampler settings, stored for sampling
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["model"])
        self.model = model
        self.noise_scheduler = DDPMScheduler(
            num_train_timesteps=num_train_timesteps, beta_start=beta_start, beta_end=beta_end,
            beta_schedule=beta_schedule, rescale_betas_zero_snr=zero_terminal_snr,
            prediction_type=prediction_type, timestep_spacing="trailing", clip_sample=False,
        )
        self.register_buffer("alphas_cumprod", self.noise_scheduler.alphas_cumprod.clone(), persistent=False)
        self.nonfinite_steps = 0
        # Input layout and masking ratio belong to the model (FYCUNetConfig): sampling reads
        # them from the same place, so training and inference cannot disagree.
        fyc = model.config
        self.layout = {"channel_order": fyc.channel_order, "mask_frames": fyc.mask_frames,
                       "first_frame_frames": fyc.first_frame_frames, "mask_resize": mask_resize}
        self.mask_ratio = fyc.mask_ratio if first_frame_mask_ratio is None else first_frame_mask_ratio
        if fyc.has_first_frame_skip and prediction_type != "v_prediction":
            raise ValueError(
                f"model.fyc.first_frame_skip needs prediction_type='v_prediction' (it adds the v of a still "
                f"video), got {prediction_type!r}"
            )
        if motion_augment_lr_scale <= 0:
            raise ValueError(f"motion_augment_lr_scale={motion_augment_lr_scale!r} must be > 0")
        if copy_gate_loss_weight < 0:
            raise ValueError(f"copy_gate_loss_weight={copy_gate_loss_weight!r} must be >= 0")
        if copy_gate_loss_weight > 0 and not fyc.has_copy_gate:
            raise ValueError(
                f"copy_gate_loss_weight={copy_gate_loss_weight} supervises a copy gate, but model.fyc.first_frame_skip="
                f"{fyc.first_frame_skip!r} has none: use gated, blend or blend_all, or set the weight to 0"
            )
        self.last_loss_parts: dict[str, float] = {}
        if init_from:
            self.load_weights_from(init_from)

    # ---- parameters -------------------------------------------------------------------
    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        """What the optimizer and EMA see: the model's own requires_grad choice (stage recipes)."""
        return [p for p in self.model.parameters() if p.requires_grad]  # FYCModel.trainable decides

    def load_weights_from(self, path: str) -> None:
        """Initialise from another run's checkpoint (stage 1 -> stage 2): weights only, no
        optimizer state; new layers (the MA module, a copy gate) keep their initial values."""
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = with_copy_gate_rows(state.get("state_dict", state), self.state_dict())
        result = self.load_state_dict(state, strict=False)
        # frozen weights a checkpoint may leave out (save_frozen_weights=false) keep the base model's
        trainable = {f"model.{n}" for n, p in self.model.named_parameters() if p.requires_grad}
        new = [k for k in result.missing_keys if k in trainable]
        log.info("init_from %s: %d trainable weights not in it (new layers, initial values kept), %d frozen "
                 "weights from the base model, %d unexpected keys", path, len(new),
                 len(result.missing_keys) - len(new), len(result.unexpected_keys))
        if result.unexpected_keys:
            log.warning("init_from %s: ignored keys not in this model, e.g. %s", path, result.unexpected_keys[:5])

    # ---- one diffusion step -------------------------------------------------------------
    def step_generator(self, salt: int = 0) -> torch.Generator:
        seed = (self.hparams.seed * 1_000_003 + self.global_step * 7919 + self.global_rank * 104_729 + salt) % (2**63)
        return torch.Generator(device=self.device).manual_seed(seed)

    @torch.no_grad()
    def encode_video(self, batch: dict[str, Any]) -> torch.Tensor:
        """(B, C, F, h, w) latents: precomputed from the shard, or the frozen autoencoder now."""
        if "latents" in batch:
            return batch["latents"].to(self.device)
        video = batch["video"]  # (B, F, 3, H, W) in [-1, 1]
        b, f = video.shape[:2]
        latents = self.model.autoencoder.encode(video.flatten(0, 1))  # (B*F, C, h, w)
        return latents.unflatten(0, (b, f)).permute(0, 2, 1, 3, 4).float()

    def drop(self, texts: Sequence[str], p: float, gen: torch.Generator) -> list[str]:
        keep = torch.rand(len(texts), generator=gen, device=gen.device) >= p
        return [t if k else "" for t, k in zip(texts, keep.tolist())]

    def compute_loss(self, batch: dict[str, Any], gen: torch.Generator, train: bool) -> torch.Tensor:
        hp = self.hparams
        latents = self.encode_video(batch)
        b, c, f, h, w = latents.shape
        first = latents[:, :, 0]
        mask = resize_mask(batch["mask"].to(self.device), (h, w), mode=hp.mask_resize)
        captions, prompts = list(batch["caption"]), list(batch["motion_prompt"])
        magnitude = batch["magnitude"].to(self.device).float()
        # An empty mask (no region moves; fyc-preprocess keeps such clips at filter.min_magnitude=0)
        # trains "nothing clicked -> nothing moves": magnitude 0 and no motion prompt, whatever the
        # caption named (docs/training.md, "What empty-mask samples mean").
        still = ~(batch["mask"].to(self.device) > 0.5).flatten(1).any(dim=1)
        if still.any():
            magnitude = torch.where(still, torch.zeros_like(magnitude), magnitude)
            prompts = ["" if s else p for p, s in zip(prompts, still.tolist())]
        if train:  # classifier-free-guidance dropout and first-frame masking (training only)
            first = mask_first_latent(first, self.mask_ratio, generator=gen)
            keep_image = torch.rand(b, generator=gen, device=gen.device) >= hp.first_frame_dropout
            first = first * keep_image.to(first.dtype).view(b, 1, 1, 1)
            captions = self.drop(captions, hp.caption_dropout, gen)
            prompts = self.drop(prompts, hp.motion_prompt_dropout, gen)

        noise = frame_correlated_noise(tuple(latents.shape), self.model.config.frame_noise_correlation,
                                       generator=gen, device=gen.device, dtype=latents.dtype)
        t = self.sample_timesteps(b, gen)
        noisy = self.noise_scheduler.add_noise(latents, noise, t)
        layout = self.layout
        sample = assemble_input(noisy, mask, first, layout["channel_order"], layout["mask_frames"],
                                layout["first_frame_frames"])
        fyc = self.model.config
        # caption -> spatial cross-attention, short prompt -> MA layers (training; paper)
        caption_states, prompt_states = self.model.text_conditioning(captions, prompts)
        supervise_gate = hp.copy_gate_loss_weight > 0
        pred = self.model.unet(
            sample, t, encoder_hidden_states=caption_states, motion_hidden_states=prompt_states,
            magnitude=magnitude if fyc.magnitude_embedding else None,
            fps=batch["stride"].to(self.device) if fyc.fps_embedding else None,
            **({"noise_sigma": noise_sigma(self.alphas_cumprod, t)} if fyc.has_first_frame_skip else {}),
            **({"return_gate_logit": True} if supervise_gate else {}),
        )
        if supervise_gate:
            pred, gate_logit = pred
        pred = getattr(pred, "sample", pred)
        target = noise if hp.prediction_type == "epsilon" else self.noise_scheduler.get_velocity(latents, noise, t)
        error = F.mse_loss(pred.float(), target.float(), reduction="none")
        if hp.motion_region_loss_weight != 1.0:
            # the moving region can be a few % of the pixels: without this the loss is mostly
            # about copying the still background (weight 1 = the paper's plain MSE)
            region = self.motion_region(latents, mask)
            weight = 1.0 + (hp.motion_region_loss_weight - 1.0) * region
            error = error * weight / weight.mean(dim=(1, 2, 3, 4), keepdim=True)
        per_sample = error.mean(dim=(1, 2, 3, 4))
        if hp.min_snr_gamma:
            per_sample = per_sample * self.min_snr_weight(t)
        diffusion = per_sample.mean()
        if not supervise_gate:
            return diffusion
        gate_bce = self.copy_gate_loss(gate_logit, latents, first)
        self.last_loss_parts = {"diffusion": float(diffusion.detach()), "gate_bce": float(gate_bce.detach())}
        return diffusion + hp.copy_gate_loss_weight * gate_bce

    def copy_gate_loss(self, gate_logit: torch.Tensor, latents: torch.Tensor, first: torch.Tensor) -> torch.Tensor:
        """BCE of the copy gate against where each frame is still, i.e. equal to the z0 the model
        was given (masked or dropped z0 counts as not copyable). The diffusion loss alone teaches
        the gate only as much as the U-Net's own redrawing of the background is off, and both
        paths can draw the background, so the gate stalls half open (~0.8 after stage 2) and lets
        (1 - g) of the U-Net's flicker through; this gives it a target of its own."""
        still = change_from(latents, first, per_channel=gate_logit.shape[1] > 1) <= self.hparams.copy_gate_still_threshold
        start = self.model.config.first_gated_frame
        return F.binary_cross_entropy_with_logits(gate_logit[:, :, start:].float(), still[:, :, start:].float())

    def motion_region(self, latents: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, 1, F or 1, h, w) in {0, 1}: the motion mask, plus (with a change threshold) every
        latent position of every frame whose channel-mean |z_f - z_0| exceeds it. A mask of the
        clicked object covers where it starts but not where it goes; the changed positions
        cover both ends of the motion, without a flow field at training time."""
        region = mask.unsqueeze(2).float()
        threshold = self.hparams.motion_region_change_threshold
        if threshold is None:
            return region
        changed = change_from(latents, latents[:, :, 0]) > threshold
        return torch.maximum(region, changed.float())

    def sample_timesteps(self, batch_size: int, gen: torch.Generator) -> torch.Tensor:
        """Uniform over the training timesteps, or biased towards high noise when
        timestep_power > 1 (t = T-1 - floor(u**p * T)): few-step samplers start there."""
        total, power = self.hparams.num_train_timesteps, self.hparams.timestep_power
        if power == 1.0:
            return torch.randint(0, total, (batch_size,), generator=gen, device=gen.device)
        u = torch.rand(batch_size, generator=gen, device=gen.device)
        return (total - 1 - (u**power * total).long()).clamp(0, total - 1)

    def min_snr_weight(self, t: torch.Tensor) -> torch.Tensor:
        """Min-SNR-gamma weights that stay finite with zero terminal SNR (snr = 0 at t = T-1):
        v-prediction: min(snr, g) / (snr + 1); epsilon: min(snr, g) / snr, defined as 0 at snr=0."""
        alpha_bar = self.alphas_cumprod.to(t.device)[t]
        snr = alpha_bar / (1 - alpha_bar).clamp_min(1e-12)
        clipped = snr.clamp(max=self.hparams.min_snr_gamma)
        if self.hparams.prediction_type == "v_prediction":
            return clipped / (snr + 1)
        return torch.where(snr > 0, clipped / snr.clamp_min(1e-12), torch.zeros_like(snr))

    # ---- Lightning hooks ------------------------------------------------------------------
    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor | None:
        loss = self.compute_loss(batch, self.step_generator(), train=True)
        finite = bool(torch.isfinite(loss))
        # every rank must agree, or DDP would wait forever for a rank that skipped backward
        finite = self.trainer.strategy.reduce_boolean_decision(finite, all=True)
        batch_size = len(batch["key"])
        self.log("train/nonfinite_steps", float(self.nonfinite_steps + (not finite)), batch_size=batch_size)
        if not finite:
            self.nonfinite_steps += 1
            log.warning("step %d: non-finite loss (%s): step skipped (keys %s)",
                        self.global_step, loss.item(), batch["key"])
            return None  # Lightning skips backward and the optimizer step
        self.log("train/loss", loss, prog_bar=True, batch_size=batch_size)
        for name, value in self.last_loss_parts.items():
            self.log(f"train/{name}", value, batch_size=batch_size)
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        gen = torch.Generator(device=self.device).manual_seed(self.hparams.seed + batch_idx)
        loss = self.compute_loss(batch, gen, train=False)
        self.log("val/loss", loss, prog_bar=True, sync_dist=True, batch_size=len(batch["key"]))
        return loss

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        grads = [p.grad for p in self.trainable_parameters() if p.grad is not None]
        if grads:
            norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads, dtype=torch.float32)))
            self.log("train/grad_norm", norm)

    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        params = self.trainable_parameters()
        if not params:
            raise ValueError("the model has no trainable parameters: check the model config's "
                             "trainable/freeze settings")
        optimizer = torch.optim.AdamW(self.parameter_groups(params), lr=hp.lr, betas=tuple(hp.adam_betas),
                                      eps=hp.adam_eps, weight_decay=hp.weight_decay)
        # A schedule longer than the run lets a stage stop at a fixed step of a longer decay
        # (stage 1 of moving_shapes: 1,750 steps of a 3,000-step cosine), independent of speed.
        total = hp.lr_schedule_steps or self.trainer.estimated_stepping_batches
        total = int(total) if math.isfinite(total) else 10**9
        scheduler = get_scheduler(hp.lr_schedule, optimizer, num_warmup_steps=hp.warmup_steps,
                                  num_training_steps=max(total, 1))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def parameter_groups(self, params: list[torch.nn.Parameter]) -> list[dict[str, Any]]:
        """One AdamW group, or two when `motion_augment_lr_scale` != 1: the MA layers at their own lr.
        Their output projection starts at zero, so the prompt's direction reaches the video only as
        fast as it grows; the schedules (LambdaLR) scale every group's lr alike."""
        scale = self.hparams.motion_augment_lr_scale
        ma_ids = {id(p) for p in self.model.unet.motion_augment_parameters()}
        ma = [p for p in params if id(p) in ma_ids]
        if scale == 1.0 or not ma:
            return [{"params": params}]
        rest = [p for p in params if id(p) not in ma_ids]
        return [{"params": rest}, {"params": ma, "lr": self.hparams.lr * scale}]

    def sampling_metadata(self) -> dict[str, Any]:
        """What sampling needs besides the weights, in checkpoints and exported folders alike:
        the noise schedule, the input layout, speed quantiles, the training clip shape and the
        experiment's sampler settings (`sampling:`; fyc-sample uses them unless overridden)."""
        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        data: dict[str, Any] = {}
        if getattr(datamodule, "num_frames", None):
            data["num_frames"] = int(datamodule.num_frames)
        size = getattr(datamodule, "resolution", None)
        if size is None and self.hparams.model_config and self.hparams.model_config.get("image_size"):
            size = [int(self.hparams.model_config["image_size"])] * 2
        if size is not None:
            data["size"] = [int(v) for v in size]
        return {
            "magnitude_quantiles": dict(getattr(datamodule, "magnitude_quantiles", {}) or {}),
            "noise_scheduler": dict(self.noise_scheduler.config),
            "layout": dict(self.layout),
            "data": data,
            **({"sampling": dict(self.hparams.sampling)} if self.hparams.sampling is not None else {}),
        }

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Add what sampling needs (magnitude quantiles for speed=slow|medium|fast, the
        noise schedule); drop frozen pretrained weights when asked (they come from the base)."""
        checkpoint["fyc"] = {
            **self.sampling_metadata(),
            "nonfinite_steps": self.nonfinite_steps,
            "model_config": self.hparams.model_config,  # how sampling rebuilds the model
        }
        if not self.hparams.save_frozen_weights:
            frozen = {f"model.{n}" for n, p in self.model.named_parameters() if not p.requires_grad}
            checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k not in frozen}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.nonfinite_steps = int(checkpoint.get("fyc", {}).get("nonfinite_steps", 0))
        # frozen weights left out of the checkpoint: keep the ones this module was built with
        own = self.state_dict()
        for key, value in own.items():
            checkpoint["state_dict"].setdefault(key, value)
