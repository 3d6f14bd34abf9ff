"""Read the input corpus into `InputRow`s, one per input row, in input order.

Formats: CSV / JSONL / Parquet manifests (`video`, `caption`, optional `id`), WebVid's own CSV
(`videoid`, `name`, `contentUrl`, `duration`, `page_dir`), or a folder of videos with sidecar
`<stem>.txt` captions. A row that cannot be used (missing value, bad encoding, duplicate id)
is kept with `status="error"` and a reason, so the manifest still has one row per input row.
CSV and JSONL are parsed record by record (not with pandas) so one broken record costs one row,
not the whole file.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from collections.abc import Iterable
from urllib.parse import urlparse

VIDEO_EXTENSIONS = (".mp4", ".webm", ".mkv", ".avi", ".mov", ".m4v", ".mpg", ".mpeg", ".gif", ".flv")
WEBVID_COLUMNS = {"videoid", "name", "contentUrl"}
_KEY_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


class InputError(ValueError):
    """The input as a whole is unusable (missing file, no `video` column, ...)."""


@dataclass
class InputRow:
    row_index: int
    id: str
    key: str
    video: str
    caption: str
    status: str = "ok"
    reason: str = ""
    extra: dict[str, str] = field(default_factory=dict)

    def to_sample(self) -> dict[str, Any]:
        return {
            "row_index": self.row_index, "id": self.id, "key": self.key, "video": self.video,
            "caption": self.caption, "status": self.status, "reason": self.reason,
            "extra": dict(self.extra),
        }


def make_key(sample_id: str) -> str:
    """WebDataset key: sanitised id ([A-Za-z0-9_-], no dots, <= 64 chars) + '_' + 8 hex of sha1.

    The hash keeps keys unique when sanitising maps two ids to the same text.
    """
    safe = _KEY_UNSAFE.sub("-", sample_id).strip("-")[:64] or "x"
    return f"{safe}_{hashlib.sha1(sample_id.encode('utf-8', 'surrogateescape')).hexdigest()[:8]}"


def _is_url(video: str) -> bool:
    return "://" in video


def _valid_text(value: str) -> bool:
    try:
        value.encode("utf-8")
        return True
    except UnicodeEncodeError:  # lone surrogates from surrogateescape = undecodable bytes
        return False


def _cell(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, float) and value != value:  # NaN from parquet/pandas
        return None
    text = str(value).strip()
    return text or None


@dataclass
class _Raw:
    """One record before validation: its cells as text (None = missing)."""

    video: str | None
    caption: str | None
    id: str | None
    extra: dict[str, str]
    error: str = ""


def _read_csv(path: Path) -> Iterable[dict[str, Any]]:
    text = path.read_bytes().decode("utf-8-sig", errors="surrogateescape")
    yield from csv.DictReader(io.StringIO(text, newline=""))


def _read_jsonl(path: Path) -> Iterable[dict[str, Any]]:
    text = path.read_bytes().decode("utf-8-sig", errors="surrogateescape")
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            if not isinstance(record, dict):
                raise ValueError("not an object")
        except ValueError as exc:
            yield {"__error__": f"bad_row: line {number} is not a JSON object ({exc})"}
            continue
        yield record


def _read_parquet(path: Path) -> Iterable[dict[str, Any]]:
    import pyarrow.parquet as pq

    yield from pq.read_table(path).to_pylist()


def detect_format(path: Path, fmt: str) -> str:
    if fmt != "auto":
        return fmt
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    if suffix in (".parquet", ".pq"):
        return "parquet"
    if suffix in (".csv", ".tsv", ".txt"):
        with path.open(newline="", encoding="utf-8-sig", errors="replace") as f:
            header = set(next(csv.reader(f), []))
        return "webvid" if WEBVID_COLUMNS <= header and "video" not in header else "csv"
    raise InputError(
        f"input.manifest={path}: cannot tell the format from the suffix {suffix!r}; "
        "set input.format to one of csv, jsonl, parquet, webvid"
    )


def _manifest_records(path: Path, fmt: str) -> Iterable[dict[str, Any]]:
    reader = {"csv": _read_csv, "webvid": _read_csv, "jsonl": _read_jsonl, "parquet": _read_parquet}[fmt]
    return reader(path)


def _webvid_video(record: dict[str, Any], video_root: str | None) -> str | None:
    videoid = _cell(record.get("videoid"))
    if video_root and videoid:
        root = Path(video_root)
        page_dir = _cell(record.get("page_dir"))
        for candidate in (root / f"{videoid}.mp4", root / (page_dir or "") / f"{videoid}.mp4"):
            if candidate.is_file():
                return str(candidate.resolve())
    return _cell(record.get("contentUrl"))


def _raw_from_record(record: dict[str, Any], fmt: str, video_root: str | None) -> _Raw:
    if "__error__" in record:
        return _Raw(None, None, None, {}, error=record["__error__"])
    if fmt == "webvid":
        known = {"videoid", "name", "contentUrl"}
        video, caption, rid = _webvid_video(record, video_root), _cell(record.get("name")), _cell(record.get("videoid"))
    else:
        known = {"video", "caption", "id"}
        video, caption, rid = _cell(record.get("video")), _cell(record.get("caption")), _cell(record.get("id"))
    extra = {str(k): str(v) for k, v in record.items() if k not in known and k is not None and v is not None}
    return _Raw(video, caption, rid, extra)


def _check_columns(path: Path, fmt: str) -> None:
    if fmt in ("csv", "webvid"):
        with path.open(newline="", encoding="utf-8-sig", errors="replace") as f:
            header = next(csv.reader(f), [])
    elif fmt == "parquet":
        import pyarrow.parquet as pq

        header = pq.read_schema(path).names
    else:
        return  # JSONL: columns are per record
    needed = WEBVID_COLUMNS if fmt == "webvid" else {"video", "caption"}
    missing = needed - set(header)
    if missing:
        raise InputError(
            f"input.manifest={path} (format {fmt}) lacks column(s) {sorted(missing)}; found {header}. "
            "Manifests need `video` and `caption` (optional `id`); WebVid CSVs need videoid, name, contentUrl."
        )


def _folder_raws(folder: Path) -> Iterable[_Raw]:
    videos = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS)
    for video in videos:
        rel = video.relative_to(folder).as_posix()
        sidecar = video.with_suffix(".txt")
        if not sidecar.is_file():
            yield _Raw(str(video.resolve()), None, rel, {}, error=f"bad_row: no caption file {sidecar.name}")
            continue
        caption = sidecar.read_bytes().decode("utf-8-sig", errors="surrogateescape").strip()
        yield _Raw(str(video.resolve()), caption or None, rel, {})


def _resolve_video(video: str, base: Path) -> str:
    if _is_url(video):
        return video
    path = Path(video).expanduser()
    return str(path if path.is_absolute() else (base / path).resolve())


def _validate(index: int, raw: _Raw, base: Path, allowed_schemes: list[str], max_caption_chars: int) -> InputRow:
    rid = raw.id or raw.video or f"row-{index}"
    if not _valid_text(rid):
        rid = rid.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    row = InputRow(index, rid, make_key(rid), raw.video or "", raw.caption or "", extra=raw.extra)

    def error(reason: str) -> InputRow:
        row.status, row.reason = "error", reason
        if not _valid_text(row.caption):
            row.caption = row.caption.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        if not _valid_text(row.video):
            row.video = row.video.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        return row

    if raw.error:
        return error(raw.error)
    if raw.video is None:
        return error("bad_row: missing video")
    if not _valid_text(raw.video):
        return error("bad_encoding: video path is not valid UTF-8")
    if raw.caption is None:
        return error("bad_row: missing caption")
    if not _valid_text(raw.caption):
        return error("bad_encoding: caption is not valid UTF-8")
    if _is_url(raw.video):
        scheme = urlparse(raw.video).scheme.lower()
        if scheme not in allowed_schemes:
            return error(f"bad_url: scheme {scheme!r} not in input.allowed_schemes={list(allowed_schemes)}")
    row.video = _resolve_video(raw.video, base)
    if len(row.caption) > max_caption_chars:
        row.reason = f"caption_truncated: {len(row.caption)} -> {max_caption_chars} chars"
        row.caption = row.caption[:max_caption_chars]
    return row


def load_rows(input_cfg: Any, limit: int | None = None) -> list[InputRow]:
    """All input rows in order (the first `limit` when set); duplicate ids become errors."""
    if input_cfg.dir is not None:
        base = Path(input_cfg.dir)
        raws: Iterable[_Raw] = _folder_raws(base)
    else:
        path = Path(input_cfg.manifest)
        if not path.is_file():
            raise InputError(f"input.manifest={path} does not exist")
        fmt = detect_format(path, input_cfg.format)
        _check_columns(path, fmt)
        base = path.resolve().parent
        raws = (_raw_from_record(r, fmt, input_cfg.video_root) for r in _manifest_records(path, fmt))
    rows: list[InputRow] = []
    first_seen: dict[str, int] = {}
    for index, raw in enumerate(raws):
        if limit is not None and index >= limit:
            break
        row = _validate(index, raw, base, list(input_cfg.allowed_schemes), int(input_cfg.max_caption_chars))
        if row.id in first_seen:
            row.status, row.reason = "error", f"duplicate_id: {row.id!r} first used by row {first_seen[row.id]}"
            row.key = make_key(f"{row.id}#row{index}")  # keys stay unique in the manifest
        else:
            first_seen[row.id] = index
        rows.append(row)
    return rows
