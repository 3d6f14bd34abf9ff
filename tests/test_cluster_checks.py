"""preprocessing/cluster.py without a cluster: which resource requests fail fast (and name what),
and which failures count as a node loss. The real cluster is in tests/test_ray_cluster.py."""

from __future__ import annotations

import pytest
import ray.exceptions as rex

from preprocessing.cluster import ClusterError, Node, NodeLostError, Request, check_requests_fit, is_node_loss

HEAD0 = Node("a" * 40, "10.0.0.1", cpus=0, gpus=0)  # a head started with --num-cpus=0
CPU1 = Node("b" * 40, "10.0.0.2", cpus=1, gpus=0)
GPU8 = Node("c" * 40, "10.0.0.3", cpus=16, gpus=8)


def pools(flow_actors: int, flow_cpus: float, flow_gpus: float = 0.0) -> list[Request]:
    return [Request("decode", 1, 0.25), Request("encode", 1, 0.25),
            Request("flow", flow_actors, flow_cpus, flow_gpus, "ray.flow_actors / ray.flow_gpus_per_actor")]


def test_requests_that_fit_pass_and_unsatisfiable_ones_name_the_key_and_the_nodes():
    check_requests_fit(pools(1, 0.5), [HEAD0, CPU1])  # the survivor of a 2-node cluster: 0.25 + 0.5 + 0.25
    check_requests_fit(pools(8, 1.0, 1.0), [HEAD0, GPU8])
    with pytest.raises(ClusterError, match=r"no alive node has that .*\(10\.0\.0\.2\): 1 CPU 0 GPU.*ray\.flow_actors"):
        check_requests_fit(pools(1, 1.0, 1.0), [HEAD0, CPU1])  # a GPU actor on a CPU-only cluster
    with pytest.raises(ClusterError, match=r"need 9 GPUs \(9 x flow 1\) but the alive nodes have 8"):
        check_requests_fit(pools(9, 1.0, 1.0), [GPU8])
    with pytest.raises(ClusterError, match=r"need 1.5 CPUs"):
        check_requests_fit(pools(1, 1.0), [CPU1])  # what a stale 2-CPU sizing asks of the 1-CPU survivor
    with pytest.raises(ClusterError, match="no alive node with CPUs or GPUs"):
        check_requests_fit(pools(1, 0.5), [HEAD0])


def test_node_loss_is_told_apart_from_a_bug():
    try:
        try:
            raise rex.ActorUnavailableError("actor on a dead node", b"\0" * 16)
        except rex.ActorUnavailableError as inner:
            raise RuntimeError("Ray Data wrapped it") from inner
    except RuntimeError as outer:
        wrapped = outer
    assert is_node_loss(wrapped, [])
    assert is_node_loss(NodeLostError("stalled"), [])
    assert not is_node_loss(ValueError("a bug in a stage"), [])  # (no Ray running: no node vanished either)
