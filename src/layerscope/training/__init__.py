"""Training: the built-in demo model (:mod:`~layerscope.training.demo`) and the notebook
recipe's classification head in torch and Keras (:mod:`~layerscope.training.head`).

Nothing in the core needs this package; the ``train-head`` command and the demo's training
script do. It sits above :mod:`layerscope.models` (it trains the models defined there).
"""

from layerscope.training.head import save_torch, train_head_keras, train_head_torch

__all__ = ["save_torch", "train_head_keras", "train_head_torch"]
