"""FYCUNet: diffusers ``UNetMotionModel`` + 2C+1-channel input + MA + magnitude/FPS embedding.

Composition, not a subclass: :class:`FYCUNet` holds the diffusers model as ``self.unet`` and
modifies it in place (wider ``conv_in``, motion blocks with MA, a time-embedding hook), so
``self.unet`` stays a plain ``UNetMotionModel`` whose parameter names, config and
``save_pretrained`` are diffusers' own; the FYC options live in :class:`FYCUNetConfig`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import torch
from diffusers import UNetMotionModel
from diffusers.models.unets.unet_motion_model import AnimateDiffTransformer3D
from torch import nn
from torch.utils.checkpoint import checkpoint

from .conditioning import ScalarEmbedding, TimeEmbeddingExtraHook
from .first_frame import CHANNEL_ORDERS, FRAME_PLACEMENTS, split_input
from .motion_augment import ForwardContext, convert_motion_blocks, motion_augment_modules

SKIP_FRAMES: tuple[str, ...] = ("none", "first", "all", "gated", "blend", "blend_all")
BLEND_SKIPS: tuple[str, ...] = ("blend", "blend_all")  # the gate mixes the still video and the U-Net
COPY_GATE_SKIPS: tuple[str, ...] = ("gated", *BLEND_SKIPS)  # the U-Net predicts a copy gate


@dataclass
class FYCUNetConfig:
    """FYC options of the U-Net (saved as ``fyc_config.json`` next to the diffusers config)."""

    latent_channels: int = 4
    # input layout (see first_frame.assemble_input)
    channel_order: str = "noisy_mask_first"  # released code; "noisy_first_mask" = paper
    mask_frames: str = "all"  # released code; "first" = paper
    first_frame_frames: str = "first"  # released code; "all" = paper
    # first-frame masking ratio for training: a float or a list drawn from per sample
    mask_ratio: float | list[float] = field(default_factory=lambda: [0.0, 0.3, 0.5, 0.7])
    # motion augmentation: width of the motion-prompt embedding, None = no MA (stage 1)
    motion_augment: bool = True
    motion_context_dim: int | None = None
    # scalar conditioning added to the time embedding
    magnitude_embedding: bool = True
    magnitude_input_scale: float = 1.0
    fps_embedding: bool = False
    fps_input_scale: float = 1.0
    # inference: also give the short motion prompt to the spatial cross-attention (paper)
    short_prompt_in_spatial: bool = True
    # not in the paper: add the first-frame latent to the output as the v-prediction of a
    # still video (see FYCUNet) on "all" frames or on the "first" frame only; "none" (or false)
    # keeps the paper's U-Net output unchanged; true means "all"; "gated" = frame 0 as "first",
    # later frames copy z0 where a gate the U-Net predicts (one more output channel) says so;
    # "blend" = frame 0 as "first", later frames g * (the still video) + (1 - g) * (the U-Net);
    # "blend_all" = that mix on frame 0 too (its U-Net part keeps the "first" skip)
    first_frame_skip: str | bool = "none"
    # a copy gate's ("gated", "blend", "blend_all") value at initialisation (its bias; weights
    # start at zero). 0.5 is neutral; near 0 the model starts as "first"
    copy_gate_init: float = 0.5
    # one gate per latent channel instead of one per position: with the pixel-unshuffle
    # autoencoder that is one gate per pixel and colour, so a slowly moving object's changed edge
    # pixels can be drawn while the unchanged pixels of the same 4x4 cell are copied
    copy_gate_per_channel: bool = False
    # the noise prior the U-Net is trained and sampled under: each frame's noise is
    # sqrt(r) * (one draw shared by all frames) + sqrt(1 - r) * (its own draw), r = this
    frame_noise_correlation: float = 0.0

    def __post_init__(self) -> None:
        if self.channel_order not in CHANNEL_ORDERS:
            raise ValueError(f"channel_order={self.channel_order!r} is not one of {list(CHANNEL_ORDERS)}")
        for name in ("mask_frames", "first_frame_frames"):
            if getattr(self, name) not in FRAME_PLACEMENTS:
                raise ValueError(f"{name}={getattr(self, name)!r} is not one of {list(FRAME_PLACEMENTS)}")
        if not isinstance(self.mask_ratio, (int, float)):
            self.mask_ratio = [float(r) for r in self.mask_ratio]
        if isinstance(self.first_frame_skip, bool):  # older checkpoints saved a bool
            self.first_frame_skip = "all" if self.first_frame_skip else "none"
        if self.first_frame_skip not in SKIP_FRAMES:
            raise ValueError(f"first_frame_skip={self.first_frame_skip!r} is not one of {list(SKIP_FRAMES)} "
                             "(or true / false)")
        if not 0.0 < float(self.copy_gate_init) < 1.0:
            raise ValueError(f"copy_gate_init={self.copy_gate_init!r} must be in (0, 1): it is a sigmoid's value")
        if not 0.0 <= float(self.frame_noise_correlation) < 1.0:
            raise ValueError(f"frame_noise_correlation={self.frame_noise_correlation!r} must be in [0, 1): "
                             "1 would give every frame the same noise")

    @property
    def has_first_frame_skip(self) -> bool:
        return self.first_frame_skip != "none"  # booleans are normalised on construction

    @property
    def has_copy_gate(self) -> bool:
        return self.first_frame_skip in COPY_GATE_SKIPS

    @property
    def first_gated_frame(self) -> int:
        """The first frame the copy gate acts on: 0 for "blend_all", 1 for "gated" and "blend"
        (their frame 0 is the "first" skip)."""
        return 0 if self.first_frame_skip == "blend_all" else 1

    @property
    def gate_channels(self) -> int:
        if not self.has_copy_gate:
            return 0
        return self.latent_channels if self.copy_gate_per_channel else 1

    @property
    def out_channels(self) -> int:
        """The diffusers U-Net's output channels: the latent, plus the copy gate when it has one."""
        return self.latent_channels + self.gate_channels

    @property
    def in_channels(self) -> int:
        return 2 * self.latent_channels + 1

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> FYCUNetConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown FYC U-Net options {sorted(unknown)}; known: {sorted(known)}")
        return cls(**data)


