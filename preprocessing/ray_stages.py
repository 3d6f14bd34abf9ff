"""The per-row steps wrapped as Ray Data `map_batches` callables.

Rows travel between stages as {chunk, row_index, payload} where payload is the pickled sample
dict. Why pickled: samples are heterogeneous (an error row has no frames, an ok row carries
(F, H, W, 3) arrays), which Arrow cannot hold in one column reliably; one binary column keeps
every block's schema identical, so Ray never fails a block on a schema mismatch.
Every stage catches per-row exceptions and records them on the row (`internal_error: ...`):
Ray would otherwise fail (or, with max_errored_blocks, silently drop) a whole block.
"""

from __future__ import annotations

import os
import pickle
import traceback
from typing import Any
from collections.abc import Callable

import numpy as np

from preprocessing.steps.base import Sample, is_ok, mark

_BIG_FIELDS_AFTER_FLOW = ("flow_magnitudes", "flow", "flows", "flow_frames")
_BIG_FIELDS_AFTER_ENCODE = ("frames", "mask")


def pack(chunk: int, sample: Sample) -> dict[str, Any]:
    return {"chunk": chunk, "row_index": int(sample["row_index"]),
            "payload": pickle.dumps(sample, protocol=pickle.HIGHEST_PROTOCOL)}


def unpack(payload: Any) -> Sample:
    return pickle.loads(bytes(payload))


def _map_rows(batch: dict[str, np.ndarray], fn: Callable[[list[Sample]], list[Sample]]) -> dict[str, np.ndarray]:
    samples = [unpack(p) for p in batch["payload"]]
    try:
        samples = fn(samples)
    except Exception as exc:  # noqa: BLE001 - recorded on the rows, the block must survive
        detail = f"internal_error: {type(exc).__name__}: {exc}"[:300]
        for s in samples:
            if is_ok(s):
                mark(s, "error", detail)
                s["traceback"] = traceback.format_exc()[-2000:]
    out = np.empty(len(samples), dtype=object)
    out[:] = [pickle.dumps(s, protocol=pickle.HIGHEST_PROTOCOL) for s in samples]
    # a step may turn one row into several samples (one per window): each keeps its row's chunk
    chunk_of = dict(zip(batch["row_index"].tolist(), batch["chunk"].tolist()))
    rows = [int(s["row_index"]) for s in samples]
    return {"chunk": np.array([chunk_of[r] for r in rows], dtype=np.int64),
            "row_index": np.array(rows, dtype=np.int64), "payload": out}


def _per_row(step_fn: Callable[[Sample], Sample]) -> Callable[[list[Sample]], list[Sample]]:
    def run(samples: list[Sample]) -> list[Sample]:
        out = []
        for s in samples:
            try:
                out.append(step_fn(s))
            except Exception as exc:  # noqa: BLE001
                if is_ok(s):
                    mark(s, "error", f"internal_error: {type(exc).__name__}: {exc}"[:300])
                out.append(s)
        return out
    return run


class DecodeStage:
    """Actor: fetch (URL -> temp file) + decord decode under the decode step's watchdog + source filters."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        from preprocessing.config import flow_input_size, scene_windows
        from preprocessing.steps.decode import DecodeStep
        from preprocessing.steps.filters import SourceFilterStep
        from preprocessing.steps.windows import WindowSplitStep

        self.input = cfg["input"]
        clip = cfg["clip"]
        self.decode = DecodeStep(clip["num_frames"], clip["stride"], clip["size"], timeout_s=cfg["decode"]["timeout_s"],
                                 flow_size=flow_input_size(cfg["flow"]), windows=scene_windows(clip))
        self.split = WindowSplitStep()
        self.filter = SourceFilterStep(cfg["filter"]["min_source_frames"], cfg["filter"]["min_resolution"])

    def _one(self, sample: Sample) -> Sample:
        from preprocessing.sources.fetch import FetchError, local_video
        from preprocessing.steps.base import timed

        if not is_ok(sample):
            return sample
        try:
            with timed(sample, "fetch_decode"):
                with local_video(sample["video"], self.input["allowed_schemes"], self.input["fetch_timeout_s"],
                                 self.input["max_bytes"]) as path:
                    sample["local_path"] = path
                    sample = self.decode(sample)
        except FetchError as exc:
            status = "error"
            return mark(sample, status, str(exc))
        finally:
            sample.pop("local_path", None)
        return self.filter(sample)

    def _decode_and_split(self, samples: list[Sample]) -> list[Sample]:
        return [window for s in _per_row(self._one)(samples) for window in self.split(s)]

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return _map_rows(batch, self._decode_and_split)


class FlowStage:
    """Actor (GPU when the cluster has one): batched RAFT flow -> motion mask + magnitude -> magnitude filter."""

    def __init__(self, cfg: dict[str, Any], use_gpu: bool, torch_threads: int) -> None:
        import torch

        from preprocessing.steps.filters import MagnitudeFilterStep
        from preprocessing.steps.flow import FlowStep
        from preprocessing.steps.motion import MotionStep

        if not use_gpu:
            torch.set_num_threads(max(1, torch_threads))
        flow = cfg["flow"]
        if use_gpu and not torch.cuda.is_available():  # never fall back to CPU silently
            raise RuntimeError("flow.device resolved to cuda but this flow actor sees no CUDA device "
                               f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r}); "
                               "check the node's driver and torch build, or set flow.device=cpu")
        device = "cuda" if use_gpu else "cpu"
        self.flow = FlowStep(model=flow["model"], weights=flow["weights"], num_updates=flow["num_updates"],
                             size=(flow["size"], flow["size"]), batch_size=flow["batch_size"], device=device,
                             motion=MotionStep(definition=flow["mask"], region=flow["mask_region"],
                                               core_fraction=flow["core_fraction"]))  # fused: full flows never leave the actor
        self.filter = MagnitudeFilterStep(cfg["filter"]["min_magnitude"], cfg["filter"]["max_magnitude"])

    def _run(self, samples: list[Sample]) -> list[Sample]:
        from preprocessing.outputs.manifest import flow_direction

        samples = self.flow.process_batch(samples)
        for s in samples:
            if is_ok(s):
                s["direction"] = flow_direction(s)
                mask = s.get("mask")
                if mask is not None:
                    s["mask_fraction"] = float((np.asarray(mask) > 127).mean())
            for name in _BIG_FIELDS_AFTER_FLOW:
                s.pop(name, None)
        return _per_row(self.filter)(samples)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return _map_rows(batch, self._run)


class EncodeStage:
    """Actor: clip -> mp4 bytes, mask -> png bytes, shard json; then drop the arrays.

    Why an actor and not a task: fractional-CPU tasks let Ray start one worker process per
    concurrent task (8 on a 2-CPU machine), each paying the torch/PyAV import before its first
    row; on a small machine that start-up dominated the whole run. A small pool of warm actors
    encodes the same rows with a constant number of processes.
    """

    def __init__(self, cfg: dict[str, Any]) -> None:
        from preprocessing.steps.encode import EncodeStep

        self.step = EncodeStep()

    def _run(self, samples: list[Sample]) -> list[Sample]:
        samples = _per_row(self.step)(samples)
        for s in samples:
            if is_ok(s):
                meta = s.setdefault("json", {})
                meta.setdefault("motion_prompt", s.get("motion_prompt", ""))
                if s.get("extra"):
                    meta.setdefault("extra", s["extra"])
            for name in _BIG_FIELDS_AFTER_ENCODE:
                s.pop(name, None)
        return samples

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return _map_rows(batch, self._run)
