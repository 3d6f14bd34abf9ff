"""Training data: WebDataset shards -> batches (see docs/ARCHITECTURE.md, training batch)."""

from fyc_train.data.datamodule import FYCDataModule, SkipCounter, magnitude_quantiles
from fyc_train.data.decode import SampleError, collate, decode_sample
from fyc_train.data.shards import expand_shards

__all__ = ["FYCDataModule", "SkipCounter", "SampleError", "collate", "decode_sample",
           "expand_shards", "magnitude_quantiles"]
