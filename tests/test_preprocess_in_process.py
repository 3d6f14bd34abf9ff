"""A small local corpus runs in the driver process (ray.in_process_max_rows) with the same stages
as the Ray plan: the same shards, byte for byte, and the same manifest as the Ray reference run of
tests/preprocess_harness.py (bad rows, a hanging decoder and a duplicate id included)."""
from __future__ import annotations

import time

import pandas as pd
import pytest
from preprocess_harness import args, cli, hang_env, read_shards, reference_run, tar_bytes

COLUMNS = ["row_index", "id", "key", "status", "reason", "shard", "motion_prompt", "magnitude", "direction"]


@pytest.fixture(scope="module")
def ref(tmp_path_factory, raft_small_path):
    return reference_run(tmp_path_factory, raft_small_path)


@pytest.mark.slow
def test_small_corpus_in_process_equals_the_ray_run_byte_for_byte(ref, tmp_path, raft_small_path):
    out = tmp_path / "in_process"
    argv = [a for a in args(ref.corpus, out, raft_small_path) if not a.startswith("ray.in_process_max_rows=")]
    began = time.perf_counter()
    proc = cli([*argv, f"ray.in_process_max_rows={len(ref.corpus.ids)}"], env=hang_env())
    wall = time.perf_counter() - began
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert "in-process:" in log and "Ray Data:" not in log and "Started a local Ray" not in log
    assert "Ray Data:" in ref.stdout  # the reference is the Ray plan
    assert tar_bytes(out) == tar_bytes(ref.out)  # same chunks, same samples, same bytes
    assert read_shards(out).keys() == read_shards(ref.out).keys()
    pd.testing.assert_frame_equal(pd.read_parquet(ref.out / "manifest.parquet")[COLUMNS],
                                  pd.read_parquet(out / "manifest.parquet")[COLUMNS])
    assert pd.read_parquet(out / "manifest.parquet")["reason"].str.startswith("decode_timeout").sum() == 1
    print(f"in-process {wall:.1f} s, Ray reference {ref.wall_s:.1f} s")
