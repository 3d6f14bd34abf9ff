"""fyc-curate orchestration: plan (merge -> reprompt -> select -> dedupe -> balance), then write.

Resume and idempotence, as in fyc-preprocess: the plan (every input row's fate) is computed
once and stored as parts/plan.parquet; kept rows fill output chunks of `shard.max_samples` in
merged order; chunk i writes shards/shard-{i:06d}.tar, then parts/part-{i:06d}.parquet (its
rows), and a chunk is done iff its part exists. A re-run skips done chunks (and reuses the plan:
no re-hashing, no second LLM call), so a killed run re-run equals an uninterrupted one, and a
re-run over a finished folder writes nothing. curation.json fingerprints the inputs and the
settings: a re-run with other ones over the same output.dir is refused instead of mixing them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from preprocessing.config import to_container
from preprocessing.curation.balance import balance
from preprocessing.curation.config import input_dirs
from preprocessing.curation.dedupe import compute_signatures, dedupe
from preprocessing.curation.merge import drop_not_ok, read_inputs, resolve_collisions
from preprocessing.curation.plan import DROPPED, KEPT, finalize
from preprocessing.curation.reprompt import reprompt
from preprocessing.curation.select import apply_query
from preprocessing.curation.writer import ChunkWriter, chunk_spec
from preprocessing.lock import OutputLock
from preprocessing.outputs.manifest import part_path
from preprocessing.shards import remove_stale_temporaries

log = logging.getLogger("fyc.curate")
PLAN = "parts/plan.parquet"
IDENTITY = "curation.json"
# settings that change what is written (ray.* and report_thumbnails do not)
PLAN_KEYS = ("select", "reprompt", "dedupe", "balance", "latents", "shard")


class CurationMismatchError(RuntimeError):
    """output.dir holds a curation of other inputs or settings."""


@dataclass
class CurateSummary:
    output_dir: Path
    num_rows: int
    num_chunks: int
    chunks_processed: int
    rows_processed: int
    wall_s: float
    kept: int = 0
    collisions: int = 0
    step_seconds: dict[str, float] = field(default_factory=dict)
    dropped_by_step: dict[str, int] = field(default_factory=dict)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def identity_of(cfg: Any, dirs: list[Path]) -> dict[str, Any]:
    plain = to_container(cfg)
    return {"inputs": [{"dir": str(d.resolve()), "manifest_sha256": _sha256(d / "manifest.parquet")} for d in dirs],
            "settings": {k: plain[k] for k in PLAN_KEYS}}


def check_identity(out: Path, identity: dict[str, Any]) -> None:
    path = out / IDENTITY
    if path.exists():
        old = json.loads(path.read_text())
        if old != identity:
            diff = [k for k in PLAN_KEYS if old["settings"].get(k) != identity["settings"][k]]
            if old["inputs"] != identity["inputs"]:
                diff.insert(0, "input (other folders or changed manifests)")
            raise CurationMismatchError(
                f"output.dir {out} holds a curation made with other {', '.join(diff)}; pick a new output.dir "
                "(or delete this one) to curate with these settings")


def write_identity(out: Path, identity: dict[str, Any]) -> None:
    path = out / IDENTITY
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(identity, indent=2, sort_keys=True))
    os.replace(tmp, path)


def write_frame_atomic(df: pd.DataFrame, path: Path, schema: pa.Schema | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(pa.Table.from_pandas(df, schema=schema, preserve_index=False), tmp)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


class RaySession:
    """Start (or join) Ray on first use only: a finished output folder needs no cluster."""

    def __init__(self, cfg: Any) -> None:
        self.cfg, self.started = cfg, False

    def ensure(self) -> None:
        import ray

        if ray.is_initialized():
            return
        if self.cfg.ray.address:
            ray.init(address=self.cfg.ray.address, log_to_driver=self.cfg.ray.log_to_driver)
        else:
            ray.init(num_cpus=self.cfg.ray.num_cpus or os.cpu_count(), include_dashboard=False,
                     log_to_driver=self.cfg.ray.log_to_driver, logging_level=logging.WARNING)
        self.started = True

    def close(self) -> None:
        if self.started:
            import ray

            ray.shutdown()


def kept_reason(cfg: Any) -> str:
    parts = ["kept: ok in its input"]
    if cfg.select.query:
        parts.append(f"matches select.query `{cfg.select.query}`")
    if cfg.reprompt.enabled:
        parts.append(f"prompt re-extracted ({cfg.reprompt.prompt.extractor})")
    if cfg.dedupe.enabled:
        parts.append("no earlier near-duplicate")
    if cfg.balance.max_per_prompt is not None or cfg.balance.max_per_magnitude_bin is not None:
        parts.append("within the balance caps")
    return "; ".join(parts)


def make_plan(cfg: Any, dirs: list[Path], out: Path, ray_session: RaySession,
              step_seconds: dict[str, float]) -> pd.DataFrame:
    def timed(name, fn, *args):
        began = time.perf_counter()
        result = fn(*args)
        step_seconds[name] = round(time.perf_counter() - began, 3)
        return result

    plan = read_inputs(dirs)
    timed("merge", lambda: (drop_not_ok(plan), resolve_collisions(plan)))
    if cfg.reprompt.enabled:
        changed = timed("reprompt", reprompt, plan, cfg.reprompt.prompt, out)
        log.info("reprompt: %d prompts changed", changed)
    timed("select", apply_query, plan, cfg.select.query)
    if cfg.dedupe.enabled:
        ray_session.ensure()
        signatures = timed("dedupe_hash", compute_signatures, plan, cfg.dedupe)
        timed("dedupe", dedupe, plan, signatures, float(cfg.dedupe.max_distance))
    timed("balance", balance, plan, cfg.balance)
    return finalize(plan, kept_reason(cfg), int(cfg.shard.max_samples))


def _write_chunks(cfg: Any, out: Path, plan: pd.DataFrame, pending: list[int], schema: pa.Schema,
                  ray_session: RaySession, step_seconds: dict[str, float]) -> int:
    import ray
    from ray.data import ActorPoolStrategy

    ray_session.ensure()
    kept = plan[plan["curation"] == KEPT]
    items = [chunk_spec(out, c, kept[kept["chunk"] == c].to_dict("records")) for c in pending]
    resources = ray.cluster_resources()
    cpus, gpus = float(resources.get("CPU", 1)), float(resources.get("GPU", 0))
    latents_cfg = to_container(cfg)["latents"] if cfg.latents.enabled else None
    use_gpu = latents_cfg is not None and gpus > 0 and cfg.latents.gpus_per_actor > 0
    if use_gpu:
        writers, args = max(1, int(gpus // cfg.latents.gpus_per_actor)), {"num_gpus": float(cfg.latents.gpus_per_actor)}
    else:
        writers, args = max(1, int(cpus)), {"num_cpus": 1.0}
    writers = min(len(items), int(cfg.ray.writers or writers))
    log.info("Ray Data: %d writer actors (%s) for %d chunks", writers, "GPU" if use_gpu else "CPU", len(items))
    ds = ray.data.from_items(items, override_num_blocks=len(items))
    ds = ds.map_batches(ChunkWriter, fn_constructor_args=(latents_cfg,), batch_size=1, batch_format="numpy",
                        compute=ActorPoolStrategy(size=writers), max_restarts=3, max_task_retries=3, **args)
    written = 0
    for row in ds.iter_rows():
        chunk = int(row["chunk"])
        write_frame_atomic(plan[plan["chunk"] == chunk], part_path(out, chunk), schema)
        step_seconds["write"] = round(step_seconds.get("write", 0.0) + float(row["seconds"]), 3)
        written += int(row["count"])
        log.info("chunk %d done -> shards/shard-%06d.tar (%d samples)", chunk, chunk, int(row["count"]))
    return written


def _write_stats(out: Path, cfg: Any, summary: CurateSummary, plan: pd.DataFrame) -> None:
    from preprocessing.outputs.stats import reason_slug, write_stats

    path = write_stats(out, cfg, summary)
    stats = json.loads(path.read_text())
    dropped = plan[plan["curation"] == DROPPED]["curation_reason"].map(reason_slug).value_counts()
    stats["curation"] = {"inputs": [str(d) for d in input_dirs(cfg)], "kept": int((plan["curation"] == KEPT).sum()),
                         "dropped_by_step": {k: int(v) for k, v in sorted(dropped.items())},
                         "plan_step_seconds": summary.step_seconds}
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(stats, indent=2, sort_keys=True, default=str))
    os.replace(tmp, path)


def run(cfg: Any) -> CurateSummary:
    """Curate a validated config (preprocessing/curation/config.py) into output.dir."""
    out = Path(cfg.output.dir)
    dirs = input_dirs(cfg)
    began = time.perf_counter()
    ray_session = RaySession(cfg)
    step_seconds: dict[str, float] = {}
    with OutputLock(out):
        try:
            remove_stale_temporaries(out)
            identity = identity_of(cfg, dirs)
            check_identity(out, identity)
            if (out / PLAN).exists():
                plan = pq.read_table(out / PLAN).to_pandas()
                log.info("resuming: plan of %d rows read from %s", len(plan), out / PLAN)
            else:  # a bad query fails here, before anything is written
                plan = make_plan(cfg, dirs, out, ray_session, step_seconds)
                write_identity(out, identity)
                write_frame_atomic(plan, out / PLAN)
            schema = pq.read_schema(out / PLAN)
            num_chunks = int(plan["chunk"].max()) + 1 if (plan["chunk"] >= 0).any() else 0
            pending = [c for c in range(num_chunks) if not part_path(out, c).exists()]
            kept = int((plan["curation"] == KEPT).sum())
            log.info("%d input rows: %d kept in %d chunks (%d already done, %d to write), %d dropped",
                     len(plan), kept, num_chunks, num_chunks - len(pending), len(pending), len(plan) - kept)
            written = _write_chunks(cfg, out, plan, pending, schema, ray_session, step_seconds) if pending else 0
        finally:
            ray_session.close()
        summary = CurateSummary(out, len(plan), num_chunks, len(pending), written, time.perf_counter() - began,
                                kept, int(plan["curation_reason"].str.startswith("collision").sum()), step_seconds)
        finished = all((out / name).exists() for name in ("manifest.parquet", "stats.json", "report.html"))
        if pending or not finished:  # a finished folder is left exactly as it is
            write_frame_atomic(plan, out / "manifest.parquet", schema)
            from preprocessing.outputs.report import write_report

            _write_stats(out, cfg, summary, plan)
            write_report(out, cfg)
        else:
            log.info("nothing to do: %s is complete", out)
    return summary
