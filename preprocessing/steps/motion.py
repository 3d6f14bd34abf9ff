"""MotionStep: motion mask + magnitude from RAFT flow, two definitions.

paper  (Follow-Your-Click): per pair, pixels whose |F_t| exceeds that frame's mean |F_t|; union
       over pairs; magnitude = mean |F| inside the union over all pairs. On textured clips with
       a static, codec-noisy background the mean is dragged down by the many near-zero pixels,
       so the threshold sits inside the background's noise: the mask takes in 10-50% of the
       frame and the magnitude reads 0.3-0.4x the object's true speed (tests/test_motion.py
       measures this on a synthetic clip of known speed).
robust (default): per pair t,
       noise_t = median(|F_t|) + k * 1.4826 * MAD(|F_t|)    (robust estimate of the static
                 background's flow noise; most pixels of a clip are background)
       thr_t   = max(abs_floor_px, min(noise_t, high_fraction * P_high(|F_t|)))
                 the min() keeps whole-frame motion (camera pans: median ~ speed) in the mask,
                 the absolute floor keeps sub-pixel jitter out of it on perfectly clean clips;
       mask_t  = morphological opening of |F_t| > thr_t (drops isolated noise speckles);
       pair magnitude = median |F_t| over the core of mask_t, the pixels at or above
                 core_fraction x P95 of mask_t (RAFT smooths the flow across object borders, so
                 a ring of slower pixels surrounds the object; for slow objects the ring is a
                 large share of the mask: MovingShapes' slowest third reads 0.77x of its true
                 speed at core_fraction 0.5, 0.88x at 0.8, same flows, bench/moving_shapes_labels.py);
                 0 if empty.
       magnitude = mean of the pair magnitudes; mask = union of the mask_t.
Mask region (either definition):
union  (paper) the union over pairs: the whole swept trajectory.
first  pair 0 only: the pixels of frame 0 that move (forward flow lives on frame 0's grid),
       i.e. the object a user clicks on the input image at inference. Use it when motions are
       large next to the object: a union mask then spans the trajectory, so its shape tells the
       model the axis and the extent of the motion, and a click mask (the object alone) at
       inference is out of distribution (MovingShapes: objects of 9-14 px travel up to 21 px).
Units: pixels per sampled-frame step (between frames `stride` source frames apart), at the flow
resolution. Adds: mask uint8 (H, W) at clip size (255 = moves), magnitude, pair_magnitudes,
flow_mean_vectors (F-1, 2) mean (dx, dy) inside each pair's mask, mean_flow (dx, dy),
mask_fraction, motion_definition, label_warning (see `label_warning`). Removes `flow` (full vectors are not kept past this step).
"""

from __future__ import annotations

import cv2
import numpy as np

from preprocessing.steps.base import Sample, Step

DEFINITIONS = ("robust", "paper")
REGIONS = ("union", "first")


def robust_pair_masks(
    magnitudes: np.ndarray,
    abs_floor_px: float = 0.5,
    noise_k: float = 3.0,
    high_percentile: float = 99.0,
    high_fraction: float = 0.5,
    open_px: int = 3,
) -> np.ndarray:
    """(P, h, w) magnitudes -> (P, h, w) bool per-pair masks (see module docstring)."""
    masks = np.zeros(magnitudes.shape, dtype=bool)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (open_px, open_px)) if open_px > 1 else None
    for t, mag in enumerate(magnitudes):
        median = float(np.median(mag))
        mad = float(np.median(np.abs(mag - median)))
        noise = median + noise_k * 1.4826 * mad
        high = float(np.percentile(mag, high_percentile))
        threshold = max(abs_floor_px, min(noise, high_fraction * high))
        mask = (mag > threshold).astype(np.uint8)
        if kernel is not None:
            mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, kernel)
        masks[t] = mask.astype(bool)
    return masks


def core_median(magnitude: np.ndarray, mask: np.ndarray, core_fraction: float = 0.8) -> float:
    """Median |F| over the core of a pair's mask (see module docstring); 0.0 for an empty mask."""
    values = magnitude[mask]
    if values.size == 0:
        return 0.0
    core = values[values >= core_fraction * np.percentile(values, 95)]
    return float(np.median(core))


def paper_pair_masks(magnitudes: np.ndarray) -> np.ndarray:
    return magnitudes > magnitudes.mean(axis=(1, 2), keepdims=True)


