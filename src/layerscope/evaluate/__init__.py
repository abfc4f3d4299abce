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
  sanity check (Adebayo et al. 2018).

:func:`evaluate` runs the chosen metrics at every layer of a tour, for several methods, from
one capture per method, with the fully randomised model's maps as a baseline; its
:class:`Evaluation` prints as a table and saves as CSV, Parquet, PNG or SVG.

Importing this package imports no framework; torch is imported by the functions that run a
model.
"""

from __future__ import annotations

from layerscope.evaluate.localisation import (
    boxes_from_masks,
    energy_pointing_game,
    pointing_game,
    upsample_bilinear,
)
from layerscope.evaluate.perturbation import (
    BASELINES,
    ROAD_FRACTIONS,
    DeletionInsertion,
    DropIncrease,
    Road,
    average_drop_increase,
    baseline_input,
    deletion_insertion,
    linear_imputation,
    road,
)
from layerscope.evaluate.sanity import (
    Randomisation,
    cascading_randomisation,
    randomisable_modules,
    randomisation_check,
    randomised_model,
    rank_correlation,
)
from layerscope.evaluate.tour import (
    DEFAULT_METRICS,
    HIGHER_IS_BETTER,
    METRICS,
    Evaluation,
    Plan,
    evaluate,
    plan,
)

__all__ = [
    "BASELINES",
    "DEFAULT_METRICS",
    "HIGHER_IS_BETTER",
    "METRICS",
    "ROAD_FRACTIONS",
    "DeletionInsertion",
    "DropIncrease",
    "Evaluation",
    "Plan",
    "Randomisation",
    "Road",
    "average_drop_increase",
    "baseline_input",
    "boxes_from_masks",
    "cascading_randomisation",
    "deletion_insertion",
    "energy_pointing_game",
    "evaluate",
    "linear_imputation",
    "plan",
    "pointing_game",
    "randomisable_modules",
    "randomisation_check",
    "randomised_model",
    "rank_correlation",
    "road",
    "upsample_bilinear",
]
