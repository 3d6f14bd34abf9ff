"""Where the flow actors run: `flow.device` resolved against the Ray cluster's resources.

auto  cuda when the cluster has GPUs (and ray.flow_gpus_per_actor > 0), else cpu
cpu   flow actors on CPUs, even on a GPU cluster
cuda  flow actors on GPUs, ray.flow_gpus_per_actor each; decode and encode stay on CPUs

Checked before any video is decoded, because Ray would otherwise wait forever: an actor asking
for a GPU the cluster does not have stays pending, and an actor pool larger than the GPUs never
fills. Each error names the key to change.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from preprocessing.config import ConfigError


@dataclass(frozen=True)
class FlowPlacement:
    device: str  # "cuda" or "cpu"
    gpus_per_actor: float  # Ray num_gpus of each flow actor (0 on CPU)
    cluster_gpus: float

    @property
    def use_gpu(self) -> bool:
        return self.device == "cuda"


def resolve_flow_placement(device: str, resources: Mapping[str, float], flow_actors: int,
                           gpus_per_actor: float) -> FlowPlacement:
    """`flow.device` + `ray.cluster_resources()` -> placement of the flow actors; ConfigError if
    the cluster cannot host them."""
    gpus = float(resources.get("GPU", 0) or 0)
    if device == "auto":
        device = "cuda" if gpus > 0 and gpus_per_actor > 0 else "cpu"
    if device == "cpu":
        return FlowPlacement("cpu", 0.0, gpus)
    if device != "cuda":
        raise ConfigError(f"flow.device={device!r} is invalid: allowed values are auto, cpu, cuda")
    if gpus <= 0:
        raise ConfigError(
            "flow.device=cuda but the Ray cluster has no GPU (cluster resources: "
            f"{', '.join(f'{k}={v:g}' for k, v in sorted(resources.items()) if k in ('CPU', 'GPU', 'memory')) or 'none'}); "
            "set flow.device=cpu (or auto), or join a cluster with GPU nodes (ray.address)")
    if gpus_per_actor <= 0:
        raise ConfigError(f"ray.flow_gpus_per_actor={gpus_per_actor:g} is invalid with flow.device=cuda: "
                          "set the GPUs (or fraction of one) each flow actor takes, e.g. 1")
    needed = flow_actors * gpus_per_actor
    if needed > gpus + 1e-9:
        fits = int(gpus // gpus_per_actor + 1e-9)
        fix = (f"set ray.flow_actors<={fits} (or a smaller ray.flow_gpus_per_actor to share GPUs)" if fits
               else f"set ray.flow_gpus_per_actor<={gpus:g}")
        raise ConfigError(
            f"ray.flow_actors={flow_actors} x ray.flow_gpus_per_actor={gpus_per_actor:g} needs {needed:g} GPUs "
            f"but the Ray cluster has {gpus:g}: {fix}, or add GPU nodes")
    return FlowPlacement("cuda", float(gpus_per_actor), gpus)
