"""fyc-preprocess end to end: real CLI (subprocess), real local Ray (2 CPUs), real decord, real RAFT
weights, on tiny synthetic clips of known motion plus every kind of bad input row.

One uninterrupted reference run (tests/preprocess_harness.py, shared with the fault tests) backs
every assertion here; the no-op re-run, retry and lock scenarios each cost one short extra run.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fyc_conf import config_dir
from fault_table import record_fault
from preprocess_harness import (
    DECODE_TIMEOUT_S,
    EXPECTED,
    GOOD_IDS,
    REPO,
    args,
    cli,
    read_shards,
    reference_run,
    tar_bytes,
)


@pytest.fixture(scope="module")
def ref(tmp_path_factory, raft_small_path):
    return reference_run(tmp_path_factory, raft_small_path)


def manifest_by_test_id(ref) -> pd.DataFrame:
    df = pd.read_parquet(ref.out / "manifest.parquet")
    df["test_id"] = ref.corpus.ids
    return df.set_index("test_id")


@pytest.mark.slow
def test_manifest_has_one_row_per_input_with_reasons(ref):
    df = pd.read_parquet(ref.out / "manifest.parquet")
    assert list(df["row_index"]) == list(range(len(ref.corpus.ids)))  # every input row, in order
    assert df["key"].is_unique
    by_id = manifest_by_test_id(ref)
    for test_id, (status, reason) in EXPECTED.items():
        row = by_id.loc[test_id]
        assert row["status"] in status.split("|"), (test_id, row["status"], row["reason"])
        assert row["reason"].startswith(reason), (test_id, row["reason"])
        if row["status"] != "ok":
            assert row["reason"] and row["shard"] == "", (test_id, row["reason"])
    good = by_id.loc[GOOD_IDS]
    assert good["shard"].str.match(r"shards/shard-\d{6}\.tar").all()
    assert (good["magnitude"] > 0.2).all() and (good["motion_prompt"] != "").all()
    assert list(good["direction"]) == [ref.corpus.truth[g] for g in GOOD_IDS]  # mean flow in the mask
    assert json.loads(by_id.loc["good0", "extra"]) == {"truth": ref.corpus.truth["good0"], "unknown_column": "x"}
    assert len(by_id.loc["huge", "caption"]) == 2000
    stats = json.loads((ref.out / "stats.json").read_text())
    assert stats["counts"]["rows"] == len(df)
    assert stats["counts"]["by_status"]["ok"] == (df["status"] == "ok").sum() == len(GOOD_IDS) + 1
    assert stats["counts"]["by_reason"]["error"]["duplicate_id"] == 1
    assert {"torch", "torchvision", "ray", "python"} <= stats["versions"].keys()
    assert stats["this_run"]["clips_per_s"] > 0 and "flow" in stats["this_run"]["step_seconds"]
    assert not list(ref.out.rglob("*.tmp"))
    assert (ref.out / "report.html").stat().st_size > 1000
    counts = df["status"].value_counts().to_dict()
    record_fault(
        "preprocessing: bad input rows", "manifest with 14 bad rows: corrupt / truncated / empty / text-as-mp4 / "
        "too-short video, missing file, unreachable URL, ftp:// URL, empty caption, caption without motion, "
        "duplicate id, latin-1 caption bytes, 120k-char caption, an unknown column",
        "one manifest row per input row, each with a reason; the good rows in shards",
        f"all {len(df)} rows accounted for: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
        + "; unknown column kept in `extra`; huge caption truncated to 2000 chars (row ok)",
        {"rows_in": len(df), "rows_out": len(df), "reasons": len(set(df["reason"].str.split(":").str[0]) - {""}),
         "run_s": ref.wall_s}, "test_preprocess_e2e.py::test_manifest_has_one_row_per_input_with_reasons")


@pytest.mark.slow
def test_hanging_decoder_times_out_and_the_job_goes_on(ref):
    by_id = manifest_by_test_id(ref)
    assert by_id.loc["hang", "reason"] == f"decode_timeout: >{DECODE_TIMEOUT_S}s"
    # rows after the hung one (same chunk and later chunks) were still processed
    assert by_id.loc["notvideo", "reason"].startswith("decode_error") and by_id.loc["good3", "status"] == "ok"
    hung_at = float(ref.hang_log.read_text().split()[1])  # written by the hung decoder (fault hook)
    part = ref.out / "parts" / "part-000002.parquet"  # the hung row's chunk, written after the timeout
    detected_s = part.stat().st_mtime - hung_at
    assert DECODE_TIMEOUT_S <= detected_s < DECODE_TIMEOUT_S + 120, detected_s
    record_fault(
        "preprocessing: runtime faults", "decoder hangs forever on one row (decord.VideoReader blocked by an "
        f"injected hook), decode.timeout_s={DECODE_TIMEOUT_S}",
        "row marked error with a timeout reason within the limit; the job goes on",
        f"row `{by_id.loc['hang', 'reason']}`; the other rows of its chunk and all later chunks processed",
        {"limit_s": DECODE_TIMEOUT_S, "hang_to_chunk_written_s": round(detected_s, 1)},
        "test_preprocess_e2e.py::test_hanging_decoder_times_out_and_the_job_goes_on")


@pytest.mark.slow
def test_shards_follow_the_schema_and_load_in_webdataset(ref):
    import av
    import decord
    import webdataset as wds
    from PIL import Image

    samples = read_shards(ref.out)
    df = pd.read_parquet(ref.out / "manifest.parquet")
    assert sorted(samples) == sorted(df[df["status"] == "ok"]["key"])
    for key, parts in samples.items():
        assert "." not in key and "/" not in key and set(parts) == {"mp4", "json", "mask.png"}
        meta = json.loads(parts["json"])
        assert {"id", "caption", "motion_prompt", "magnitude", "flow", "source"} <= meta.keys()
        assert {"model", "weights", "num_updates", "height", "width", "stride", "pair_magnitudes"} <= meta["flow"].keys()
        assert len(meta["flow"]["pair_magnitudes"]) == 3 and meta["source"]["frame_indices"]
        mask = Image.open(io.BytesIO(parts["mask.png"]))
        assert mask.mode == "L" and mask.size == (64, 64)
        assert set(np.unique(np.asarray(mask))) <= {0, 255}
        reader = decord.VideoReader(io.BytesIO(parts["mp4"]))
        assert len(reader) == 4 and reader[0].shape == (64, 64, 3)
        with av.open(io.BytesIO(parts["mp4"])) as container:
            assert sum(1 for _ in container.decode(video=0)) == 4
    urls = [str(p) for p in sorted((ref.out / "shards").glob("*.tar"))]
    loaded = list(wds.WebDataset(urls, shardshuffle=False, empty_check=False))
    assert sorted(s["__key__"] for s in loaded) == sorted(samples)


@pytest.mark.slow
def test_rerun_of_a_finished_job_changes_nothing(ref, raft_small_path, caplog):
    # in-process (the pipeline's own run(), as the CLI calls it): a finished job starts no Ray and
    # needs no fresh interpreter; the CLI path itself is covered by every other run here
    from hydra import compose, initialize_config_dir

    import preprocessing.cli  # noqa: F401 - registers the config schema
    from preprocessing.config import validate
    from preprocessing.pipeline import run

    before = tar_bytes(ref.out)
    mtimes = {p.name: p.stat().st_mtime_ns for p in (ref.out / "parts").glob("*.parquet")}
    with initialize_config_dir(config_dir=config_dir("preprocess"), version_base="1.3"):
        cfg = compose("preprocess", overrides=args(ref.corpus, ref.out, raft_small_path))
    validate(cfg)
    caplog.set_level("INFO", logger="fyc.preprocess")
    summary = run(cfg)
    assert summary.chunks_processed == 0 and summary.rows_processed == 0
    assert "6 already done, 0 to process" in caplog.text
    assert {p.name: p.stat().st_mtime_ns for p in (ref.out / "parts").glob("*.parquet")} == mtimes
    assert tar_bytes(ref.out) == before


@pytest.mark.slow
def test_retry_errors_reprocesses_only_errors_without_touching_shards(ref, tmp_path, raft_small_path):
    out = tmp_path / "retry"
    shutil.copytree(ref.out, out)
    (out / ".lock").unlink()
    before = tar_bytes(out)
    df0 = pd.read_parquet(out / "manifest.parquet")
    # the missing file appears before the retry (a mount came back); the decoder no longer hangs
    missing = ref.corpus.manifest.parent / "nope" / "missing.mp4"
    missing.parent.mkdir(exist_ok=True)
    missing.write_bytes(Path(df0.iloc[0]["video"]).read_bytes())
    env = {k: v for k, v in os.environ.items() if not k.startswith("FYC_FAULT")}
    env["PYTHONPATH"] = str(REPO)
    try:
        began = time.perf_counter()
        proc = cli(args(ref.corpus, out, raft_small_path, "retry_errors=true"), env=env)
        wall = time.perf_counter() - began
    finally:
        missing.unlink()
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name, data in before.items():  # finished shards untouched, byte for byte
        assert (out / "shards" / name).read_bytes() == data
    df = pd.read_parquet(out / "manifest.parquet")
    df["test_id"] = ref.corpus.ids
    by_id = df.set_index("test_id")
    for recovered in ("missing", "hang"):
        row = by_id.loc[recovered]
        assert row["status"] == "ok" and row["shard"].startswith("shards/retry-000001-"), row.to_dict()
        assert (out / row["shard"]).exists() and row["key"] in read_shards(out)
    assert (df["status"] == "ok").sum() == (df0["status"] == "ok").sum() + 2
    assert len(df) == len(df0)
    unchanged = df0["status"] != "error"
    pd.testing.assert_frame_equal(df[unchanged].drop(columns="test_id"), df0[unchanged])
    record_fault(
        "preprocessing: runtime faults", "`retry_errors=true` on a finished run whose error rows include a file "
        "that was missing (now back) and a decode that had hung (now fine)",
        "error rows retried into new retry shards; finished shards not touched",
        f"{int((df0['status'] == 'error').sum())} error rows retried, 2 recovered into "
        f"shards/retry-000001-*.tar, the rest keep their reasons; {len(before)} finished shards byte-identical",
        {"retried_rows": int((df0["status"] == "error").sum()), "recovered": 2, "shards_compared": len(before),
         "bytes_compared": sum(map(len, before.values())), "run_s": round(wall, 1)},
        "test_preprocess_e2e.py::test_retry_errors_reprocesses_only_errors_without_touching_shards")


@pytest.mark.slow
def test_second_run_on_a_locked_output_refuses_and_changes_nothing(ref, raft_small_path):
    from preprocessing.lock import OutputLock

    before = tar_bytes(ref.out)
    manifest = (ref.out / "manifest.parquet").read_bytes()
    began = time.perf_counter()
    with OutputLock(ref.out):  # a first run holds the output folder
        proc = cli(args(ref.corpus, ref.out, raft_small_path, "retry_errors=true"))
    wall = time.perf_counter() - began
    assert proc.returncode == 3
    log = proc.stdout + proc.stderr  # Hydra logs to stdout
    assert "in use by another fyc-preprocess run" in log and str(ref.out) in log
    assert tar_bytes(ref.out) == before and (ref.out / "manifest.parquet").read_bytes() == manifest
    record_fault(
        "preprocessing: runtime faults", "second fyc-preprocess on an output.dir held by a running job",
        "the second run refuses with a clear error; nothing corrupted",
        "exit 3: `output.dir ... is in use by another fyc-preprocess run (pid ...)`; shards and manifest "
        "byte-identical", {"refused_after_s": round(wall, 1), "shards_compared": len(before)},
        "test_preprocess_e2e.py::test_second_run_on_a_locked_output_refuses_and_changes_nothing")
