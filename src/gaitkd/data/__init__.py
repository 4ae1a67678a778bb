"""Data: OpenGait pkl folders, partitions, frame sampling, batch samplers and the LightningDataModule."""

from gaitkd.data.datamodule import EvalFrames, GaitDataModule, TrainFrames
from gaitkd.data.dataset import GaitDataError, GaitDataWarning, GaitSequenceDataset, cut_width, load_pkl
from gaitkd.data.partition import Partition, load_partition, rule_partition
from gaitkd.data.sampler import InferenceBatchSampler, PKBatchSampler, SeededBatches, dist_rank_world
from gaitkd.data.sampling import (
    MODES,
    FrameSampler,
    all_ordered,
    collate_eval,
    collate_train,
    fixed_ordered,
    fixed_unordered,
)

__all__ = [
    "MODES",
    "EvalFrames",
    "FrameSampler",
    "GaitDataError",
    "GaitDataModule",
    "GaitDataWarning",
    "GaitSequenceDataset",
    "InferenceBatchSampler",
    "PKBatchSampler",
    "Partition",
    "SeededBatches",
    "TrainFrames",
    "all_ordered",
    "collate_eval",
    "collate_train",
    "cut_width",
    "dist_rank_world",
    "fixed_ordered",
    "fixed_unordered",
    "load_partition",
    "load_pkl",
    "rule_partition",
]
