"""Is the map right? Faithfulness and sanity metrics, per layer.

Pure functions over a model, a preprocessed batch and maps (one layer's ``(N, h, w)`` or a
list of them), batched on the model's device; each docstring names its paper and states its
definition and conventions:

* :func:`deletion_insertion` — deletion and insertion AUC (Petsiuk et al. 2018, RISE);
* :func:`road` — ROAD with noisy linear imputation, MoRF and LeRF, combined (Rong et al. 2022);
* :func:`average_drop_increase` — Average Drop / Average Increase (Chattopadhay et al. 2018);
* :func:`pointing_game`, :func:`energy_pointing_game` — where the object's mask is known
  (Zhang et al. 2016; Wang et al. 2020);
* :func:`randomisation_check`, :func:`rank_correlation` — the cascading model-randomisation
  sanity check (Adebayo et al. 2018);
* :func:`rank_layers` — "which layer should I look at?": an explanation's layers ranked per
  image by one cheap metric of the registry (ROAD at 10/30/50 % by default), all layers in
  the same forward passes (``rank.py``).
* :func:`evaluate_boxes` — for a detector: the pointing game and the energy in each
  ground-truth box, and deletion/insertion on its detection's score (``boxes.py``).

Each metric of the suite is a :class:`Metric` in a registry (``_registry.py``): its module
calls :func:`register`. :func:`evaluate` (``suite.py``) runs the chosen metrics at every layer,
for several methods, from one capture per method, with the fully randomised model's maps as
a baseline; its :class:`Evaluation` (``result.py``) prints as a table and saves as CSV,
Parquet, PNG or SVG (``report.py``, ``plot.py``). The work is split into chunks of images
(``_chunks.py``), scored one after the other here or, with ``engine="ray"``, by Ray actors
that each hold the model (``ray_engine.py``): the same values either way.

Importing this package imports no framework; torch is imported by the functions that run a
model.
"""

from __future__ import annotations

from layerscope.evaluate._registry import (
    RANDOM,
    TRAINED,
    Batch,
    Column,
    Metric,
    check_metrics,
    default_metrics,
    get_metric,
    register,
    registered,
    unregister,
)
from layerscope.evaluate.boxes import (
    BOX_METRICS,
    MatchedDetection,
    box_energy,
    box_pointing_game,
    evaluate_boxes,
    masks_from_boxes,
)
from layerscope.evaluate.deletion import (
    BASELINES,
    DeletionInsertion,
    baseline_input,
    deletion_insertion,
)
from layerscope.evaluate.drop import DropIncrease, average_drop_increase
from layerscope.evaluate.localisation import (
    boxes_from_masks,
    energy_pointing_game,
    pointing_game,
    upsample_bilinear,
)
from layerscope.evaluate.rank import (
    DEFAULT_RANK_METRIC,
    LayerRanking,
    best_layer_counts,
    rank_layers,
    rank_metrics,
    rank_passes,
)
from layerscope.evaluate.result import Evaluation, Plan
from layerscope.evaluate.road import ROAD_FRACTIONS, Road, linear_imputation, road
from layerscope.evaluate.sanity import (
    Randomisation,
    cascading_randomisation,
    randomisable_modules,
    randomisation_check,
    randomised_model,
    rank_correlation,
)
from layerscope.evaluate.suite import evaluate, evaluate_batches, plan

__all__ = [
    "BASELINES",
    "BOX_METRICS",
    "DEFAULT_RANK_METRIC",
    "RANDOM",
    "ROAD_FRACTIONS",
    "TRAINED",
    "Batch",
    "Column",
    "DeletionInsertion",
    "DropIncrease",
    "Evaluation",
    "LayerRanking",
    "MatchedDetection",
    "Metric",
    "Plan",
    "Randomisation",
    "Road",
    "average_drop_increase",
    "baseline_input",
    "best_layer_counts",
    "box_energy",
    "box_pointing_game",
    "boxes_from_masks",
    "cascading_randomisation",
    "check_metrics",
    "default_metrics",
    "deletion_insertion",
    "energy_pointing_game",
    "evaluate",
    "evaluate_batches",
    "evaluate_boxes",
    "get_metric",
    "linear_imputation",
    "masks_from_boxes",
    "plan",
    "pointing_game",
    "randomisable_modules",
    "randomisation_check",
    "randomised_model",
    "rank_correlation",
    "rank_layers",
    "rank_metrics",
    "rank_passes",
    "register",
    "registered",
    "road",
    "unregister",
    "upsample_bilinear",
]
