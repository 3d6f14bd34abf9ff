"""FSDP for FYC: units around U-Net blocks and motion modules, frozen encoders left out.

Lightning's FSDPStrategy takes an auto-wrap policy and FSDP kwargs, but FSDP's
`ignored_modules` needs the module instances, which exist only once the LightningModule is
built; this subclass fills them in at wrap time (the frozen autoencoder and text encoder are
kept whole on every rank: never sharded, never all-gathered, no optimizer state).
"""

from __future__ import annotations

from typing import Any

from lightning.pytorch.strategies import FSDPStrategy
from torch import nn


def fyc_wrap_classes() -> set[type[nn.Module]]:
    """diffusers UNetMotionModel blocks + AnimateDiff motion transformers (+ FYC MA layers)."""
    from diffusers.models.unets import unet_motion_model as umm

    classes: set[type[nn.Module]] = {
        umm.CrossAttnDownBlockMotion, umm.DownBlockMotion, umm.UNetMidBlockCrossAttnMotion,
        umm.CrossAttnUpBlockMotion, umm.UpBlockMotion,
    }
    for name in ("AnimateDiffTransformer3D", "TransformerTemporalModel"):
        if hasattr(umm, name):
            classes.add(getattr(umm, name))
    return classes


class FYCFSDPStrategy(FSDPStrategy):
    def __init__(self, **kwargs: Any) -> None:
        if "auto_wrap_policy" not in kwargs:
            from torch.distributed.fsdp.wrap import ModuleWrapPolicy

            kwargs["auto_wrap_policy"] = ModuleWrapPolicy(fyc_wrap_classes())
        super().__init__(**kwargs)

    def _setup_model(self, model: nn.Module) -> nn.Module:
        fyc = getattr(model, "model", None)  # FYCLitModule.model = FYCModel
        if fyc is not None and "ignored_modules" not in self.kwargs:
            frozen = [m for m in (getattr(fyc, "autoencoder", None), getattr(fyc, "text_encoder", None))
                      if m is not None and not any(p.requires_grad for p in m.parameters())]
            for m in frozen:
                m.to(self.root_device)  # FSDP does not move ignored modules
            self.kwargs["ignored_modules"] = frozen
        return super()._setup_model(model)
