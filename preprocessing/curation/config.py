"""Structured config of `fyc-curate`: schema (registered as `curate_schema`) and value checks.

Like fyc-preprocess, a typo'd key (`select.qeury=...`) fails inside Hydra naming the key; then
`validate()` checks values and names the key plus what is allowed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig

from preprocessing.config import PROMPT_EXTRACTORS, ConfigError, PromptConfig
from fyc_train.data.latents import STORAGE_DTYPES

AUTOENCODERS = ("tiny", "sd_vae")
COMPUTE_DTYPES = ("float32", "float16", "bfloat16")


@dataclass
class CurateInputConfig:
    dir: str | None = None
    dirs: list[str] | None = None


@dataclass
class CurateOutputConfig:
    dir: str = MISSING


@dataclass
class SelectConfig:
    query: str | None = None


@dataclass
class BalanceConfig:
    max_per_prompt: int | None = None
    magnitude_bins: list[float] | None = None
    max_per_magnitude_bin: int | None = None
    seed: int = 0


@dataclass
class RepromptConfig:
    enabled: bool = False
    prompt: PromptConfig = field(default_factory=PromptConfig)


@dataclass
class DedupeConfig:
    enabled: bool = False
    frames: int = 3
    hash_size: int = 8
    max_distance: float = 6.0


@dataclass
class TinyAutoencoderConfig:
    factor: int = 2
    scale: float = 1.0


@dataclass
class LatentsConfig:
    enabled: bool = False
    autoencoder: str = "tiny"
    tiny: TinyAutoencoderConfig = field(default_factory=TinyAutoencoderConfig)
    vae_path: str | None = None
    vae_subfolder: str | None = "vae"
    dtype: str = "float32"
    compute_dtype: str = "float32"
    chunk_size: int = 16
    gpus_per_actor: float = 1.0


@dataclass
class CurateShardConfig:
    max_samples: int = 1000


@dataclass
class CurateRayConfig:
    address: str | None = None
    num_cpus: int | None = None
    writers: int | None = None
    log_to_driver: bool = False


@dataclass
class CurateConfig:
    input: CurateInputConfig = field(default_factory=CurateInputConfig)
    output: CurateOutputConfig = field(default_factory=CurateOutputConfig)
    select: SelectConfig = field(default_factory=SelectConfig)
    reprompt: RepromptConfig = field(default_factory=RepromptConfig)
    dedupe: DedupeConfig = field(default_factory=DedupeConfig)
    balance: BalanceConfig = field(default_factory=BalanceConfig)
    latents: LatentsConfig = field(default_factory=LatentsConfig)
    shard: CurateShardConfig = field(default_factory=CurateShardConfig)
    ray: CurateRayConfig = field(default_factory=CurateRayConfig)
    report_thumbnails: int = 12


def register_schema() -> None:
    ConfigStore.instance().store(name="curate_schema", node=CurateConfig)


def _fail(key: str, value: Any, allowed: str) -> None:
    raise ConfigError(f"{key}={value!r} is invalid: {allowed}")


def _positive_or_null(key: str, value: Any) -> None:
    if value is not None and (not isinstance(value, (int, float)) or value <= 0):
        _fail(key, value, "a number > 0, or null for no limit")


def input_dirs(cfg: Any) -> list[Path]:
    """The input folders in merge order (input.dir alone, or input.dirs)."""
    return [Path(cfg.input.dir)] if cfg.input.dir else [Path(d) for d in cfg.input.dirs]


def validate(cfg: DictConfig | CurateConfig) -> None:
    """Check values the schema cannot express; raise ConfigError naming the key."""
    c = cfg
    if bool(c.input.dir) == bool(c.input.dirs):
        raise ConfigError("set exactly one of input.dir (one fyc-preprocess output folder) or input.dirs "
                          f"(a list of them, merged in order); got input.dir={c.input.dir!r}, "
                          f"input.dirs={None if c.input.dirs is None else list(c.input.dirs)!r}")
    key = "input.dir" if c.input.dir else "input.dirs"
    for folder in input_dirs(c):
        if not (folder / "manifest.parquet").is_file():
            _fail(key, str(folder), "not a fyc-preprocess / fyc-curate output folder (no manifest.parquet)")
    if not c.output.dir:
        _fail("output.dir", c.output.dir, "set a folder for the curated shards and manifest")
    out = Path(c.output.dir).resolve()
    if any(out == f.resolve() for f in input_dirs(c)):
        _fail("output.dir", c.output.dir, "must differ from every input folder (inputs are never modified)")
    if c.select.query is not None and not str(c.select.query).strip():
        _fail("select.query", c.select.query, "a pandas query over manifest columns, or null to keep every ok row")
    _positive_or_null("balance.max_per_prompt", c.balance.max_per_prompt)
    _positive_or_null("balance.max_per_magnitude_bin", c.balance.max_per_magnitude_bin)
    bins = c.balance.magnitude_bins
    if (bins is None) != (c.balance.max_per_magnitude_bin is None):
        _fail("balance.magnitude_bins", None if bins is None else list(bins),
              "set both balance.magnitude_bins (bin edges) and balance.max_per_magnitude_bin, or neither")
    if bins is not None and (len(bins) < 2 or any(b >= a for b, a in zip(list(bins)[1:], bins))):
        _fail("balance.magnitude_bins", list(bins), "at least 2 strictly increasing bin edges, e.g. [0, 1, 2, 4]")
    if c.reprompt.enabled:
        if c.reprompt.prompt.extractor not in PROMPT_EXTRACTORS:
            _fail("reprompt.prompt.extractor", c.reprompt.prompt.extractor, f"one of {', '.join(PROMPT_EXTRACTORS)}")
        if c.reprompt.prompt.extractor == "llm" and not str(c.reprompt.prompt.llm.url).startswith(("http://", "https://")):
            _fail("reprompt.prompt.llm.url", c.reprompt.prompt.llm.url, "an http(s) URL of a /v1/chat/completions endpoint")
    if c.dedupe.frames < 1:
        _fail("dedupe.frames", c.dedupe.frames, "frames hashed per clip, >= 1")
    if c.dedupe.hash_size < 4:
        _fail("dedupe.hash_size", c.dedupe.hash_size, "perceptual hash side, >= 4 (8 gives 64-bit hashes)")
    if not 0 <= c.dedupe.max_distance < c.dedupe.hash_size ** 2:
        _fail("dedupe.max_distance", c.dedupe.max_distance,
              f"mean Hamming distance per frame, in [0, {c.dedupe.hash_size ** 2}) bits")
    if c.latents.enabled:
        if c.latents.autoencoder not in AUTOENCODERS:
            _fail("latents.autoencoder", c.latents.autoencoder, f"one of {', '.join(AUTOENCODERS)}")
        if c.latents.autoencoder == "sd_vae":
            if not c.latents.vae_path:
                _fail("latents.vae_path", c.latents.vae_path, "a diffusers folder (SD1.5: its vae/ subfolder is used)")
            folder = Path(c.latents.vae_path) / (c.latents.vae_subfolder or "")
            if not (folder / "config.json").is_file():
                _fail("latents.vae_path", c.latents.vae_path, f"{folder} holds no config.json of an AutoencoderKL")
        if c.latents.tiny.factor < 1:
            _fail("latents.tiny.factor", c.latents.tiny.factor, "an integer >= 1 (model.autoencoder.factor)")
        if c.latents.dtype not in STORAGE_DTYPES:
            _fail("latents.dtype", c.latents.dtype, f"one of {', '.join(STORAGE_DTYPES)} (.npy has no bfloat16)")
        if c.latents.compute_dtype not in COMPUTE_DTYPES:
            _fail("latents.compute_dtype", c.latents.compute_dtype, f"one of {', '.join(COMPUTE_DTYPES)}")
        if c.latents.chunk_size < 1:
            _fail("latents.chunk_size", c.latents.chunk_size, "frames per autoencoder call, >= 1")
    if c.shard.max_samples < 1:
        _fail("shard.max_samples", c.shard.max_samples, "samples per output shard, >= 1")
    _positive_or_null("ray.num_cpus", c.ray.num_cpus)
    _positive_or_null("ray.writers", c.ray.writers)
