"""fyc-preprocess under injected faults: driver SIGKILL, a Ray worker SIGKILL, a full and a
read-only output disk. Each run is compared against the uninterrupted reference run
(tests/preprocess_harness.py): nothing lost, nothing twice, no partial shard visible."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
from fault_table import record_fault
from preprocess_harness import (
    args,
    cli,
    cli_popen,
    kill_group,
    read_shards,
    reference_run,
    tar_bytes,
    wait_for,
)

COLUMNS = ["row_index", "id", "key", "status", "reason", "shard", "motion_prompt", "magnitude", "direction"]


@pytest.fixture(scope="module")
def ref(tmp_path_factory, raft_small_path):
    return reference_run(tmp_path_factory, raft_small_path)


def assert_equals_reference(out: Path, ref) -> int:
    """Same keys, json, masks and clip bytes, byte-identical tars, same manifest; returns bytes compared."""
    expected, got = tar_bytes(ref.out), tar_bytes(out)
    assert got.keys() == expected.keys()
    a, b = read_shards(ref.out), read_shards(out)  # (read_shards also fails on a key seen twice)
    assert a.keys() == b.keys()
    for key in a:
        assert a[key] == b[key], key
    assert got == expected
    pd.testing.assert_frame_equal(pd.read_parquet(ref.out / "manifest.parquet")[COLUMNS],
                                  pd.read_parquet(out / "manifest.parquet")[COLUMNS])
    assert not list(out.rglob("*.tmp"))
    return sum(map(len, got.values()))


def assert_no_partial_shard_visible(out: Path, ref) -> int:
    """After a kill: every shards/*.tar a reader can see is complete (equal to the reference's)."""
    expected = tar_bytes(ref.out)
    visible = tar_bytes(out)
    for name, data in visible.items():
        assert data == expected[name], f"{name} is visible but differs from the uninterrupted run's"
    assert not (out / "manifest.parquet").exists(), "the run was not killed mid-run"
    return len(visible)


@pytest.mark.slow
def test_driver_sigkill_mid_run_twice_then_rerun_equals_uninterrupted(ref, tmp_path, raft_small_path):
    out = tmp_path / "killed"
    argv = args(ref.corpus, out, raft_small_path)
    kills = []
    # kill 1: as soon as chunk 0 is committed; chunk 2's hung decode keeps the job busy, so this is mid-run
    proc = cli_popen(argv)
    wait_for(lambda: (out / "parts" / "part-000000.parquet").exists(), proc, poll=0.02)
    kill_group(proc)
    kills.append(("after chunk 0 committed", assert_no_partial_shard_visible(out, ref),
                  len(list(out.glob("parts/*.parquet")))))
    # kill 2: the resumed run, at the first sign of a write in flight (a *.tmp) or of a new commit
    done_before = len(list(out.glob("parts/*.parquet")))
    proc = cli_popen(argv)

    def writing() -> bool:
        return bool(list(out.glob("shards/*.tmp")) or list(out.glob("parts/*.tmp"))
                    or len(list(out.glob("parts/*.parquet"))) > done_before)

    wait_for(writing, proc, poll=0.002)
    tmp_seen = [p.name for p in out.glob("*/*.tmp")]
    kill_group(proc)
    kills.append((f"while writing {tmp_seen[0]}" if tmp_seen else "right after a chunk commit",
                  assert_no_partial_shard_visible(out, ref), len(list(out.glob("parts/*.parquet")))))
    began = time.perf_counter()
    resumed = cli(argv)
    wall = time.perf_counter() - began
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    done = int(resumed.stdout.split(" already done")[0].rsplit(" ", 1)[-1])
    assert done >= 1  # the resumed run skipped committed chunks
    compared = assert_equals_reference(out, ref)
    record_fault(
        "preprocessing: runtime faults", "driver SIGKILLed (with its Ray processes) twice: " +
        "; ".join(f"kill {i + 1} {what} ({tars} complete shard(s), {parts} part(s) visible)"
                  for i, (what, tars, parts) in enumerate(kills)),
        "no partial shard visible; the re-run gives exactly the samples of an uninterrupted run",
        f"after each kill only complete shards were visible; the final re-run skipped {done} committed chunk(s) "
        "and produced byte-identical tars, same keys/json/masks/clips and the same manifest",
        {"kills": len(kills), "chunks_skipped_on_resume": done, "bytes_compared": compared,
         "resume_s": round(wall, 1)},
        "test_faults_preprocess.py::test_driver_sigkill_mid_run_twice_then_rerun_equals_uninterrupted")


def _processes(needle: str) -> dict[int, str]:
    """pid -> process title of processes whose title contains `needle` (Ray sets `ray::<Actor>.<method>`)."""
    found = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                title = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if needle in title:
                found[int(entry)] = title.strip()
    return found


