"""fyc-preprocess orchestration: chunking, resume, retry, Ray Data stages, outputs.

Determinism and resume: input rows (in input order) are split into chunks of
`shard.max_samples`; chunk i writes `shards/shard-{i:06d}.tar` (its ok samples, atomically),
then `parts/part-{i:06d}.parquet` (manifest rows for all its input rows). A chunk is done iff its
part exists, so a re-run skips done chunks, and a run killed at any point then re-run produces
what an uninterrupted run produces. `retry_errors=true` re-processes the `error` rows of done
chunks into new shards `shards/retry-{n:06d}-{i:06d}.tar` and rewrites only the parts.
"""

from __future__ import annotations

import logging
import os
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from preprocessing.cluster import (ClusterError, Node, NodeLossWatchdog, NodeLostError, Request, alive_nodes,
                                   check_requests_fit, check_weights_on_every_node, is_node_loss, wait_for_lost_nodes,
                                   worker_nodes)
from preprocessing import in_process
from preprocessing.config import to_container
from preprocessing.devices import resolve_flow_placement
from preprocessing.lock import OutputLock
from preprocessing.outputs.manifest import part_path, read_part, write_manifest, write_table_atomic
from preprocessing.outputs.windows import ChunkCollector, account_chunk, read_windows_part, write_windows_part
from preprocessing.prompts import make_extractor
from preprocessing.ray_stages import DecodeStage, EncodeStage, FlowStage, pack, unpack
from preprocessing.shards import remove_stale_temporaries, write_shard
from preprocessing.sources import InputRow, load_rows
from preprocessing.steps.base import Sample, is_ok
from preprocessing.steps.prompt import PromptStep

log = logging.getLogger("fyc.preprocess")


@dataclass
class ChunkWork:
    chunk: int
    shard: str  # relative to output.dir
    samples: list[Sample]
    retry: bool = False


@dataclass
class RunSummary:
    output_dir: Path
    num_rows: int
    num_chunks: int
    chunks_processed: int
    rows_processed: int
    wall_s: float
    step_seconds: dict[str, float] = field(default_factory=dict)


def chunk_rows(rows: list[InputRow], size: int) -> list[list[InputRow]]:
    return [rows[i : i + size] for i in range(0, len(rows), size)]


def _next_retry_round(out: Path) -> int:
    rounds = [int(p.name.split("-")[1]) for p in (out / "shards").glob("retry-*-*.tar")]
    return max(rounds, default=0) + 1


def _remove_orphan_retry_shards(out: Path, num_chunks: int) -> None:
    """A retry shard whose part was never updated (killed run) is not in the manifest: delete it,
    or readers globbing shards/*.tar would see its samples twice."""
    referenced = set()
    for i in range(num_chunks):
        if part_path(out, i).exists():
            referenced.update(r["shard"] for r in read_part(out, i))
    for tar in (out / "shards").glob("retry-*.tar"):
        if f"shards/{tar.name}" not in referenced:
            log.warning("removing orphan retry shard %s (its run was interrupted)", tar)
            tar.unlink()


def plan_work(out: Path, chunks: list[list[InputRow]], retry_errors: bool) -> list[ChunkWork]:
    work: list[ChunkWork] = []
    retry_round = _next_retry_round(out) if retry_errors else 0
    for i, chunk in enumerate(chunks):
        if not part_path(out, i).exists():
            work.append(ChunkWork(i, f"shards/shard-{i:06d}.tar", [r.to_sample() for r in chunk]))
        elif retry_errors:
            errored = {r["row_index"] for r in read_part(out, i) if r["status"] == "error"}
            samples = [r.to_sample() for r in chunk if r.row_index in errored]
            if samples:
                work.append(ChunkWork(i, f"shards/retry-{retry_round:06d}-{i:06d}.tar", samples, retry=True))
    return work


