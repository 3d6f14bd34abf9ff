"""Training callbacks: EMA of trainable weights, throughput, NaN guard, sample videos."""

from fyc_train.callbacks.ema import EMACallback, find_ema
from fyc_train.callbacks.nan_guard import NaNGuardCallback, NonFiniteError
from fyc_train.callbacks.throughput import ThroughputCallback

__all__ = ["EMACallback", "find_ema", "NaNGuardCallback", "NonFiniteError", "ThroughputCallback"]
