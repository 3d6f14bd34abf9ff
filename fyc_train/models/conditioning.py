"""Scalar conditioning (motion magnitude, FPS/stride) added to the U-Net's time embedding.

FYC: the scalar goes through the same sinusoidal projection as the timestep, then an MLP whose
last layer is zero-initialised; the result is added to the timestep embedding, so it reaches
every ResNet block on every frame and changes nothing at initialisation.

How it is hooked: ``UNetMotionModel`` rejects ``class_embed_type``, and its ``timestep_cond``
path adds the condition *before* the time MLP (to the sinusoid), not to the embedding. So the
:class:`FYCUNet` computes the extra embedding itself and a forward hook on
``unet.time_embedding`` adds it to that module's output. The hook keeps every diffusers
parameter name unchanged (a wrapper module would rename ``time_embedding.linear_1`` etc.).
"""

from __future__ import annotations

import torch
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from torch import nn


class ScalarEmbedding(nn.Module):
    """scalar (B,) -> sinusoid (like the timestep's) -> MLP -> (B, embed_dim); zero at init.

    ``input_scale`` multiplies the scalar before the sinusoid: the projection's fastest
    frequency has period 2*pi, so small values such as magnitudes of 0..20 px still separate,
    but a scale lets a config spread them further (1.0 = the paper's plain projection).
    """

    def __init__(self, proj_dim: int, embed_dim: int, input_scale: float = 1.0,
                 flip_sin_to_cos: bool = True, freq_shift: float = 0.0):
        super().__init__()
        self.proj = Timesteps(proj_dim, flip_sin_to_cos, freq_shift)
        self.mlp = TimestepEmbedding(proj_dim, embed_dim)
        self.input_scale = float(input_scale)
        nn.init.zeros_(self.mlp.linear_2.weight)
        nn.init.zeros_(self.mlp.linear_2.bias)

    def forward(self, value: torch.Tensor) -> torch.Tensor:
        value = torch.as_tensor(value, device=self.mlp.linear_1.weight.device).float().reshape(-1)
        # sinusoid in fp32 (as diffusers does for timesteps), MLP in its own dtype
        emb = self.proj(value * self.input_scale).to(self.mlp.linear_1.weight.dtype)
        return self.mlp(emb)


class TimeEmbeddingExtraHook:
    """Forward hook for ``unet.time_embedding``: adds ``context.time_extra`` when it is set.

    A callable object (not a closure) so that ``copy.deepcopy`` of the U-Net (EMA, tests) gives
    a hook bound to the copy's own context.
    """

    def __init__(self, context):
        self.context = context

    def __call__(self, module: nn.Module, args, output: torch.Tensor) -> torch.Tensor:
        extra = self.context.time_extra
        if extra is None:
            return output
        return output + extra.to(output.dtype)
