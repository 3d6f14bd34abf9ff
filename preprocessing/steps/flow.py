"""FlowStep: RAFT optical flow (torchvision raft_small / raft_large) on consecutive sampled frames.

`model="farneback"` swaps in OpenCV Farneback (steps/farneback.py) where no RAFT weights exist.

Pairs are batched across frames and across samples (`process_batch`), resized to `size`
(H, W divisible by 8 and >= 128: RAFT's requirement), RGB in [-1, 1] as torchvision's RAFT
expects, last refinement iteration kept. Adds to each ok sample:
  flow             float32 (F-1, 2, h, w) flow vectors (dx, dy) in pixels at flow resolution;
                   consumed and removed by MotionStep (pass `motion=` to fuse both in one actor
                   so full flows never leave it)
  flow_magnitudes  float32 (F-1, h, w) per-pixel |F_t|
  flow_info        {model, weights, weights_id, num_updates, height, width, input}; input is
                   "source" when the sample brought `flow_frames` (RAFT's input decoded from the
                   source at flow size, consumed here), else "clip" (the clip frames, resized)
  flow_upscale     flow size / the smaller side of the frames RAFT's input was made from
"""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F

from preprocessing.raft_weights import load_raft
from preprocessing.steps.farneback import FarnebackFlow
from preprocessing.steps.base import Sample, Step, is_ok


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def validate_flow_size(size: tuple[int, int] | list[int]) -> tuple[int, int]:
    height, width = (int(v) for v in size)
    if height % 8 or width % 8 or height < 128 or width < 128:
        raise ValueError(
            f"flow.size={[height, width]}: RAFT needs height and width divisible by 8 and at "
            f"least 128 (e.g. [256, 256])"
        )
    return height, width


class FlowStep(Step):
    name = "flow"

    def __init__(
        self,
        model: str = "raft_small",
        weights: str = "default",
        num_updates: int = 12,
        size: tuple[int, int] | list[int] = (256, 256),
        batch_size: int = 8,
        device: str = "auto",
        motion: Step | None = None,
        allow_download: bool = True,
    ) -> None:
        if num_updates < 1:
            raise ValueError(f"flow.num_updates must be >= 1, got {num_updates}")
        if batch_size < 1:
            raise ValueError(f"flow.batch_size must be >= 1, got {batch_size}")
        self.size = validate_flow_size(size)
        self.model_name, self.weights, self.num_updates = model, str(weights), num_updates
        self.batch_size = batch_size
        self.device = resolve_device(device)
        if model == "farneback":  # weight-free fallback (no RAFT checkpoint on this machine)
            self.model = FarnebackFlow()
        else:
            self.model = load_raft(model, self.weights, self.device, allow_download=allow_download)
        self.motion = motion
        self.info = {
            "model": model,
            "weights": self.weights,
            "weights_id": self.model.weights_id,
            "num_updates": num_updates,
            "height": self.size[0],
            "width": self.size[1],
        }

    def prepare(self, frames: np.ndarray) -> torch.Tensor:
        """uint8 (F, H, W, 3) -> float (F, 3, h, w) in [-1, 1] at flow size, on the device."""
        x = torch.from_numpy(np.ascontiguousarray(frames)).to(self.device)
        x = x.permute(0, 3, 1, 2).float()
        if tuple(x.shape[-2:]) != self.size:
            x = F.interpolate(x, size=self.size, mode="bilinear", align_corners=False,
                              antialias=True)
        return x / 127.5 - 1.0

    @torch.inference_mode()
    def raft(self, image1: torch.Tensor, image2: torch.Tensor) -> torch.Tensor:
        """RAFT on prepared pairs (N, 3, h, w) -> flow (N, 2, h, w), in chunks of batch_size."""
        out = []
        for lo in range(0, image1.shape[0], self.batch_size):
            flows = self.model(image1[lo : lo + self.batch_size], image2[lo : lo + self.batch_size],
                               num_flow_updates=self.num_updates)
            out.append(flows[-1])  # RAFT returns every refinement iteration; the last is best
        return torch.cat(out)

    @torch.inference_mode()
    def flows_for(self, clips: list[np.ndarray]) -> list[np.ndarray]:
        """Flow of consecutive frames for each clip, all pairs batched together."""
        prepared = [self.prepare(frames) for frames in clips]
        image1 = torch.cat([p[:-1] for p in prepared])
        image2 = torch.cat([p[1:] for p in prepared])
        del prepared
        flow = self.raft(image1, image2).float().cpu().numpy()
        counts = np.cumsum([0] + [len(frames) - 1 for frames in clips])
        return [flow[counts[i] : counts[i + 1]] for i in range(len(clips))]

    def process(self, sample: Sample) -> Sample:
        return self.process_batch([sample])[0]

    def __call__(self, sample: Sample) -> Sample:
        return self.process_batch([sample])[0]

    def process_batch(self, samples: list[Sample]) -> list[Sample]:
        todo = [s for s in samples if is_ok(s)]
        if todo:
            began = time.perf_counter()
            # flow_frames: RAFT's input taken from the source at flow size (decode_clip's
            # flow_size), sharper than the clip when the clip is smaller than flow.size
            from_source = ["flow_frames" in s for s in todo]
            flows = self.flows_for([s.pop("flow_frames") if src else s["frames"] for s, src in zip(todo, from_source)])
            elapsed = time.perf_counter() - began
            total_pairs = sum(len(f) for f in flows)
            for sample, flow, src in zip(todo, flows, from_source):
                timings = sample.setdefault("timings", {})
                # one batched RAFT call serves all samples: charge each its share of pairs
                timings[self.name] = timings.get(self.name, 0.0) + elapsed * len(flow) / total_pairs
                sample["flow"] = flow
                sample["flow_magnitudes"] = np.linalg.norm(flow, axis=1).astype(np.float32)
                sample["flow_info"] = dict(self.info, input="source" if src else "clip")
                # how much RAFT's input was enlarged from the pixels that exist: motion finer
                # than a source/clip pixel is invisible to it (MotionStep's label check)
                seen = ((sample.get("source_height"), sample.get("source_width")) if src
                        else sample["frames"].shape[1:3])
                if all(seen):
                    sample["flow_upscale"] = float(min(self.size) / min(int(v) for v in seen))
            del flows
        if self.motion is not None:
            samples = self.motion.process_batch(samples)
        return samples
