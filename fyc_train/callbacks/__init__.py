"""Training callbacks: EMA of trainable weights, throughput, NaN guard, preemption, sample videos."""

from fyc_train.callbacks.ema import EMACallback, find_ema
from fyc_train.callbacks.nan_guard import NaNGuardCallback, NonFiniteError
from fyc_train.callbacks.preemption import Preempted, PreemptionCallback
from fyc_train.callbacks.throughput import ThroughputCallback

__all__ = ["EMACallback", "find_ema", "NaNGuardCallback", "NonFiniteError", "Preempted", "PreemptionCallback",
           "ThroughputCallback"]