@pytest.mark.slow
def test_ray_flow_worker_sigkilled_while_working_job_completes_every_row_once(ref, tmp_path, raft_small_path):
    out = tmp_path / "worker_killed"
    began = time.perf_counter()
    proc = cli_popen(args(ref.corpus, out, raft_small_path))
    busy: dict[int, str] = {}

    def flow_actor_busy() -> bool:  # the actor's title ends in `.submit` while it runs a batch
        busy.update(_processes("MapBatches(FlowStage)).submit"))
        return bool(busy)

    try:
        wait_for(flow_actor_busy, proc, poll=0.01)
        pid = next(iter(busy))
        os.kill(pid, signal.SIGKILL)
        parts_at_kill = len(list(out.glob("parts/*.parquet")))
        code = proc.wait(timeout=600)
    finally:
        if proc.poll() is None:
            kill_group(proc)
    wall = time.perf_counter() - began
    assert code == 0, f"the job failed after its flow worker was killed (exit {code})"
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    compared = assert_equals_reference(out, ref)  # every row exactly once, same bytes as uninterrupted
    record_fault(
        "preprocessing: runtime faults", "a Ray worker SIGKILLed mid-run: the RAFT flow actor, while it ran a batch "
        f"(`{busy[pid][:45]}`, {parts_at_kill} chunk(s) committed)",
        "the job completes with every row exactly once",
        "Ray restarted the actor and re-ran its batch; exit 0, every row once, byte-identical to the "
        "uninterrupted run", {"killed_pid": pid, "bytes_compared": compared, "run_s": round(wall, 1)},
        "test_faults_preprocess.py::test_ray_flow_worker_sigkilled_while_working_job_completes_every_row_once")


def _in_mount_namespace(script: str) -> list[str]:
    """Run a shell snippet in a private mount namespace (real tmpfs / read-only mounts, no root effects
    outside the test). Needs CAP_SYS_ADMIN or unprivileged user namespaces."""
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script]


def _can_mount() -> bool:
    probe = subprocess.run(_in_mount_namespace("mount -t tmpfs -o size=4k tmpfs /mnt"), capture_output=True)
    return probe.returncode == 0


@pytest.mark.slow
def test_full_output_disk_gives_a_clear_error_and_no_partial_shard(ref, tmp_path, raft_small_path):
    if not _can_mount():
        pytest.fail("this test needs `unshare --mount` (root or user namespaces) to mount a small tmpfs")
    out = tmp_path / "full"
    out.mkdir()
    hydra_dir = tmp_path / "hydra"
    argv = args(ref.corpus, out, raft_small_path, "limit=3", f"hydra.run.dir={hydra_dir}")
    # an 8 KiB tmpfs: the lock file fits, chunk 0's 20 KB shard does not (ENOSPC while writing it)
    script = (f"mount -t tmpfs -o size=8k tmpfs {out} && \"$@\"; code=$?; "
              f"ls -A {out} {out}/shards {out}/parts 2>/dev/null; exit $code")
    began = time.perf_counter()
    proc = cli([*argv], prefix=[*_in_mount_namespace(script), "sh"], timeout=600)
    wall = time.perf_counter() - began
    log = proc.stdout + proc.stderr
    assert proc.returncode == 3, log[-3000:]
    assert "cannot write shard" in log and "the disk is full" in log and "re-run to resume" in log, log[-3000:]
    listing = proc.stdout.split("\n")
    assert not any(line.endswith((".tar", ".tmp")) for line in listing), listing  # nothing half-written
    record_fault(
        "preprocessing: runtime faults", "output disk full: output.dir on an 8 KiB tmpfs, the first shard does "
        "not fit (ENOSPC)", "a clear error; no half-written shard",
        "exit 3: `cannot write shard ...: the disk is full (...); free space or set output.dir to a writable "
        "folder, then re-run to resume`; no *.tar / *.tmp left", {"run_s": round(wall, 1)},
        "test_faults_preprocess.py::test_full_output_disk_gives_a_clear_error_and_no_partial_shard")


def test_read_only_output_disk_gives_a_clear_error_before_any_work(tmp_path, raft_small_path):
    if not _can_mount():
        pytest.fail("this test needs `unshare --mount` (root or user namespaces) to mount a read-only tmpfs")
    out = tmp_path / "ro"
    out.mkdir()
    (tmp_path / "m.csv").write_text("video,caption\na.mp4,a dog runs\n")
    argv = [f"input.manifest={tmp_path / 'm.csv'}", f"output.dir={out / 'job'}", f"flow.weights={raft_small_path}",
            f"hydra.run.dir={tmp_path / 'hydra'}"]
    script = f"mount -t tmpfs -o size=64k,ro tmpfs {out} && \"$@\""
    began = time.perf_counter()
    proc = cli(argv, prefix=[*_in_mount_namespace(script), "sh"], timeout=300)
    wall = time.perf_counter() - began
    log = proc.stdout + proc.stderr
    assert proc.returncode == 3, log[-3000:]
    assert "read-only" in log and str(out / "job") in log, log[-3000:]
    assert "Traceback" not in log
    record_fault(
        "preprocessing: runtime faults", "output disk read-only (output.dir on a read-only tmpfs)",
        "a clear error before any work; nothing written",
        "exit 3 naming output.dir and `the file system is read-only`, no traceback", {"refused_after_s": round(wall, 1)},
        "test_faults_preprocess.py::test_read_only_output_disk_gives_a_clear_error_before_any_work")