def _init_ray(cfg: Any) -> bool:
    """Start (or join) Ray; returns True when this call started it (and must shut it down)."""
    import ray

    if ray.is_initialized():
        return False
    if cfg.ray.address:
        ray.init(address=cfg.ray.address, log_to_driver=cfg.ray.log_to_driver)
    else:
        # worker_niceness 0: Ray starts workers at nice 15 by default, so on a machine shared with
        # anything else the job's own decode/RAFT/encode workers would yield to it all; on a machine
        # this job started, the workers are the job.
        ray.init(num_cpus=cfg.ray.num_cpus or os.cpu_count(), include_dashboard=False,
                 log_to_driver=cfg.ray.log_to_driver, logging_level=logging.WARNING,
                 _system_config={"worker_niceness": 0})
    return True


def _build_dataset(items: list[dict[str, Any]], cfg: Any, cfg_dict: dict[str, Any], nodes: list[Node]):
    import ray
    from ray.data import ActorPoolStrategy, DataContext

    ctx = DataContext.get_current()
    ctx.execution_options.preserve_order = True  # deterministic order: chunks complete in order
    # Sized from the nodes alive now (after a node loss: the survivors), not from a stale total.
    hosts = worker_nodes(nodes)
    resources = {"CPU": sum(n.cpus for n in hosts), "GPU": sum(n.gpus for n in hosts)}
    cpus, gpus = resources["CPU"] or 1.0, resources["GPU"]
    placement = resolve_flow_placement(cfg.flow.device, resources, int(cfg.ray.flow_actors),
                                       float(cfg.ray.flow_gpus_per_actor))  # ConfigError before any decode
    use_gpu = placement.use_gpu
    flow_actors = int(cfg.ray.flow_actors)
    # Fractional CPU requests so decode actors, flow actors and encode tasks can all be
    # scheduled even on a 2-core machine (whole-CPU requests would starve the encode stage).
    decode_actors = max(1, int(cpus // 2)) if not use_gpu else max(1, int(cpus) - flow_actors - 1)
    # CPU flow actors share what decode and encode (0.25 each) leave, so several fit a small machine
    flow_cpu = 1.0 if use_gpu else min(1.0, (cpus - 0.5) / flow_actors)
    clips_per_flow_batch = max(1, int(cfg.flow.batch_size) // max(1, int(cfg.clip.num_frames) - 1))
    flow_args: dict[str, Any] = {"num_cpus": flow_cpu, "max_restarts": 3, "max_task_retries": 3}
    if use_gpu:
        flow_args["num_gpus"] = float(cfg.ray.flow_gpus_per_actor)
    check_requests_fit([Request("decode", 1, 0.25), Request("encode", 1, 0.25),
                        Request("flow", flow_actors, flow_cpu, float(flow_args.get("num_gpus", 0.0)),
                                "ray.flow_actors / ray.flow_gpus_per_actor")], nodes)  # never pend forever
    ds = ray.data.from_items(items, override_num_blocks=max(1, min(len(items), 4096)))
    ds = ds.map_batches(DecodeStage, fn_constructor_args=(cfg_dict,), batch_size=1, batch_format="numpy",
                        compute=ActorPoolStrategy(min_size=1, max_size=decode_actors), num_cpus=0.25,
                        max_restarts=3, max_task_retries=3)
    # RAFT gets every core: it is the bulk of the work, so a core kept back for decode/encode idles
    # most of the run; decode/encode overlap in the gaps (bench/bench_preprocess_vs_serial.py).
    flow_threads = cfg.ray.flow_threads or max(1, int(cpus // max(1, flow_actors)))
    ds = ds.map_batches(FlowStage, fn_constructor_args=(cfg_dict, use_gpu, flow_threads),
                        batch_size=clips_per_flow_batch, batch_format="numpy",
                        compute=ActorPoolStrategy(size=flow_actors), **flow_args)
    ds = ds.map_batches(EncodeStage, fn_constructor_args=(cfg_dict,), batch_size=1, batch_format="numpy",
                        compute=ActorPoolStrategy(min_size=1, max_size=decode_actors), num_cpus=0.25,
                        max_restarts=3, max_task_retries=3)
    log.info("Ray Data: %d decode actors, %d flow actors (%s), %.0f CPUs, %.0f GPUs",
             decode_actors, flow_actors, "GPU" if use_gpu else "CPU", cpus, gpus)
    return ds


def _finish_chunk(out: Path, work: ChunkWork, samples: list[Sample], step_seconds: dict[str, float]) -> None:
    samples.sort(key=lambda s: (s["row_index"], s.get("window_index") or 0))
    ok = [s for s in samples if is_ok(s)]
    if ok:
        write_shard(out / work.shard, ok)
    rows, windows = account_chunk(samples, work.chunk, work.shard)  # one row per input row; per window
    if work.retry:
        updated = {r["row_index"]: r for r in rows}
        rows = [updated.get(r["row_index"], r) for r in read_part(out, work.chunk)]
        windows = sorted([w for w in read_windows_part(out, work.chunk) if w["row_index"] not in updated] + windows,
                         key=lambda w: (w["row_index"], w["window_index"]))
    write_windows_part(windows, out, work.chunk)  # before the part, which marks the chunk done
    write_table_atomic(rows, part_path(out, work.chunk))
    for s in samples:
        for name, seconds in (s.get("timings") or {}).items():
            step_seconds[name] = step_seconds.get(name, 0.0) + seconds
    counts = defaultdict(int)
    for s in samples:
        counts[s.get("status", "ok")] += 1
    log.info("chunk %d done -> %s (%s)", work.chunk, work.shard if ok else "no ok samples",
             ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))


def _run_attempt(out: Path, cfg: Any, cfg_dict: dict[str, Any], work: list[ChunkWork], nodes: list[Node],
                 step_seconds: dict[str, float], finished: set[int]) -> None:
    """One Ray Data execution over `work`; each chunk is written (and added to `finished`) when whole."""
    collector = ChunkCollector({w.chunk: len(w.samples) for w in work})
    by_chunk = {w.chunk: w for w in work}
    items = [pack(w.chunk, s) for w in work for s in w.samples]
    ds = _build_dataset(items, cfg, cfg_dict, nodes)
    with NodeLossWatchdog(nodes, float(cfg.ray.node_loss_settle_s)) as watchdog:
        try:
            for row in ds.iter_rows():
                watchdog.progress()
                chunk = int(row["chunk"])
                whole = collector.add(chunk, unpack(row["payload"]))  # all rows with all their windows
                if whole is not None:
                    _finish_chunk(out, by_chunk[chunk], whole, step_seconds)
                    finished.add(chunk)
        except KeyboardInterrupt as exc:
            if watchdog.fired:  # a lost node left the execution waiting: re-plan, not a user's Ctrl-C
                raise NodeLostError("the execution stalled after a node loss") from exc
            raise
    if collector.incomplete():  # would mean Ray lost rows: never write an incomplete chunk
        raise RuntimeError(f"Ray returned incomplete chunks {collector.incomplete()}; re-run to resume")


def _process_in_process(out: Path, cfg: Any, cfg_dict: dict[str, Any], work: list[ChunkWork],
                        step_seconds: dict[str, float]) -> None:
    """The same stages and chunk commits as the Ray plan, in this process (preprocessing/in_process.py)."""
    collector = ChunkCollector({w.chunk: len(w.samples) for w in work})
    by_chunk = {w.chunk: w for w in work}
    threads, clips_per_call = in_process.sizing(cfg)
    items = [pack(w.chunk, s) for w in work for s in w.samples]
    log.info("in-process: %d rows to process (input <= ray.in_process_max_rows), RAFT on %d threads, no Ray start-up",
             len(items), threads)
    for row in in_process.iter_rows(items, cfg_dict, threads, clips_per_call):
        chunk = int(row["chunk"])
        whole = collector.add(chunk, unpack(row["payload"]))
        if whole is not None:
            _finish_chunk(out, by_chunk[chunk], whole, step_seconds)
    if collector.incomplete():
        raise RuntimeError(f"in-process run returned incomplete chunks {collector.incomplete()}; re-run to resume")


def _process(out: Path, cfg: Any, work: list[ChunkWork], step_seconds: dict[str, float], num_rows: int = 0) -> None:
    """Run the Ray Data pipeline over all pending rows; write each chunk as soon as it is whole.

    Node loss: Ray restarts lost actors where it can, but a lost node can also fail the execution
    (dead actor, lost block) or leave a restarted actor with nowhere to go. Then the chunks not yet
    written are re-planned on the nodes alive now, up to ray.node_loss_retries times; a chunk is
    written once, whole, so every row still lands exactly once. Past that: a clear error, and a
    re-submission of the same command resumes from the written chunks.
    """
    cfg_dict = to_container(cfg)
    # a small local corpus runs without Ray; decided by the whole input's size (num_rows), so a resumed
    # run takes the same path as the run it resumes
    if in_process.wanted(cfg, num_rows or sum(len(w.samples) for w in work)):
        _process_in_process(out, cfg, cfg_dict, work, step_seconds)
        return
    started = _init_ray(cfg)
    try:
        nodes = alive_nodes()
        if cfg.ray.address:  # a cluster: every node must read the weights before any row is decoded
            check_weights_on_every_node(cfg.flow.model, str(cfg.flow.weights), nodes)
            nodes = alive_nodes()  # a node lost during the check is not sized in
        finished: set[int] = set()
        attempts = int(cfg.ray.node_loss_retries) + 1
        for attempt in range(1, attempts + 1):
            pending = [w for w in work if w.chunk not in finished]
            try:
                _run_attempt(out, cfg, cfg_dict, pending, nodes, step_seconds, finished)
                break
            except ClusterError:
                raise
            except Exception as exc:
                if not is_node_loss(exc, nodes):
                    raise
                left = len(work) - len(finished)
                if attempt == attempts:
                    raise ClusterError(
                        f"Ray nodes were lost {attempts} times ({type(exc).__name__}: {str(exc)[:300]}); "
                        f"{len(finished)} of {len(work)} chunks were written, {left} remain: re-submit the "
                        f"same command to finish them (or raise ray.node_loss_retries)") from exc
                log.warning("a Ray node was lost (%s); %d of %d chunks written, re-planning the other %d on the "
                            "nodes alive now (attempt %d of %d)", type(exc).__name__, len(finished), len(work),
                            left, attempt + 1, attempts)
                nodes = wait_for_lost_nodes(nodes, float(cfg.ray.node_loss_settle_s))
    finally:
        if started:
            import ray

            ray.shutdown()


def run(cfg: Any) -> RunSummary:
    """Run the whole job for a validated config (see preprocessing/config.py)."""
    out = Path(cfg.output.dir)
    began = time.perf_counter()
    with OutputLock(out):
        remove_stale_temporaries(out)
        rows = load_rows(cfg.input, cfg.limit)
        chunks = chunk_rows(rows, int(cfg.shard.max_samples))
        _remove_orphan_retry_shards(out, len(chunks))
        work = plan_work(out, chunks, bool(cfg.retry_errors))
        done = len(chunks) - sum(1 for w in work if not w.retry)
        log.info("%d input rows in %d chunks: %d already done, %d to process (%d retry)", len(rows),
                 len(chunks), done, len(work), sum(w.retry for w in work))
        step_seconds: dict[str, float] = {}
        if work:
            prompt_step = PromptStep(make_extractor(cfg.prompt, out), bool(cfg.prompt.require_motion))
            for w in work:  # before decoding: a caption without motion costs no decode
                prompt_step.process_batch(w.samples)
            _process(out, cfg, work, step_seconds, num_rows=len(rows))
        write_manifest(out, len(chunks))
        wall = time.perf_counter() - began
        summary = RunSummary(out, len(rows), len(chunks), len(work), sum(len(w.samples) for w in work), wall,
                             step_seconds)
        from preprocessing.outputs.report import write_report
        from preprocessing.outputs.stats import write_stats

        write_stats(out, cfg, summary)
        write_report(out, cfg)
    return summary
