"""The Ray Data plan of `pipeline.py` run inside the driver process, for small local corpora.

Same stages (ray_stages.DecodeStage, FlowStage, EncodeStage), same rows in, same rows out, in
input order: a decode thread feeds the flow stage (this thread, RAFT with the job's torch
threads), an encode thread consumes its output. What it saves is Ray's fixed cost, which a small
corpus cannot amortise: starting a local Ray (GCS, raylet, workers) and three actor processes that
each import torch/PyAV and, for flow, load RAFT (~15 s of a 2-core machine, measured by
bench/bench_preprocess_vs_serial.py). What it gives up is Ray's actor restarts: a crash ends the
run, and the job's resume picks up from the chunks already written. The decode watchdog is the
same (DecodeStep's child process), so a hanging decoder still times out.

Why threads and not a library pool: the three stages hold state (the decode worker, RAFT) and
must run concurrently in order with bounded buffers; a thread per stage with bounded queues is
that, and torch, PyAV and the decode worker release the GIL for their heavy work.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np

from preprocessing.ray_stages import DecodeStage, EncodeStage, FlowStage

_DONE = object()


class _Failed:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


def _rows_of(batch: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    return [{"chunk": int(c), "row_index": int(r), "payload": p}
            for c, r, p in zip(batch["chunk"], batch["row_index"], batch["payload"])]


def _batch_of(rows: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    payload = np.empty(len(rows), dtype=object)
    payload[:] = [r["payload"] for r in rows]
    return {"chunk": np.array([r["chunk"] for r in rows], dtype=np.int64),
            "row_index": np.array([r["row_index"] for r in rows], dtype=np.int64), "payload": payload}


def _put(target: queue.Queue, item: Any, stop: threading.Event) -> None:
    """Blocking put that gives up once the consumer has stopped (so no thread outlives the run)."""
    while not stop.is_set():
        try:
            target.put(item, timeout=0.5)
            return
        except queue.Full:
            continue
    raise _Stopped


class _Stopped(Exception):
    pass


def _pump(target: queue.Queue, work: Any, stop: threading.Event) -> None:
    """Run `work()` (which puts rows on `target`), then the end mark; an exception travels as _Failed."""
    try:
        work()
        _put(target, _DONE, stop)
    except _Stopped:
        return
    except BaseException as exc:  # noqa: BLE001 - re-raised in the consuming thread
        try:
            _put(target, _Failed(exc), stop)
        except _Stopped:
            return


def _take(source: queue.Queue, stop: threading.Event) -> Any:
    while True:
        try:
            item = source.get(timeout=0.5)
            break
        except queue.Empty:
            if stop.is_set():
                raise _Stopped from None
    if isinstance(item, _Failed):
        raise item.exc
    return item


def iter_rows(items: list[dict[str, Any]], cfg: dict[str, Any], flow_threads: int,
              clips_per_flow_batch: int, buffer: int = 8) -> Iterator[dict[str, Any]]:
    """Rows {chunk, row_index, payload} after decode -> flow -> encode, as Ray Data's iter_rows gives them."""
    decode = DecodeStage(cfg)
    decoded: queue.Queue = queue.Queue(maxsize=buffer)
    flowed: queue.Queue = queue.Queue(maxsize=buffer)
    encoded: queue.Queue = queue.Queue(maxsize=buffer)
    stop = threading.Event()

    def put(target: queue.Queue, item: Any) -> None:
        _put(target, item, stop)

    def decode_all() -> None:
        for item in items:  # batch_size=1, as the Ray plan's decode stage
            for row in _rows_of(decode(_batch_of([item]))):
                put(decoded, row)

    def encode_all() -> None:
        encode = EncodeStage(cfg)
        while (row := _take(flowed, stop)) is not _DONE:
            for out in _rows_of(encode(_batch_of([row]))):
                put(encoded, out)

    flow = FlowStage(cfg, False, flow_threads)  # before the threads start: RAFT loads once, errors surface here
    threads = [threading.Thread(target=_pump, args=(decoded, decode_all, stop), name="fyc-decode", daemon=True),
               threading.Thread(target=_pump, args=(encoded, encode_all, stop), name="fyc-encode", daemon=True)]
    threads[0].start()

    def flow_all() -> None:
        pending: list[dict[str, Any]] = []
        while (row := _take(decoded, stop)) is not _DONE:
            pending.append(row)
            if len(pending) == clips_per_flow_batch:
                for out in _rows_of(flow(_batch_of(pending))):
                    put(flowed, out)
                pending = []
        if pending:
            for out in _rows_of(flow(_batch_of(pending))):
                put(flowed, out)

    flow_thread = threading.Thread(target=_pump, args=(flowed, flow_all, stop), name="fyc-flow", daemon=True)
    flow_thread.start()
    threads[1].start()
    try:
        while (row := _take(encoded, stop)) is not _DONE:
            yield row
    finally:
        stop.set()
        for thread in (threads[0], flow_thread, threads[1]):
            thread.join(timeout=30)
        decode.decode.close()


def sizing(cfg: Any) -> tuple[int, int]:
    """(torch threads for RAFT, clips per flow call), as pipeline.py sizes the Ray plan on this machine."""
    cpus = int(cfg.ray.num_cpus or os.cpu_count() or 1)
    flow_threads = int(cfg.ray.flow_threads or cpus)
    clips_per_flow_batch = max(1, int(cfg.flow.batch_size) // max(1, int(cfg.clip.num_frames) - 1))
    return flow_threads, clips_per_flow_batch


def wanted(cfg: Any, num_rows: int) -> bool:
    """In-process for a local run (no ray.address) of at most ray.in_process_max_rows rows whose flow
    runs on this machine's CPU with one flow actor; everything else is the Ray plan."""
    if cfg.ray.address or num_rows > int(cfg.ray.in_process_max_rows) or int(cfg.ray.flow_actors) != 1:
        return False
    if cfg.flow.device == "cpu":
        return True
    import torch

    return cfg.flow.device == "auto" and not torch.cuda.is_available()
