"""Input rows (CSV/JSONL/Parquet/WebVid/folder), bad rows, keys, URL fetching, atomic shards, lock."""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from preprocessing.lock import OutputLock, OutputLockedError
from preprocessing.shards import write_shard
from preprocessing.sources.fetch import FetchError, local_video
from preprocessing.sources.rows import InputError, load_rows, make_key


def input_cfg(**kw):
    base = dict(manifest=None, dir=None, format="auto", video_root=None, allowed_schemes=["http", "https"],
                max_caption_chars=50)
    base.update(kw)
    return SimpleNamespace(**base)


def test_keys_are_safe_unique_and_deterministic():
    keys = [make_key(i) for i in ("a/b.mp4", "a_b.mp4", "a.b/c", "../../etc/passwd", "x" * 500, "日本")]
    assert len(set(keys)) == len(keys)
    for key in keys:
        assert "." not in key and "/" not in key and len(key) <= 73
    assert make_key("a/b.mp4") == make_key("a/b.mp4")


def test_csv_rows_resolve_paths_and_account_for_bad_rows(tmp_path):
    data = (b"video,caption,id,source\n"
            b"clips/a.mp4,a dog runs,,web\n"
            b"/abs/b.mp4,a cat jumps,b,web\n"
            b"https://example.com/c.mp4,a bird flies,c,\n"
            b",no video here,d,\n"
            b"clips/e.mp4,,e,\n"
            b"clips/f.mp4,a man walks,b,\n")
    data += "clips/g.mp4,caf\xe9 bad bytes,g,\n".encode("latin-1")  # not UTF-8
    data += f"clips/h.mp4,{'a horse gallops ' * 10},h,\n".encode()
    (tmp_path / "m.csv").write_bytes(data)
    rows = load_rows(input_cfg(manifest=str(tmp_path / "m.csv")))
    assert [r.row_index for r in rows] == list(range(8))
    a, b, c, d, e, f, g, h = rows
    assert a.status == "ok" and a.video == str((tmp_path / "clips/a.mp4").resolve()) and a.id == "clips/a.mp4"
    assert a.extra == {"source": "web"}
    assert b.video == "/abs/b.mp4" and c.video == "https://example.com/c.mp4"
    assert (d.status, d.reason) == ("error", "bad_row: missing video")
    assert (e.status, e.reason) == ("error", "bad_row: missing caption")
    assert f.status == "error" and f.reason.startswith("duplicate_id") and f.key != b.key
    assert g.status == "error" and g.reason.startswith("bad_encoding")
    assert h.status == "ok" and len(h.caption) == 50 and h.reason.startswith("caption_truncated")
    assert len({r.key for r in rows}) == 8
    assert load_rows(input_cfg(manifest=str(tmp_path / "m.csv")), limit=3)[-1].id == "c"


def test_jsonl_parquet_and_missing_columns(tmp_path):
    lines = [json.dumps({"video": "a.mp4", "caption": "waves crash"}), "{not json", json.dumps([1, 2]),
             json.dumps({"video": "b.mp4", "caption": "smoke rises", "id": "b"})]
    (tmp_path / "m.jsonl").write_text("\n".join(lines) + "\n")
    rows = load_rows(input_cfg(manifest=str(tmp_path / "m.jsonl")))
    assert [r.status for r in rows] == ["ok", "error", "error", "ok"]
    assert rows[1].reason.startswith("bad_row: line 2")
    pq.write_table(pa.table({"video": ["x.mp4", None], "caption": ["a dog runs", "a cat"]}), tmp_path / "m.parquet")
    rows = load_rows(input_cfg(manifest=str(tmp_path / "m.parquet")))
    assert [r.status for r in rows] == ["ok", "error"]
    (tmp_path / "bad.csv").write_text("path,text\na.mp4,hello\n")
    with pytest.raises(InputError, match="lacks column"):
        load_rows(input_cfg(manifest=str(tmp_path / "bad.csv")))


