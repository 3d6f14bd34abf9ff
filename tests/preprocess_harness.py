"""Shared harness of the fyc-preprocess end-to-end and fault tests (not a test module).

One tiny corpus (4 good synthetic clips + every kind of bad row, incl. a decoder that hangs) and
ONE uninterrupted reference run per pytest run, shared by tests/test_preprocess_e2e.py and
tests/test_faults_preprocess.py: each fault scenario then costs one short extra run, compared
against the reference. Why a module-level cache and not a fixture: a shared fixture would have to
live in tests/conftest.py; importing one fixture into two modules
makes pytest run it twice.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
HOOKS = Path(__file__).resolve().parent / "fault_hooks"
HANG_MARK = "fyc-fault-hang"
DECODE_TIMEOUT_S = 5  # generous: a real 64x64 decode takes ~20 ms even on a loaded machine
CHUNK = 3  # rows per chunk: 18 rows -> 6 chunks, so a kill can land between chunks
FAST = ["clip.num_frames=4", "clip.stride=2", "clip.size=[64,64]", "flow.size=128", "flow.num_updates=4",
        "flow.batch_size=6", f"shard.max_samples={CHUNK}", "ray.num_cpus=2", f"decode.timeout_s={DECODE_TIMEOUT_S}",
        "report_thumbnails=4", "ray.in_process_max_rows=0"]  # the Ray plan (a small corpus would run in-process)
HUGE_CAPTION = "a red disc slides to the left " * 4000  # 120k chars; input.max_caption_chars=2000
LATIN1_CAPTION = "caf\xe9 cr\xe8me: a disc slides left"
GOOD_IDS = ["good0", "good1", "good2", "good3"]

# Input order (chunks of 3). The hanging row sits in chunk 2, so after chunk 0 is written the run
# is still busy for DECODE_TIMEOUT_S: a kill "after the first chunk" always lands mid-run.
# expected status per id ("a|b" = either), and the reason's prefix
EXPECTED: dict[str, tuple[str, str]] = {
    "good0": ("ok", ""), "good1": ("ok", ""), "corrupt": ("error", "decode_error"),
    "truncated": ("error", "decode_error"), "empty": ("error", "empty_file"), "good2": ("ok", ""),
    "hang": ("error", "decode_timeout"), "notvideo": ("error", "decode_error"), "short": ("filtered|error", ""),
    "missing": ("error", "missing_file"), "unreachable": ("error", "fetch_error"), "ftp": ("error", "bad_url"),
    "nocaption": ("error", "bad_row: missing caption"), "still": ("filtered", "no_motion_in_caption"),
    "good3": ("ok", ""), "dup": ("error", "duplicate_id"), "latin1": ("error", "bad_encoding"),
    "huge": ("ok", "caption_truncated"),
}


@dataclass
class Corpus:
    manifest: Path
    root: Path
    truth: dict[str, str]  # good id -> true direction of motion
    ids: list[str]  # test id of each input row, in input order (the duplicate row reuses good0's id)


def build_corpus(root: Path) -> Corpus:
    from preprocessing.synthetic.moving_shapes import generate_corpus

    root.mkdir(parents=True, exist_ok=True)
    shapes = generate_corpus(root / "shapes", len(GOOD_IDS), seed=3, height=96, width=96, num_frames=12,
                             progress=False)
    made = list(csv.DictReader(shapes.open()))
    videos = [str((shapes.parent / r["video"]).resolve()) for r in made]
    bad = root / "bad"
    bad.mkdir()
    real = Path(videos[0]).read_bytes()
    (bad / "corrupt.mp4").write_bytes(bytes(np.random.default_rng(0).integers(0, 256, 20000, dtype=np.uint8)))
    (bad / "truncated.mp4").write_bytes(real[: len(real) // 3])
    (bad / "empty.mp4").write_bytes(b"")
    (bad / "notes.mp4").write_text("this is not a video\n" * 50)
    (bad / f"{HANG_MARK}.mp4").write_bytes(real)  # a good clip: only the injected hook hangs on it
    short = generate_corpus(root / "short", 1, seed=4, height=96, width=96, num_frames=3, progress=False)
    short_video = str((short.parent / next(csv.DictReader(short.open()))["video"]).resolve())
    moving = "a blue square slides to the left"
    g = {gid: (videos[i], made[i]["caption"], made[i]["direction"]) for i, gid in enumerate(GOOD_IDS)}
    # (id column, video, caption, extra columns); "dup" reuses good0's id
    rows = [
        ("good0", *g["good0"][:2]), ("good1", *g["good1"][:2]), ("corrupt", "corrupt.mp4", moving),
        ("truncated", "truncated.mp4", moving), ("empty", "empty.mp4", moving), ("good2", *g["good2"][:2]),
        ("hang", f"{HANG_MARK}.mp4", moving), ("notvideo", "notes.mp4", moving), ("short", short_video, moving),
        ("missing", "nope/missing.mp4", moving), ("unreachable", "http://127.0.0.1:9/clip.mp4", moving),
        ("ftp", "ftp://example.com/a.mp4", moving), ("nocaption", "corrupt.mp4", ""),
        ("still", videos[1], "a still photo of a vase"), ("good3", *g["good3"][:2]),
        ("good0", videos[2], moving), ("latin1", videos[3], None), ("huge", videos[0], HUGE_CAPTION),
    ]
    ids = [r[0] for r in rows]
    ids[15] = "dup"
    lines = [b"video,caption,id,truth,unknown_column"]
    for (rid, video, caption), test_id in zip(rows, ids):
        truth = g[test_id][2] if test_id in g else ""
        if caption is None:  # a CSV written by a latin-1 tool: not UTF-8
            cell = LATIN1_CAPTION.encode("latin-1")
        else:
            cell = ('"' + caption.replace('"', '""') + '"').encode()
        lines.append(b",".join([video.encode(), cell, rid.encode(), truth.encode(), b"x"]))
    manifest = bad / "manifest.csv"
    manifest.write_bytes(b"\n".join(lines) + b"\n")
    return Corpus(manifest, root, {gid: g[gid][2] for gid in GOOD_IDS}, ids)


def hang_env(log: Path | None = None) -> dict[str, str]:
    """Environment of a run whose decoder hangs on the `hang` row (see fault_hooks/sitecustomize.py)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HOOKS), str(REPO), env.get("PYTHONPATH")]))
    env["FYC_FAULT_HANG_DECODE"] = HANG_MARK
    if log is not None:
        env["FYC_FAULT_HANG_LOG"] = str(log)
    return env


