"""Sampling: FYCPipeline (image + region mask(s) + short prompt(s) + magnitude -> video), SAM
clicks -> masks, checkpoint loading, speed control, video writing and contact sheets."""
from .checkpoint_loading import LoadedCheckpoint, load_for_sampling, save_sampling_metadata
from .masks import SamplingInputError
from .pipeline import FirstFrameLayout, FYCPipeline, make_scheduler, video_to_uint8
from .settings import SamplerSettings, resolve_sampler_settings
from .speed import resolve_magnitude

__all__ = [
    "FYCPipeline", "FirstFrameLayout", "LoadedCheckpoint", "SamplerSettings", "SamplingInputError",
    "load_for_sampling", "make_scheduler", "resolve_magnitude", "resolve_sampler_settings",
    "save_sampling_metadata", "video_to_uint8",
]