def test_webvid_prefers_local_files_then_content_url(tmp_path):
    (tmp_path / "videos" / "001").mkdir(parents=True)
    (tmp_path / "videos" / "11.mp4").write_bytes(b"x")
    (tmp_path / "videos" / "001" / "12.mp4").write_bytes(b"x")
    (tmp_path / "results.csv").write_text(
        "videoid,contentUrl,duration,page_dir,name\n"
        "11,https://cdn.example/11.mp4,PT00H00M10S,001,Woman smiling\n"
        "12,https://cdn.example/12.mp4,PT00H00M10S,001,Leaves sway\n"
        "13,https://cdn.example/13.mp4,PT00H00M10S,001,Man walking\n")
    rows = load_rows(input_cfg(manifest=str(tmp_path / "results.csv"), video_root=str(tmp_path / "videos")))
    assert [r.id for r in rows] == ["11", "12", "13"] and rows[0].caption == "Woman smiling"
    assert rows[0].video == str((tmp_path / "videos/11.mp4").resolve())
    assert rows[1].video == str((tmp_path / "videos/001/12.mp4").resolve())
    assert rows[2].video == "https://cdn.example/13.mp4"
    assert rows[0].extra["duration"] == "PT00H00M10S"


def test_folder_with_sidecar_captions(tmp_path):
    (tmp_path / "sub").mkdir()
    for name, caption in [("b.mp4", "a dog runs"), ("sub/a.webm", "a cat jumps"), ("c.mp4", None)]:
        (tmp_path / name).write_bytes(b"x")
        if caption:
            (tmp_path / name).with_suffix(".txt").write_text(caption + "\n")
    rows = load_rows(input_cfg(dir=str(tmp_path)))
    assert [r.id for r in rows] == ["b.mp4", "c.mp4", "sub/a.webm"]
    assert rows[0].caption == "a dog runs" and rows[1].reason == "bad_row: no caption file c.txt"


class _Files(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        if self.path == "/big.mp4":
            body = b"x" * 5000
        elif self.path == "/ok.mp4":
            body = b"video-bytes"
        else:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def file_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Files)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_fetch_downloads_to_a_temp_file_and_deletes_it(file_server, tmp_path):
    with local_video(f"{file_server}/ok.mp4", ["http"], 5, 1000) as path:
        assert Path(path).read_bytes() == b"video-bytes"
    assert not Path(path).exists()
    with pytest.raises(FetchError, match="max_bytes"):
        with local_video(f"{file_server}/big.mp4", ["http"], 5, 1000):
            pass
    with pytest.raises(FetchError, match="HTTP 404"):
        with local_video(f"{file_server}/nope.mp4", ["http"], 5, 1000):
            pass
    with pytest.raises(FetchError, match="bad_url"):
        with local_video(f"{file_server}/ok.mp4", ["https"], 5, 1000):
            pass
    with pytest.raises(FetchError, match="missing_file"):
        with local_video(str(tmp_path / "none.mp4"), ["http"], 5, 1000):
            pass


def _sample(key: str) -> dict:
    return {"key": key, "mp4": b"\x00" * 2000, "json": {"id": key}, "mask_png": b"png"}


def test_shard_is_atomic_and_deterministic(tmp_path):
    write_shard(tmp_path / "a.tar", [_sample("k1"), _sample("k2")])
    write_shard(tmp_path / "b.tar", [_sample("k1"), _sample("k2")])
    assert (tmp_path / "a.tar").read_bytes() == (tmp_path / "b.tar").read_bytes()
    with tarfile.open(tmp_path / "a.tar") as tar:
        assert sorted(tar.getnames()) == ["k1.json", "k1.mask.png", "k1.mp4", "k2.json", "k2.mask.png", "k2.mp4"]
    with pytest.raises(ValueError, match="invalid sample key"):
        write_shard(tmp_path / "c.tar", [_sample("../evil.x")])
    assert not list(tmp_path.glob("*.tmp")) and not (tmp_path / "c.tar").exists()


def test_full_disk_gives_a_clear_error_and_no_partial_shard(tmp_path):
    # RLIMIT_FSIZE makes writes past 4 KiB fail (EFBIG), as a full disk would, in a child process.
    code = f"""
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
from preprocessing.shards import write_shard, ShardWriteError
try:
    write_shard({str(tmp_path / 'full.tar')!r}, [{{"key": "k", "mp4": b"0" * 100000, "json": {{}}, "mask_png": b""}}])
except ShardWriteError as exc:
    print("ERR", exc); sys.exit(0)
sys.exit(1)
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 0, proc.stderr
    assert "cannot write shard" in proc.stdout and "full.tar" in proc.stdout and "re-run" in proc.stdout
    assert list(tmp_path.iterdir()) == []


def test_lock_refuses_a_second_holder(tmp_path):
    with OutputLock(tmp_path):
        with pytest.raises(OutputLockedError, match="in use by another"):
            with OutputLock(tmp_path):
                pass
    with OutputLock(tmp_path):  # released on exit
        pass