def _mean_vectors(flow: np.ndarray, masks: np.ndarray) -> np.ndarray:
    out = np.zeros((len(flow), 2), dtype=np.float32)
    for t in range(len(flow)):
        if masks[t].any():
            out[t] = flow[t][:, masks[t]].mean(axis=1)
    return out


class MotionStep(Step):
    name = "motion"

    def __init__(
        self,
        definition: str = "robust",
        abs_floor_px: float = 0.5,
        noise_k: float = 3.0,
        high_percentile: float = 99.0,
        high_fraction: float = 0.5,
        open_px: int = 3,
        core_fraction: float = 0.8,
        region: str = "union",
    ) -> None:
        if definition not in DEFINITIONS:
            raise ValueError(f"flow.mask must be one of {DEFINITIONS}, got {definition!r}")
        if region not in REGIONS:
            raise ValueError(f"flow.mask_region must be one of {REGIONS}, got {region!r}")
        self.definition = definition
        self.region = region
        self.core_fraction = core_fraction
        self.robust_kwargs = dict(abs_floor_px=abs_floor_px, noise_k=noise_k,
                                  high_percentile=high_percentile, high_fraction=high_fraction,
                                  open_px=open_px)

    def measure(self, flow: np.ndarray) -> dict:
        """flow (P, 2, h, w) -> mask (h, w) bool, magnitude, pair magnitudes, mean vectors."""
        magnitudes = np.linalg.norm(flow, axis=1)
        if self.definition == "paper":
            paper_masks = paper_pair_masks(magnitudes)
            union = paper_masks.any(axis=0)
            pair_masks = np.broadcast_to(union, magnitudes.shape)
            pair = [float(m[union].mean()) if union.any() else 0.0 for m in magnitudes]
            magnitude = float(magnitudes[:, union].mean()) if union.any() else 0.0
        else:
            pair_masks = robust_pair_masks(magnitudes, **self.robust_kwargs)
            union = pair_masks.any(axis=0)
            pair = [core_median(m, k, self.core_fraction) for m, k in zip(magnitudes, pair_masks)]
            magnitude = float(np.mean(pair))
        vectors = _mean_vectors(flow, pair_masks)
        if self.region == "first":
            union = paper_masks[0] if self.definition == "paper" else pair_masks[0]
        return {"union": union, "magnitude": magnitude, "pair_magnitudes": pair,
                "flow_mean_vectors": vectors}

    def process(self, sample: Sample) -> Sample:
        flow = sample.pop("flow", None)
        if flow is None:
            raise KeyError("MotionStep needs sample['flow'] from FlowStep (run FlowStep first)")
        result = self.measure(flow)
        height, width = sample["frames"].shape[1:3] if "frames" in sample else result["union"].shape
        mask = cv2.resize(result["union"].astype(np.uint8) * 255, (width, height),
                          interpolation=cv2.INTER_NEAREST)
        sample["mask"] = mask
        sample["mask_fraction"] = float((mask > 0).mean())
        sample["magnitude"] = result["magnitude"]
        sample["pair_magnitudes"] = result["pair_magnitudes"]
        sample["flow_mean_vectors"] = result["flow_mean_vectors"]
        sample["mean_flow"] = [float(v) for v in result["flow_mean_vectors"].mean(axis=0)]
        sample["motion_definition"] = self.definition
        sample["mask_region"] = self.region
        # the magnitude's reduction: labels made with another core fraction are not comparable
        sample["core_fraction"] = self.core_fraction if self.definition == "robust" else None
        sample["label_warning"] = label_warning(sample)
        return sample


def label_warning(sample: Sample) -> str:
    """Why a sample's motion label is suspect, or "" (manifest/windows column `label_warning`).

    no_motion_measured: the caption names a motion (a motion prompt was extracted) but the flow
        shows none (empty mask, magnitude 0). Either the clip is still, or RAFT could not see the
        motion: sub-pixel motion on an upscaled input (flow_upscale > 1) reads as zero.
    """
    if sample.get("motion_prompt") and (float(sample.get("magnitude") or 0.0) == 0.0
                                        or float(sample.get("mask_fraction") or 0.0) == 0.0):
        upscale = sample.get("flow_upscale")
        return "no_motion_measured" + (f": flow input upscaled {upscale:.1f}x" if upscale and upscale > 1 else "")
    return ""
