"""Synthetic datasets with known ground truth, for training and checking the demo model."""

from layerscope.datasets.shapes import CLASS_NAMES, make_dataset, make_sample

__all__ = ["CLASS_NAMES", "make_dataset", "make_sample"]
