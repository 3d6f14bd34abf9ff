"""Per-row processing steps of `fyc-preprocess` (sample dict in, sample dict out)."""

from preprocessing.steps.base import Sample, Step, is_ok, mark
from preprocessing.steps.decode import DecodeStep
from preprocessing.steps.encode import EncodeStep
from preprocessing.steps.flow import FlowStep
from preprocessing.steps.motion import MotionStep

__all__ = ["DecodeStep", "EncodeStep", "FlowStep", "MotionStep", "Sample", "Step", "is_ok", "mark"]