def widen_conv_in(unet: UNetMotionModel, latent_channels: int) -> None:
    """conv_in C -> 2C+1 input channels: old weights in the first C, zeros after, bias kept.

    Must run after ``UNetMotionModel.from_unet2d`` (which copies SD's 4-channel conv_in).
    """
    old = unet.conv_in
    if old.in_channels == 2 * latent_channels + 1:
        return  # already wide (e.g. loading an exported FYC U-Net)
    if old.in_channels != latent_channels:
        raise ValueError(
            f"conv_in has {old.in_channels} input channels; expected the latent width {latent_channels} "
            f"(to widen) or {2 * latent_channels + 1} (already widened)"
        )
    new = nn.Conv2d(2 * latent_channels + 1, old.out_channels, kernel_size=old.kernel_size,
                    stride=old.stride, padding=old.padding, bias=old.bias is not None)
    new = new.to(device=old.weight.device, dtype=old.weight.dtype)
    with torch.no_grad():
        new.weight.zero_()
        new.weight[:, :latent_channels].copy_(old.weight)
        if old.bias is not None:
            new.bias.copy_(old.bias)  # the released FYC code drops this bias: keep it
    new.weight.requires_grad_(old.weight.requires_grad)
    if new.bias is not None:
        new.bias.requires_grad_(old.bias.requires_grad)
    unet.conv_in = new
    unet.register_to_config(in_channels=2 * latent_channels + 1)


def widen_conv_out(unet: UNetMotionModel, latent_channels: int, out_channels: int, gate_init: float = 0.5) -> None:
    """conv_out C -> C+k output channels for a k-channel copy gate: old weights kept, the gate's
    weights zero and its bias logit(gate_init), so every gate starts at `gate_init`."""
    old = unet.conv_out
    if old.out_channels == out_channels:
        return  # already wide (e.g. loading an exported FYC U-Net)
    if old.out_channels != latent_channels:
        raise ValueError(f"conv_out has {old.out_channels} output channels; expected {latent_channels} "
                         f"(to widen) or {out_channels} (already widened)")
    new = nn.Conv2d(old.in_channels, out_channels, kernel_size=old.kernel_size, stride=old.stride,
                    padding=old.padding, bias=old.bias is not None)
    new = new.to(device=old.weight.device, dtype=old.weight.dtype)
    with torch.no_grad():
        new.weight.zero_()
        new.weight[: old.out_channels].copy_(old.weight)
        if new.bias is not None:
            new.bias.fill_(math.log(gate_init / (1.0 - gate_init)))
            new.bias[: old.out_channels].copy_(old.bias)
    new.requires_grad_(old.weight.requires_grad)
    unet.conv_out = new
    unet.register_to_config(out_channels=out_channels)


