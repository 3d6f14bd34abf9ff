"""Clicks (positive / negative points) and boxes -> a binary mask with Segment Anything.

The checkpoint is read with `torch.load(weights_only=True)` into a model built with
`checkpoint=None`: segment_anything's own loader calls plain `torch.load`, which would run any
pickled code in a downloaded file.
"""
from __future__ import annotations

import logging
from functools import partial
from pathlib import Path
from collections.abc import Callable, Sequence

import numpy as np
import torch
from segment_anything import SamPredictor, sam_model_registry
from segment_anything.modeling import (
    ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer,
)

from .masks import SamplingInputError, check_box, check_points

log = logging.getLogger(__name__)

SAM_DOWNLOADS = {
    "vit_h": "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_h_4b8939.pth",
    "vit_l": "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_l_0b3195.pth",
    "vit_b": "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth",
}

# The image encoder's width tells the official variants apart (model_type=auto).
EMBED_DIM_TO_TYPE = {768: "vit_b", 1024: "vit_l", 1280: "vit_h"}


def build_tiny_sam(checkpoint: None = None) -> Sam:
    """A random-init SAM small enough for CPU tests (64 px input, 1-block ViT, 32-d prompts).

    Same classes and data path as the real models; only the sizes differ. Not useful for
    real segmentation: its masks are noise.
    """
    img_size, patch, prompt_dim = 64, 16, 32
    sam = Sam(
        image_encoder=ImageEncoderViT(
            img_size=img_size, patch_size=patch, embed_dim=32, depth=1, num_heads=2,
            mlp_ratio=2, out_chans=prompt_dim, qkv_bias=True,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), use_rel_pos=True,
            window_size=0, global_attn_indexes=(0,),
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=prompt_dim, image_embedding_size=(img_size // patch, img_size // patch),
            input_image_size=(img_size, img_size), mask_in_chans=4,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=1, embedding_dim=prompt_dim, mlp_dim=64, num_heads=2),
            transformer_dim=prompt_dim, iou_head_depth=2, iou_head_hidden_dim=32,
        ),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    )
    return sam.eval()


SAM_BUILDERS: dict[str, Callable[..., Sam]] = {**sam_model_registry, "tiny": build_tiny_sam}


def missing_checkpoint_message() -> str:
    urls = "\n".join(f"  {k}: {v}" for k, v in SAM_DOWNLOADS.items())
    return (
        "Clicks need a Segment Anything checkpoint, and none is configured.\n"
        "Download one (vit_b is the smallest, 375 MB; vit_h the best, 2.6 GB):\n"
        f"{urls}\n"
        "then pass sam.checkpoint=/path/to/sam_vit_b_01ec64.pth "
        "(sam.model_type=auto, the default, reads vit_b / vit_l / vit_h from the file).\nWithout SAM, give the region directly: mask=PATH.png (white = moves) or "
        "box=[x0,y0,x1,y1] (the box itself is used as the mask)."
    )


def load_sam(checkpoint: str | Path | None, model_type: str = "auto") -> Sam:
    """Build `model_type` and load `checkpoint` without executing pickled code."""
    if not checkpoint:
        raise SamplingInputError(missing_checkpoint_message())
    path = Path(checkpoint)
    if not path.is_file():
        raise SamplingInputError(f"sam.checkpoint={path}: no such file.\n" + missing_checkpoint_message())
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # UnpicklingError for pickled objects, RuntimeError for junk
        raise SamplingInputError(
            f"sam.checkpoint={path} cannot be loaded as plain weights ({type(err).__name__}: "
            f"{str(err).splitlines()[0]}). Use an official SAM .pth file; files that need "
            "arbitrary pickled code are refused."
        ) from err
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    if model_type == "auto":
        key = "image_encoder.patch_embed.proj.weight"
        if key not in state:
            raise SamplingInputError(f"sam.checkpoint={path} does not look like a SAM state dict.")
        dim = state[key].shape[0]
        model_type = EMBED_DIM_TO_TYPE.get(dim, "tiny" if dim == 32 else "")
        if not model_type:
            raise SamplingInputError(f"sam.checkpoint={path}: unknown SAM width {dim}; set sam.model_type.")
    if model_type not in SAM_BUILDERS:
        raise SamplingInputError(f"sam.model_type={model_type}: choose one of {sorted(SAM_BUILDERS)} or auto.")
    sam = SAM_BUILDERS[model_type](checkpoint=None)
    try:
        sam.load_state_dict(state)
    except RuntimeError as err:
        raise SamplingInputError(
            f"sam.checkpoint={path} does not fit sam.model_type={model_type} "
            f"({str(err).splitlines()[0]}). Set sam.model_type=auto."
        ) from err
    return sam.eval()


class ClickSegmenter:
    """Image + clicks/box -> bool mask (H, W), via segment_anything's SamPredictor."""

    def __init__(self, sam: Sam, device: str | torch.device = "cpu") -> None:
        self.predictor = SamPredictor(sam.to(device))

    @torch.no_grad()
    def segment(
        self,
        image: np.ndarray,
        points: Sequence[Sequence[float]] | None = None,
        labels: Sequence[int] | None = None,
        box: Sequence[float] | None = None,
    ) -> np.ndarray:
        """image uint8 (H, W, 3) RGB; points [[x, y], ...] in pixels; labels 1 = object,
        0 = not the object (default all 1); box [x0, y0, x1, y1]."""
        h, w = image.shape[:2]
        coords = lab = None
        if points is not None and len(points) > 0:
            coords = check_points(points, h, w)
            lab = np.ones(len(coords), dtype=np.int64) if labels is None else np.asarray(labels)
            if lab.shape != (len(coords),) or not np.isin(lab, (0, 1)).all():
                raise SamplingInputError(
                    f"labels {labels!r}: need one 1 (object) or 0 (background) per click."
                )
            if not (lab == 1).any() and box is None:
                raise SamplingInputError("all clicks are negative (label 0): click the object at least once.")
        box_arr = check_box(box, h, w) if box is not None else None
        if coords is None and box_arr is None:
            raise SamplingInputError("give at least one click or a box to segment.")
        self.predictor.set_image(np.ascontiguousarray(image))
        # One positive click is ambiguous (part / object / whole): SAM proposes 3 masks and we
        # keep the one it scores best. Several points or a box are not ambiguous: one mask.
        multimask = box_arr is None and coords is not None and len(coords) == 1
        masks, scores, _ = self.predictor.predict(
            point_coords=coords, point_labels=lab, box=box_arr, multimask_output=multimask
        )
        best = int(np.argmax(scores))
        log.info("SAM mask %d of %d (predicted IoU %.3f)", best, len(scores), scores[best])
        return masks[best].astype(bool)
