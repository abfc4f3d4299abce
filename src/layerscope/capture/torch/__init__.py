"""PyTorch capture: :class:`TorchAdapter`, the :class:`~layerscope.capture.Adapter` for
``torch.nn.Module`` models, split along its seams:

* :mod:`~layerscope.capture.torch.device`: where the model runs and the flags a pass
  changes and restores (``resolve_device``, ``placed``, ``eval_mode``, ``out_of_place``);
* :mod:`~layerscope.capture.torch.layers`: layer names and the default layers;
* :mod:`~layerscope.capture.torch.model_io`: inputs, the forward call, the scores and targets;
* :mod:`~layerscope.capture.torch.layouts`: token and channels-last outputs as feature maps;
* :mod:`~layerscope.capture.torch.hooks`: the forward hooks and the capturing forward pass;
* :mod:`~layerscope.capture._autograd`: the one backward pass and the one transfer;
* :mod:`~layerscope.capture.torch.guided`: guided backpropagation;
* :mod:`~layerscope.capture.torch.probe`: the perturbation methods' probe;
* :mod:`~layerscope.capture.torch.attention`: every block's attention weights (rollout & co.);
* :mod:`~layerscope.capture.torch.adapter`: the adapter and the one-pass runner.
"""

from __future__ import annotations

from layerscope.capture.torch.adapter import TorchAdapter
from layerscope.capture.torch.device import eval_mode, model_device, model_dtype, out_of_place, placed, resolve_device
from layerscope.capture.torch.guided import guided_relu
from layerscope.capture.torch.layers import default_layers, layer_names, resolve_layers, transformer_blocks
from layerscope.capture.torch.layouts import Layout, infer_layout, patch_size, prefix_tokens
from layerscope.capture.torch.model_io import ModelInputs, check_scores, forward, resolve_targets, select_output
from layerscope.capture.torch.probe import Probe

__all__ = [
    "Layout",
    "ModelInputs",
    "Probe",
    "TorchAdapter",
    "check_scores",
    "default_layers",
    "eval_mode",
    "forward",
    "guided_relu",
    "infer_layout",
    "layer_names",
    "model_device",
    "model_dtype",
    "out_of_place",
    "patch_size",
    "placed",
    "prefix_tokens",
    "resolve_device",
    "resolve_layers",
    "resolve_targets",
    "select_output",
    "transformer_blocks",
]
