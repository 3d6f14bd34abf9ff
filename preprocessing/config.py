"""Structured config of `fyc-preprocess`: the schema (dataclasses) and semantic validation.

The dataclasses are registered in Hydra's ConfigStore as `preprocess_schema` and used as the
first default of `conf/preprocess/preprocess.yaml`, so a typo'd key (`input.manifset=...`) fails inside
Hydra with a message naming the key, before any work starts. `validate()` then checks the
values (sizes, paths, choices) and names the key plus the allowed values in each error.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

INPUT_FORMATS = ("auto", "csv", "jsonl", "parquet", "webvid", "folder")
FLOW_MODELS = ("raft_small", "raft_large", "farneback")
MASK_DEFINITIONS = ("robust", "paper")
MASK_REGIONS = ("union", "first")
PROMPT_EXTRACTORS = ("builtin", "llm")
SCENE_DETECTORS = ("auto", "content", "adaptive", "none")
FLOW_DEVICES = ("auto", "cpu", "cuda")
FLOW_FRAMES = ("clip", "source")
URL_SCHEMES = ("http", "https")


class ConfigError(ValueError):
    """A config value is invalid; the message names the key and what is allowed."""


@dataclass
class InputConfig:
    manifest: str | None = None
    dir: str | None = None
    format: str = "auto"
    video_root: str | None = None
    allowed_schemes: list[str] = field(default_factory=lambda: ["http", "https"])
    fetch_timeout_s: float = 30.0
    max_bytes: int = 512 * 1024 * 1024
    max_caption_chars: int = 2000


@dataclass
class OutputConfig:
    dir: str = MISSING


@dataclass
class ClipConfig:
    num_frames: int = 16
    stride: int = 4
    size: list[int] = field(default_factory=lambda: [256, 256])
    windows_per_video: int = 1
    scene_detector: str = "auto"
    scene_threshold: float | None = None


@dataclass
class FlowConfig:
    model: str = "raft_small"
    weights: str = "default"
    num_updates: int = 12
    size: int = 256
    mask: str = "robust"
    mask_region: str = "union"
    core_fraction: float = 0.8
    batch_size: int = 8
    device: str = "auto"
    frames: str = "clip"


@dataclass
class LLMConfig:
    url: str = "http://127.0.0.1:8000/v1/chat/completions"
    model: str = "gpt-4o-mini"
    api_key_env: str = "OPENAI_API_KEY"
    batch_size: int = 8
    timeout_s: float = 60.0
    retries: int = 2
    cache: str | None = None


@dataclass
class PromptConfig:
    extractor: str = "builtin"
    require_motion: bool = True
    llm: LLMConfig = field(default_factory=LLMConfig)


@dataclass
class FilterConfig:
    min_magnitude: float = 0.0
    max_magnitude: float | None = None
    min_source_frames: int = 0
    min_resolution: int = 0


@dataclass
class ShardConfig:
    max_samples: int = 1000


@dataclass
class DecodeConfig:
    timeout_s: float = 60.0


@dataclass
class RayConfig:
    address: str | None = None
    num_cpus: int | None = None
    flow_actors: int = 1
    flow_threads: int | None = None
    in_process_max_rows: int = 64
    flow_gpus_per_actor: float = 1.0
    log_to_driver: bool = False
    node_loss_retries: int = 2
    node_loss_settle_s: float = 60.0


@dataclass
class PreprocessConfig:
    input: InputConfig = field(default_factory=InputConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    clip: ClipConfig = field(default_factory=ClipConfig)
    flow: FlowConfig = field(default_factory=FlowConfig)
    prompt: PromptConfig = field(default_factory=PromptConfig)
    filter: FilterConfig = field(default_factory=FilterConfig)
    shard: ShardConfig = field(default_factory=ShardConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    retry_errors: bool = False
    limit: int | None = None
    report_thumbnails: int = 12


def register_schema() -> None:
    """Register the schema so `defaults: [preprocess_schema]` in conf/preprocess/preprocess.yaml finds it."""
    ConfigStore.instance().store(name="preprocess_schema", node=PreprocessConfig)


def _fail(key: str, value: Any, allowed: str) -> None:
    raise ConfigError(f"{key}={value!r} is invalid: {allowed}")


def _choice(key: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        _fail(key, value, f"allowed values are {', '.join(choices)}")


def _positive(key: str, value: Any) -> None:
    if not isinstance(value, (int, float)) or value <= 0:
        _fail(key, value, "must be a number > 0")


def validate(cfg: DictConfig | PreprocessConfig) -> None:
    """Check values the schema cannot express; raise ConfigError naming the key."""
    missing = sorted(OmegaConf.missing_keys(cfg)) if isinstance(cfg, DictConfig) else []
    if missing:  # before any value is read: reading one raises MissingMandatoryValue, a traceback
        raise ConfigError("mandatory key(s) not set: " + ", ".join(f"{k} (pass {k}=...)" for k in missing))
    c = cfg
    if (c.input.manifest is None) == (c.input.dir is None):
        raise ConfigError(
            "set exactly one of input.manifest (a CSV/JSONL/Parquet file) or input.dir "
            f"(a folder of videos with <stem>.txt captions); got input.manifest={c.input.manifest!r}, "
            f"input.dir={c.input.dir!r}"
        )
    _choice("input.format", c.input.format, INPUT_FORMATS)
    if c.input.manifest is not None:
        if not Path(c.input.manifest).is_file():
            _fail("input.manifest", c.input.manifest, "file does not exist")
        if c.input.format == "folder":
            _fail("input.format", c.input.format, "'folder' needs input.dir, not input.manifest")
    if c.input.dir is not None:
        if not Path(c.input.dir).is_dir():
            _fail("input.dir", c.input.dir, "folder does not exist")
        if c.input.format not in ("auto", "folder"):
            _fail("input.format", c.input.format, "with input.dir use auto or folder")
    if c.input.video_root is not None and not Path(c.input.video_root).is_dir():
        _fail("input.video_root", c.input.video_root, "folder does not exist")
    for scheme in c.input.allowed_schemes:
        _choice("input.allowed_schemes", scheme, URL_SCHEMES)
    _positive("input.fetch_timeout_s", c.input.fetch_timeout_s)
    _positive("input.max_bytes", c.input.max_bytes)
    _positive("input.max_caption_chars", c.input.max_caption_chars)

    if not c.output.dir:
        _fail("output.dir", c.output.dir, "set a folder for shards and manifest")
    if c.clip.num_frames < 2:
        _fail("clip.num_frames", c.clip.num_frames, "need at least 2 frames (flow uses pairs)")
    _positive("clip.stride", c.clip.stride)
    size = list(c.clip.size)
    if len(size) != 2 or any((not isinstance(s, int)) or s <= 0 or s % 8 for s in size):
        _fail("clip.size", size, "must be [H, W], positive integers divisible by 8")

    if not isinstance(c.clip.windows_per_video, int) or c.clip.windows_per_video < 1:
        _fail("clip.windows_per_video", c.clip.windows_per_video, "a number of windows >= 1")
    _choice("clip.scene_detector", c.clip.scene_detector, SCENE_DETECTORS)
    if c.clip.scene_threshold is not None:
        _positive("clip.scene_threshold", c.clip.scene_threshold)

    _choice("flow.model", c.flow.model, FLOW_MODELS)
    _choice("flow.device", c.flow.device, FLOW_DEVICES)
    _choice("flow.frames", c.flow.frames, FLOW_FRAMES)
    _choice("flow.mask", c.flow.mask, MASK_DEFINITIONS)
    _choice("flow.mask_region", c.flow.mask_region, MASK_REGIONS)
    if c.flow.weights != "default" and not Path(c.flow.weights).is_file():
        _fail("flow.weights", c.flow.weights, "'default' (torchvision's cache) or an existing checkpoint file")
    if c.flow.size < 128 or c.flow.size % 8:
        _fail("flow.size", c.flow.size, "RAFT needs a size >= 128 and divisible by 8")
    _positive("flow.num_updates", c.flow.num_updates)
    if not 0.0 <= c.flow.core_fraction < 1.0:
        _fail("flow.core_fraction", c.flow.core_fraction, "a fraction of the mask's P95 speed, in [0, 1)")
    _positive("flow.batch_size", c.flow.batch_size)

    _choice("prompt.extractor", c.prompt.extractor, PROMPT_EXTRACTORS)
    if c.prompt.extractor == "llm":
        if not str(c.prompt.llm.url).startswith(("http://", "https://")):
            _fail("prompt.llm.url", c.prompt.llm.url, "an http(s) URL of a /v1/chat/completions endpoint")
        _positive("prompt.llm.batch_size", c.prompt.llm.batch_size)
        _positive("prompt.llm.timeout_s", c.prompt.llm.timeout_s)

    if c.filter.min_magnitude < 0:
        _fail("filter.min_magnitude", c.filter.min_magnitude, "must be >= 0")
    if c.filter.max_magnitude is not None and c.filter.max_magnitude < c.filter.min_magnitude:
        _fail("filter.max_magnitude", c.filter.max_magnitude, "must be >= filter.min_magnitude (or null)")
    if c.filter.min_source_frames < 0:
        _fail("filter.min_source_frames", c.filter.min_source_frames, "must be >= 0")
    if c.filter.min_resolution < 0:
        _fail("filter.min_resolution", c.filter.min_resolution, "must be >= 0")
    _positive("shard.max_samples", c.shard.max_samples)
    _positive("decode.timeout_s", c.decode.timeout_s)
    if c.ray.num_cpus is not None:
        _positive("ray.num_cpus", c.ray.num_cpus)
    _positive("ray.flow_actors", c.ray.flow_actors)
    if c.ray.flow_threads is not None:
        _positive("ray.flow_threads", c.ray.flow_threads)
    if c.ray.in_process_max_rows < 0:
        _fail("ray.in_process_max_rows", c.ray.in_process_max_rows, "a number of rows >= 0 (0: always start Ray)")
    if c.ray.flow_gpus_per_actor < 0:
        _fail("ray.flow_gpus_per_actor", c.ray.flow_gpus_per_actor, "must be >= 0")
    if c.ray.node_loss_retries < 0:
        _fail("ray.node_loss_retries", c.ray.node_loss_retries, "re-plans after a lost node, >= 0")
    _positive("ray.node_loss_settle_s", c.ray.node_loss_settle_s)
    if c.limit is not None and c.limit <= 0:
        _fail("limit", c.limit, "a positive number of rows, or null for all")
    for message in label_accuracy_warnings(c):  # valid, but known to give weak labels
        logging.getLogger("fyc.preprocess").warning(message)


def scene_windows(clip: Any) -> dict[str, Any] | None:
    """The decode request's `windows` for `clip.*`, or None for one centred window per video.

    scene_detector=auto detects shots only when several windows are asked for, so a corpus of
    short clips (WebVid) keeps one centred window, key = the row's key, unchanged samples."""
    detector = clip["scene_detector"]
    if detector == "auto":
        if int(clip["windows_per_video"]) == 1:
            return None
        detector = "content"
    return {"max_windows": int(clip["windows_per_video"]), "detector": detector,
            "threshold": clip.get("scene_threshold")}


