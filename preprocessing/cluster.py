"""The Ray cluster as the job sees it: the nodes alive now, whether the stages' resource requests
can ever be met there, whether every node can load the RAFT weights, and whether a failed
execution was a lost node (re-plan and go on) or something else (raise).

Why this exists: Ray Data sizes nothing for us and never fails on an unsatisfiable request, it
waits. After a node loss a restarted actor that asks for more than the surviving nodes have
pends forever, and a node without the weights fails only when its flow actor starts, deep into
the run. Both are checked here before any row is processed.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("fyc.preprocess")


class ClusterError(RuntimeError):
    """The cluster cannot run the job as configured; the message names the node or key and the fix."""


class NodeLostError(RuntimeError):
    """An attempt stopped because a node was lost; the driver re-plans the unwritten chunks."""


@dataclass(frozen=True)
class Node:
    node_id: str
    address: str
    cpus: float
    gpus: float

    @property
    def name(self) -> str:
        return f"node {self.node_id[:12]} ({self.address})"


def alive_nodes() -> list[Node]:
    """The nodes the GCS reports alive now (a lost node drops out after Ray's health check)."""
    import ray

    return [Node(n["NodeID"], n.get("NodeManagerAddress", "?"), float(n["Resources"].get("CPU", 0)),
                 float(n["Resources"].get("GPU", 0)))
            for n in ray.nodes() if n.get("Alive")]


def worker_nodes(nodes: list[Node]) -> list[Node]:
    """Nodes that can host a stage (a head started with --num-cpus=0 runs none)."""
    return [n for n in nodes if n.cpus > 0 or n.gpus > 0]


@dataclass(frozen=True)
class Request:
    """One actor pool: `count` actors, each asking for `cpus` CPUs and `gpus` GPUs."""

    stage: str
    count: int
    cpus: float
    gpus: float = 0.0
    keys: str = ""  # the config keys that set it, for the error message


def check_requests_fit(requests: list[Request], nodes: list[Node]) -> None:
    """Fail fast when a pool can never be scheduled on the nodes alive now (Ray would wait forever)."""
    hosts = worker_nodes(nodes)
    if not hosts:
        raise ClusterError("the Ray cluster has no alive node with CPUs or GPUs; start workers "
                           "(ray start --address=<head>:<port>) and re-submit")
    summary = ", ".join(f"{n.name}: {n.cpus:g} CPU {n.gpus:g} GPU" for n in hosts)
    for r in requests:
        if not any(n.cpus >= r.cpus and n.gpus >= r.gpus for n in hosts):
            raise ClusterError(
                f"a {r.stage} actor asks for {r.cpus:g} CPU and {r.gpus:g} GPU but no alive node has that "
                f"({summary}); lower {r.keys or 'the request'} or add such a node")
    for kind in ("cpus", "gpus"):
        need = sum(r.count * getattr(r, kind) for r in requests)
        have = sum(getattr(n, kind) for n in hosts)
        if need > have + 1e-9:
            detail = ", ".join(f"{r.count} x {r.stage} {getattr(r, kind):g}" for r in requests if getattr(r, kind))
            raise ClusterError(
                f"the stages need {need:g} {kind[:-1].upper()}s ({detail}) but the alive nodes have {have:g} "
                f"({summary}); lower ray.flow_actors or add nodes")


def _weights_probe(model: str, weights: str) -> dict[str, Any]:
    """Runs ON a node: can this node's flow actor load the configured weights? (no model built)"""
    import socket

    from preprocessing.raft_weights import MODELS, file_digest

    if weights == "default":
        import torch

        url = MODELS[model][1].DEFAULT.url
        path = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(url))
        where = f"torchvision's cache {path} (TORCH_HOME={os.environ.get('TORCH_HOME', '<unset>')})"
    else:
        path = os.path.expanduser(weights)
        where = path
    info: dict[str, Any] = {"host": socket.gethostname(), "path": path, "where": where}
    try:
        info["digest"] = file_digest(path)
    except OSError as exc:
        info["error"] = f"{type(exc).__name__}: {exc.strerror or exc}"
    return info


