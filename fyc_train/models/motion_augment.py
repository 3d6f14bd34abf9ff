"""Motion-augmentation (MA): cross-attention to the short motion prompt in every motion block.

Where: every ``BasicTransformerBlock`` inside the U-Net's motion modules (the
``AnimateDiffTransformer3D`` temporal transformers) gets a pre-norm residual cross-attention
after its own layers: ``h = block(h); h = h + MA(LayerNorm(h), motion_prompt_embedding)``. The
MA output projection is zero-initialised, so at initialisation the U-Net computes exactly
what it computed before (bit for bit: ``h + 0 == h``).

How the block is extended: its class is switched to :class:`MotionBlock` (a subclass of
diffusers' ``BasicTransformerBlock`` that only adds behaviour) and the MA layer is registered
as the child ``motion_augment``. Replacing the block by a wrapper would rename every AnimateDiff
parameter (``transformer_blocks.0.attn1`` -> ``transformer_blocks.0.block.attn1``); switching
the class keeps the names, so AnimateDiff checkpoints still load, and the saved U-Net is a
plain diffusers ``UNetMotionModel`` state dict plus ``...motion_augment.*`` keys.

Why a forward context: diffusers calls motion modules as ``motion_module(h, num_frames=F)``:
no ``encoder_hidden_states`` and no ``cross_attention_kwargs`` reach them. :class:`FYCUNet`
therefore puts the motion-prompt embedding into a :class:`ForwardContext` shared by all motion
blocks for the duration of its ``forward`` and clears it afterwards.

Efficiency: the temporal blocks see sequences (B*H*W, F, C) (batch-major). Cross-attention
queries do not interact, so all H*W*F queries of one video attend to the same keys: the
tokens are viewed as (B, H*W*F, C) and attend to the (B, S, D) prompt embedding directly,
with no repetition of the prompt H*W times (no copy; K/V projected once per video).

Gradient checkpointing: diffusers does not checkpoint motion modules. :class:`MotionBlock`
has a ``gradient_checkpointing`` flag (so ``unet.enable_gradient_checkpointing()`` sets it) and
then recomputes the block + MA in backward. The motion embedding is read from the context at
forward time and passed to the checkpointed function as an explicit input: the context is
already cleared when backward recomputes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers.models.attention import BasicTransformerBlock
from diffusers.models.attention_processor import Attention, AttnProcessor2_0
from torch import nn
from torch.utils.checkpoint import checkpoint


@dataclass
class ForwardContext:
    """Per-forward inputs that diffusers cannot route to the layers that need them."""

    motion_states: torch.Tensor | None = None  # (B, S, D) motion-prompt embedding
    time_extra: torch.Tensor | None = None  # (B, time_embed_dim) magnitude/fps embedding

    def clear(self) -> None:
        self.motion_states = None
        self.time_extra = None


class MotionAugmentAttention(nn.Module):
    """Pre-norm cross-attention with a zero-initialised output projection (SDPA)."""

    def __init__(self, dim: int, context_dim: int, heads: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"motion block width {dim} is not divisible by {heads} heads")
        self.norm = nn.LayerNorm(dim)
        self.attn = Attention(query_dim=dim, cross_attention_dim=context_dim, heads=heads,
                              dim_head=dim // heads, bias=False, processor=AttnProcessor2_0())
        nn.init.zeros_(self.attn.to_out[0].weight)
        nn.init.zeros_(self.attn.to_out[0].bias)

    def forward(self, hidden_states: torch.Tensor, motion_states: torch.Tensor) -> torch.Tensor:
        """hidden_states (B*H*W, F, C); motion_states (B, S, D) -> (B*H*W, F, C)."""
        bhw, f, c = hidden_states.shape
        b = motion_states.shape[0]
        if bhw % b:
            raise ValueError(
                f"motion_hidden_states batch {b} does not divide the temporal batch {bhw} "
                "(pass one motion-prompt embedding per video, not per frame)"
            )
        queries = self.norm(hidden_states).reshape(b, (bhw // b) * f, c)
        out = self.attn(queries, encoder_hidden_states=motion_states.to(queries.dtype))
        return hidden_states + out.reshape(bhw, f, c)


class MotionBlock(BasicTransformerBlock):
    """A motion-module ``BasicTransformerBlock`` with optional MA and gradient checkpointing.

    Instances are made from existing blocks by :func:`convert_motion_blocks`, never built
    directly; attributes added there: ``fyc_context``, ``motion_augment`` (module or None),
    ``gradient_checkpointing``.
    """

    def _block_and_ma(self, hidden_states: torch.Tensor, motion_states: torch.Tensor | None,
                      kwargs: dict) -> torch.Tensor:
        hidden_states = BasicTransformerBlock.forward(self, hidden_states, **kwargs)
        if motion_states is not None and self.motion_augment is not None:
            hidden_states = self.motion_augment(hidden_states, motion_states)
        return hidden_states

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        if args:
            raise TypeError("MotionBlock takes block arguments by keyword only (as diffusers passes them)")
        motion = self.fyc_context.motion_states  # None: MA skipped (= MA output zeroed)
        if self.gradient_checkpointing and torch.is_grad_enabled():
            return checkpoint(self._block_and_ma, hidden_states, motion, kwargs, use_reentrant=False)
        return self._block_and_ma(hidden_states, motion, kwargs)


def motion_transformer_blocks(unet: nn.Module) -> list[tuple[str, BasicTransformerBlock]]:
    """Every transformer block inside the U-Net's motion modules, with its qualified name."""
    from diffusers.models.unets.unet_motion_model import AnimateDiffTransformer3D

    found = []
    for name, module in unet.named_modules():
        if isinstance(module, AnimateDiffTransformer3D):
            for i, block in enumerate(module.transformer_blocks):
                found.append((f"{name}.transformer_blocks.{i}", block))
    if not found:
        raise ValueError("the U-Net has no motion modules (AnimateDiffTransformer3D); is it a UNetMotionModel?")
    return found


def convert_motion_blocks(unet: nn.Module, context: ForwardContext, motion_context_dim: int | None) -> int:
    """Turn every motion block into a :class:`MotionBlock`; add MA layers if a dim is given.

    ``motion_context_dim``: width of the motion-prompt embedding (the text encoder's hidden
    size), or None for no MA (stage 1 of the recipe). Returns the number of blocks converted.
    """
    blocks = motion_transformer_blocks(unet)
    for _, block in blocks:
        param = next(block.parameters())
        block.__class__ = MotionBlock
        block.fyc_context = context
        block.gradient_checkpointing = getattr(block, "gradient_checkpointing", False)
        if motion_context_dim is not None:
            ma = MotionAugmentAttention(block.dim, motion_context_dim, block.num_attention_heads)
            block.motion_augment = ma.to(device=param.device, dtype=param.dtype)
        else:
            block.motion_augment = None
    return len(blocks)


def motion_augment_modules(unet: nn.Module) -> list[MotionAugmentAttention]:
    return [m for m in unet.modules() if isinstance(m, MotionAugmentAttention)]