def args(corpus: Corpus, out: Path, weights: Path, *extra: str) -> list[str]:
    return [f"input.manifest={corpus.manifest}", f"output.dir={out}", f"flow.weights={weights}", *FAST, *extra]


def cli(argv: list[str], env: dict[str, str] | None = None, timeout: float = 600,
        prefix: list[str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*(prefix or []), sys.executable, "-m", "preprocessing.cli", *argv], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout, env=env or hang_env())


def cli_popen(argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
    """A run in its own process group (so the test can SIGKILL the driver and its Ray processes)."""
    return subprocess.Popen([sys.executable, "-m", "preprocessing.cli", *argv], cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True, env=env or hang_env())


def kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def wait_for(condition, proc: subprocess.Popen, timeout: float = 400, poll: float = 0.05) -> float:
    """Poll until condition() is true; fail if the run ends first. Returns seconds waited."""
    began = time.perf_counter()
    while not condition():
        if proc.poll() is not None:
            raise AssertionError(f"the run ended (exit {proc.returncode}) before the fault could be injected")
        if time.perf_counter() - began > timeout:
            kill_group(proc)
            raise AssertionError("timed out waiting to inject the fault")
        time.sleep(poll)
    return time.perf_counter() - began


def read_shards(out: Path) -> dict[str, dict[str, bytes]]:
    samples: dict[str, dict[str, bytes]] = {}
    for tar_path in sorted((out / "shards").glob("*.tar")):
        with tarfile.open(tar_path) as tar:
            for info in tar:
                key, _, ext = info.name.partition(".")
                assert ext not in samples.get(key, {}), f"{key}.{ext} appears twice"
                samples.setdefault(key, {})[ext] = tar.extractfile(info).read()
    return samples


def tar_bytes(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((out / "shards").glob("*.tar"))}


@dataclass
class Reference:
    corpus: Corpus
    out: Path
    wall_s: float
    hang_log: Path
    stdout: str


_REFERENCE: dict[str, Reference] = {}


def reference_run(tmp_path_factory, weights: Path) -> Reference:
    """The corpus and one uninterrupted run of it, made once per pytest run."""
    if "ref" not in _REFERENCE:
        corpus = build_corpus(tmp_path_factory.mktemp("fyc_corpus"))
        out = tmp_path_factory.mktemp("fyc_reference") / "out"
        hang_log = out.parent / "hang.log"
        began = time.perf_counter()
        proc = cli(args(corpus, out, weights), env=hang_env(hang_log))
        wall = time.perf_counter() - began
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
        _REFERENCE["ref"] = Reference(corpus, out, wall, hang_log, proc.stdout + proc.stderr)
    return _REFERENCE["ref"]