def flow_input_size(flow: Any) -> int | None:
    """flow.size when RAFT's input is decoded from the source frames (flow.frames=source), None
    when it is the clip, resized to flow.size (the default: measured no less accurate, see
    docs/preprocessing.md, Mask and magnitude)."""
    return int(flow["size"]) if flow["frames"] == "source" else None


# RAFT works on features at 1/8 of its input: below 256 px small, slow objects under-read.
# Measured with bench/label_accuracy.py (13 held-out MovingShapes clips, 256-px sources, 0.5-3
# px/frame, 64-px clips, stride 2, 12 updates): labels within 25% of the truth 7/13 at flow.size
# 128, 13/13 at 256.
RELIABLE_FLOW_SIZE = 256


def label_accuracy_warnings(cfg: Any) -> list[str]:
    """Settings known to under-read motion labels (logged at start-up, not refused)."""
    found = []
    if cfg.flow.model != "farneback" and int(cfg.flow.size) < RELIABLE_FLOW_SIZE:
        found.append(
            f"flow.size={cfg.flow.size} under-reads small or slow motion: RAFT sees features at 1/8 of "
            f"flow.size; on held-out MovingShapes clips 7 of 13 labels read within 25% at flow.size=128, "
            f"13 of 13 at {RELIABLE_FLOW_SIZE} (bench/label_accuracy.py). Use flow.size>={RELIABLE_FLOW_SIZE}; "
            "clips whose caption names a motion but read none get manifest label_warning=no_motion_measured")
    return found


def to_container(cfg: DictConfig) -> dict:
    """Plain dict of the resolved config (for stats.json, Ray tasks)."""
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]


def default_num_cpus() -> int:
    return max(1, os.cpu_count() or 1)