def _checkpoint_except_motion_modules(module: nn.Module, *args):
    """diffusers' checkpoint function, except motion modules (their blocks checkpoint themselves)."""
    if isinstance(module, AnimateDiffTransformer3D):
        return module(*args)
    return checkpoint(module.__call__, *args, use_reentrant=False)


class FYCUNet(nn.Module):
    """Follow-Your-Click video U-Net.

    ``forward(sample (B, 2C+1, F, h, w), timestep (B,), encoder_hidden_states (B, S, D),
    motion_hidden_states (B, S', D') | None, magnitude (B,) | None, fps (B,) | None)
    -> (B, C, F, h, w)``. Hidden states are given once per video and repeated per frame here.
    ``motion_hidden_states=None`` skips the MA layers (identical to zeroing their output).

    ``config.first_frame_skip``: the output is ``unet(...) - sigma_t * z0`` (``noise_sigma`` =
    sqrt(1 - alphas_cumprod[t]) of the caller's noise schedule, v-prediction). Since
    v = alpha_t * eps - sigma_t * x0, the U-Net then predicts the v of ``x0 - z0``: zero wherever
    the video equals its first frame. A small model trained from scratch otherwise spends most
    of its capacity redrawing the still background through the whole U-Net (measured in
    docs/moving_shapes.md); with the skip, copying it is the default and the network learns what
    moves. Nothing is forced: the U-Net can still change any pixel of any frame.
    ``first_frame_skip="first"`` adds it to frame 0 only: the one frame that should equal the
    input gets the copy for free, while later frames are drawn as without the skip (the "all"
    skip leaves a ghost where the object started: the U-Net must erase z0 there).
    ``first_frame_skip="gated"``: frame 0 as "first"; on later frames the skip is scaled by a
    per-position gate in [0, 1], the sigmoid of one extra U-Net output channel: the network
    chooses where a frame copies z0 (the still background) and where it is drawn freely (where
    the object goes and what it uncovers), instead of erasing z0 there as with "all".
    Without a copy, a small model redraws the background differently in every frame and that
    flicker is read as motion outside the clicked region (docs/moving_shapes.md).
    ``first_frame_skip="blend"``: frame 0 as "first"; frame k >= 1 is the convex mix
    ``g * v_still + (1 - g) * unet_k``, where ``v_still = (alpha_t * x_t - z0) / sigma_t`` is
    the v whose clean video is z0 (DDIM's x0 = alpha_t x_t - sigma_t v gives exactly z0). The
    loss's gradient on g is then -(1 - g) |unet - v_still|^2 wherever the video is still: the
    gate opens on the background as soon as the U-Net redraws it imperfectly, from any state,
    and shuts where the object goes. "gated" adds g * z0 to the U-Net's own drawing instead, so
    from a U-Net that already draws the background opening it doubles the background and the
    gate stays shut (docs/moving_shapes.md). ``"blend_all"`` mixes frame 0 the same
    way (its U-Net part keeps the "first" skip): with "blend", the later frames copy z0 exactly
    while frame 0 is z0 plus the U-Net's residual, and that difference is a flicker at frame 1.
    """

    def __init__(self, unet: UNetMotionModel, config: FYCUNetConfig):
        super().__init__()
        if config.motion_augment and config.motion_context_dim is None:
            raise ValueError("motion_augment=True needs motion_context_dim (the text encoder's hidden size)")
        self.config = config
        self.context = ForwardContext()
        widen_conv_in(unet, config.latent_channels)
        widen_conv_out(unet, config.latent_channels, config.out_channels, config.copy_gate_init)
        self.unet = unet
        convert_motion_blocks(unet, self.context, config.motion_context_dim if config.motion_augment else None)
        time_proj_dim = unet.time_proj.num_channels
        time_embed_dim = unet.time_embedding.linear_2.out_features
        self.magnitude_embedding = (
            ScalarEmbedding(time_proj_dim, time_embed_dim, config.magnitude_input_scale)
            if config.magnitude_embedding else None
        )
        self.fps_embedding = (
            ScalarEmbedding(time_proj_dim, time_embed_dim, config.fps_input_scale)
            if config.fps_embedding else None
        )
        ref = unet.conv_in.weight
        for emb in (self.magnitude_embedding, self.fps_embedding):
            if emb is not None:
                emb.to(device=ref.device, dtype=ref.dtype)
        unet.time_embedding.register_forward_hook(TimeEmbeddingExtraHook(self.context))

    # ---- parameter groups -------------------------------------------------------------
    def motion_module_parameters(self) -> list[nn.Parameter]:
        """Motion modules (AnimateDiff temporal transformers) including their MA layers."""
        return [p for n, p in self.unet.named_parameters() if ".motion_modules." in f".{n}"]

    def conditioning_parameters(self) -> list[nn.Parameter]:
        mods = [m for m in (self.magnitude_embedding, self.fps_embedding) if m is not None]
        return [p for m in mods for p in m.parameters()]

    def motion_augment_parameters(self) -> list[nn.Parameter]:
        return [p for m in motion_augment_modules(self.unet) for p in m.parameters()]

    def enable_gradient_checkpointing(self) -> None:
        """diffusers' checkpointing (ResNets, spatial transformers) + every motion block.

        Use this, not ``self.unet.enable_gradient_checkpointing()``: diffusers' mid block
        checkpoints its whole motion module, and that recomputation would run after
        ``forward`` has cleared the motion-prompt context. Here motion modules run directly
        and each motion block checkpoints itself with the prompt as an explicit input.
        """
        self.unet.enable_gradient_checkpointing(_checkpoint_except_motion_modules)

    def disable_gradient_checkpointing(self) -> None:
        self.unet.disable_gradient_checkpointing()

    @property
    def dtype(self) -> torch.dtype:
        return self.unet.conv_in.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.unet.conv_in.weight.device

    # ---- forward ----------------------------------------------------------------------
    def _time_extra(self, magnitude, fps, batch: int) -> torch.Tensor | None:
        extra = None
        for value, emb, name in ((magnitude, self.magnitude_embedding, "magnitude"),
                                 (fps, self.fps_embedding, "fps")):
            if value is None or emb is None:
                continue
            value = torch.as_tensor(value, device=self.device, dtype=torch.float32).reshape(-1)
            if value.numel() == 1:
                value = value.expand(batch)
            if value.numel() != batch:
                raise ValueError(f"{name} has {value.numel()} values for a batch of {batch}")
            e = emb(value)
            extra = e if extra is None else extra + e
        return extra

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        motion_hidden_states: torch.Tensor | None = None,
        magnitude: torch.Tensor | None = None,
        fps: torch.Tensor | None = None,
        noise_sigma: torch.Tensor | None = None,
        return_gate_logit: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """The v (or eps) prediction; with ``return_gate_logit`` also the copy gate's logit
        (B, k, F, h, w), which a training loss can supervise (FYCLitModule copy_gate_loss_weight)."""
        if return_gate_logit and not self.config.has_copy_gate:
            raise ValueError(f"return_gate_logit needs a copy gate; first_frame_skip={self.config.first_frame_skip!r} has none")
        if sample.ndim != 5 or sample.shape[1] != self.config.in_channels:
            raise ValueError(
                f"sample must be (B, {self.config.in_channels}, F, h, w) (use first_frame.assemble_input), "
                f"got {tuple(sample.shape)}"
            )
        b, _, f = sample.shape[:3]
        if encoder_hidden_states.shape[0] != b:
            raise ValueError(f"encoder_hidden_states batch {encoder_hidden_states.shape[0]} != sample batch {b}")
        if motion_hidden_states is not None and motion_hidden_states.shape[0] != b:
            raise ValueError(f"motion_hidden_states batch {motion_hidden_states.shape[0]} != sample batch {b}")
        timestep = torch.as_tensor(timestep, device=sample.device)
        if timestep.ndim == 0:
            timestep = timestep.expand(b)
        # UNetMotionModel runs spatial layers on (B*F, ...) and wants text per frame
        ehs = encoder_hidden_states.repeat_interleave(f, dim=0)
        self.context.motion_states = motion_hidden_states
        self.context.time_extra = self._time_extra(magnitude, fps, b)
        try:
            out = self.unet(sample, timestep, encoder_hidden_states=ehs, return_dict=False)[0]
        finally:
            self.context.clear()
        gate = gate_logit = None
        if self.config.has_copy_gate:
            out, gate_logit = out[:, : self.config.latent_channels], out[:, self.config.latent_channels:]
            gate = torch.sigmoid(gate_logit)
        if self.config.first_frame_skip in BLEND_SKIPS:
            out = self._blend_with_still(sample, out, noise_sigma, gate)
        elif self.config.has_first_frame_skip:
            out = out - self._first_frame_skip(sample, noise_sigma, gate)
        return (out, gate_logit) if return_gate_logit else out

    def _first_frame_skip(self, sample: torch.Tensor, noise_sigma: torch.Tensor | None,
                          gate: torch.Tensor | None = None) -> torch.Tensor:
        """sigma_t * z0 on the skipped frames (zero on the others; times `gate` (B, 1, F, h, w)
        on frames 1.. when gated), z0 read from the input (masked z0 when training masks it)."""
        sigma = self._sigma(sample, noise_sigma)
        first = self._first_latent(sample)
        if self.config.first_frame_skip == "first":
            first = torch.cat([first[:, :, :1], torch.zeros_like(first[:, :, 1:])], dim=2)
        elif self.config.first_frame_skip == "gated":
            first = torch.cat([first[:, :, :1], gate[:, :, 1:] * first[:, :, 1:]], dim=2)
        return sigma * first

    def _blend_with_still(self, sample: torch.Tensor, out: torch.Tensor, noise_sigma: torch.Tensor | None,
                          gate: torch.Tensor) -> torch.Tensor:
        """Frame 0 as "first", frames 1.. (every frame: "blend_all") ``g * v_still + (1 - g) * out``."""
        sigma = self._sigma(sample, noise_sigma)
        noisy = split_input(sample, self.config.latent_channels, self.config.channel_order)[0]
        first = self._first_latent(sample)
        # sigma_t >= 0.029 on the training schedules; the floor only guards a caller's t = 0 of a
        # schedule with alpha_bar_0 = 1, where the still video's v is undefined
        sigma = sigma.clamp_min(1e-3)
        alpha = (1.0 - sigma.square()).clamp_min(0.0).sqrt()
        v_still = (alpha * noisy - first) / sigma
        out = torch.cat([out[:, :, :1] - sigma * first[:, :, :1], out[:, :, 1:]], dim=2)
        if self.config.first_gated_frame:
            gate = torch.cat([torch.zeros_like(gate[:, :, :1]), gate[:, :, 1:]], dim=2)
        return gate * v_still + (1.0 - gate) * out

    def _sigma(self, sample: torch.Tensor, noise_sigma: torch.Tensor | None) -> torch.Tensor:
        """noise_sigma as (B, 1, 1, 1, 1), with the error a caller that forgot it needs."""
        if noise_sigma is None:
            raise ValueError(
                f"this U-Net has first_frame_skip={self.config.first_frame_skip!r}: pass noise_sigma = "
                "sqrt(1 - alphas_cumprod[t]) (first_frame.noise_sigma) of the v-prediction noise schedule"
            )
        b = sample.shape[0]
        sigma = torch.as_tensor(noise_sigma, device=sample.device, dtype=sample.dtype).reshape(-1)
        if sigma.numel() == 1:
            sigma = sigma.expand(b)
        if sigma.numel() != b:
            raise ValueError(f"noise_sigma has {sigma.numel()} values for a batch of {b}")
        return sigma.view(b, 1, 1, 1, 1)

    def _first_latent(self, sample: torch.Tensor) -> torch.Tensor:
        """z0 on every frame (B, C, F, h, w), read from the input (masked z0 when training masks it)."""
        _, _, first = split_input(sample, self.config.latent_channels, self.config.channel_order)
        if self.config.first_frame_frames == "first":  # z0 sits on frame 0 only, zeros elsewhere
            first = first[:, :, :1].expand(-1, -1, sample.shape[2], -1, -1)
        return first

    @classmethod
    def from_motion_unet(cls, unet: UNetMotionModel, **options) -> FYCUNet:
        return cls(unet, FYCUNetConfig(**options))
