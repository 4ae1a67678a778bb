"""Training losses (triplet, part-wise CE) and the name -> class registry.

The KD losses register themselves in the same registry when :mod:`gaitkd.distill` is imported.
"""

from gaitkd.losses.ce import PartCrossEntropyLoss
from gaitkd.losses.registry import LOSSES, build_loss, register
from gaitkd.losses.triplet import TripletLoss

# OpenGait / GaitKD ``loss_cfg`` class names -> our registered names (for importing their configs).
OPENGAIT_LOSS_NAMES: dict[str, str] = {
    "TripletLoss": "triplet",
    "CrossEntropyLoss": "ce",
    "LogitsKD_KLLoss": "decision_kl",
    "LogitsKD_KA_PSLoss": "ka_ps",
    "LogitsKD_MSELoss": "logit_mse",
    "LogitsKD_KA_LSR": "ka_lsr",
    "LogitsKD_DKDLoss": "dkd",
    "FeatsKD_ABLoss": "activation_boundary",
    "FeatsKD_MSELoss": "feat_mse",
    "FeatsKD_ATLoss": "attention_transfer",
}

__all__ = ["LOSSES", "OPENGAIT_LOSS_NAMES", "PartCrossEntropyLoss", "TripletLoss", "build_loss", "register"]