def check_weights_on_every_node(model: str, weights: str, nodes: list[Node], timeout_s: float = 300) -> None:
    """One zero-CPU probe task pinned to each node that can host a flow actor: every node must read
    the same weights file. Raises ClusterError naming each node that cannot."""
    if model not in ("raft_small", "raft_large"):
        return  # farneback needs no weights
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    probe = ray.remote(num_cpus=0, max_retries=0)(_weights_probe)
    hosts = worker_nodes(nodes)
    refs = {n: probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n.node_id, soft=False))
            .remote(model, str(weights)) for n in hosts}
    ready, _ = ray.wait(list(refs.values()), num_returns=len(refs), timeout=timeout_s)
    problems, digests = [], {}
    still_alive = {n.node_id for n in alive_nodes()}
    for node, ref in refs.items():
        if node.node_id not in still_alive:  # lost since: it will run nothing of this job
            log.warning("%s left the cluster during the weights check; going on without it", node.name)
            continue
        if ref not in ready:
            problems.append(f"{node.name}: did not answer the weights check in {timeout_s:.0f}s")
            continue
        try:
            info = ray.get(ref)
        except ray.exceptions.RayError as exc:
            problems.append(f"{node.name}: the weights check failed ({type(exc).__name__})")
            continue
        if "error" in info:
            problems.append(f"{node.name}, host {info['host']}: cannot read {info['where']}: {info['error']}")
        else:
            digests[node] = info["digest"]
    if len(set(digests.values())) > 1:
        problems.append("the weights differ between nodes (sha256 " + ", ".join(
            f"{d} on {n.name}" for n, d in digests.items()) + ")")
    if problems:
        advice = ("put the checkpoint on storage every node mounts at the same path and pass flow.weights=PATH"
                  if weights != "default" else
                  "pre-populate each node's torchvision cache ($TORCH_HOME/hub/checkpoints) or pass "
                  "flow.weights=PATH to a checkpoint on storage every node mounts")
        raise ClusterError(f"flow.model={model} flow.weights={weights}: {len(problems)} of {len(hosts)} nodes "
                           f"cannot load the RAFT weights: " + "; ".join(problems) + f". Fix: {advice}")
    log.info("RAFT weights (%s) readable on all %d nodes, sha256 %s", weights, len(hosts),
             next(iter(digests.values()), "?"))


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or any(e is s for s in seen):
            continue
        seen.append(e)
        todo += [e.__cause__, e.__context__, getattr(e, "cause", None)]
    return seen


def is_node_loss(exc: BaseException, nodes_before: list[Node]) -> bool:
    """A failure the job survives by re-planning: an alive node disappeared during the attempt, or Ray
    reports a dead actor/worker/node or a lost object (what a node loss surfaces as)."""
    import ray.exceptions as rex

    lost_types = (rex.ActorDiedError, rex.ActorUnavailableError, rex.NodeDiedError, rex.ObjectLostError,
                  rex.WorkerCrashedError, rex.OwnerDiedError, rex.LocalRayletDiedError)
    if any(isinstance(e, (NodeLostError, *lost_types)) for e in _chain(exc)):
        return True
    try:
        now = {n.node_id for n in alive_nodes()}
    except Exception:  # noqa: BLE001 - the GCS itself is gone: not survivable here
        return False
    return any(n.node_id not in now for n in nodes_before)


def wait_for_lost_nodes(nodes_before: list[Node], settle_s: float) -> list[Node]:
    """After a failure: wait (up to settle_s) until the GCS has declared at least one of the nodes
    alive at the attempt's start dead, so the next attempt is not sized with a node that is gone.
    Returns the nodes alive then."""
    before = {n.node_id for n in nodes_before}
    deadline = time.monotonic() + settle_s
    while True:
        nodes = alive_nodes()
        if before - {n.node_id for n in nodes} or time.monotonic() > deadline:
            return nodes
        time.sleep(1.0)


class NodeLossWatchdog:
    """Interrupts a Ray Data execution that a lost node left waiting forever.

    Ray restarts a lost node's actors elsewhere (max_restarts), but a restarted actor keeps its
    resource request; when no surviving node has room for it, the execution waits without end and
    raises nothing. This daemon thread polls the alive nodes; once one of `nodes` has been gone for
    `settle_s` with no row arriving, it interrupts the main thread, which then re-plans like any
    other node loss (`fired` tells that KeyboardInterrupt apart from a user's Ctrl-C).
    """

    def __init__(self, nodes: list[Node], settle_s: float, poll_s: float = 2.0) -> None:
        import threading

        self.expected = {n.node_id for n in nodes}
        self.settle_s, self.poll_s = settle_s, poll_s
        self.fired = False
        self.last_progress = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="fyc-node-loss-watchdog", daemon=True)

    def progress(self) -> None:
        self.last_progress = time.monotonic()

    def _watch(self) -> None:
        import _thread

        lost_since = None
        while not self._stop.wait(self.poll_s):
            try:
                gone = self.expected - {n.node_id for n in alive_nodes()}
            except Exception:  # noqa: BLE001 - a GCS hiccup is not a node loss
                continue
            if gone and lost_since is None:
                lost_since = time.monotonic()
                log.warning("Ray reports %d node(s) lost: %s", len(gone), ", ".join(g[:12] for g in sorted(gone)))
            if lost_since is not None and time.monotonic() - max(lost_since, self.last_progress) > self.settle_s:
                log.warning("no row for %.0fs after a node loss: stopping this attempt", self.settle_s)
                self.fired = True
                _thread.interrupt_main()
                return

    def __enter__(self) -> NodeLossWatchdog:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
