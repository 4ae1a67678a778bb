"""GaitKD: knowledge distillation for part-structured gait recognition models."""

__version__ = "0.1.0"
