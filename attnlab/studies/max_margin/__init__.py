"""The max-margin study (Tarzanagh et al., "Transformers as Support Vector Machines",
arXiv 2308.16898; "Max-Margin Token Selection in Attention Mechanism", arXiv 2306.13596), in the
study shape: one seed of ``max-margin`` as an experiment (:data:`NAME`, :data:`DEFAULTS`,
:func:`resolve`, :func:`run_experiment`, :func:`load_run`), and :func:`reproduce`, the
reproduction of the papers' figures over seeds (its max-margin runs through the one sweep).

- :mod:`.runs`: the runs (``max-margin`` with ``W``, its ``(K, Q)`` form, ``prompt-norm``) on the
  project's own model and trainer, and the experiment protocol;
- :mod:`.report`: the summaries against the published values and targets, ``results.md``, and
  :func:`reproduce`.
"""

from attnlab.studies.max_margin.report import PUBLISHED, TARGETS, reproduce
from attnlab.studies.max_margin.runs import (
    ALIGNED,
    DEFAULTS,
    GD_LR,
    INIT_MEANING,
    INITS,
    KQ_INITS,
    NAME,
    PRELOAD,
    SETTINGS,
    MaxMarginKQRun,
    MaxMarginRun,
    PromptNormRun,
    describe,
    load_run,
    resolve,
    run_experiment,
    run_max_margin,
    run_max_margin_kq,
    run_prompt_norm,
)

__all__ = [
    "ALIGNED",
    "DEFAULTS",
    "GD_LR",
    "INITS",
    "INIT_MEANING",
    "KQ_INITS",
    "NAME",
    "PRELOAD",
    "PUBLISHED",
    "SETTINGS",
    "TARGETS",
    "MaxMarginKQRun",
    "MaxMarginRun",
    "PromptNormRun",
    "describe",
    "load_run",
    "reproduce",
    "resolve",
    "run_experiment",
    "run_max_margin",
    "run_max_margin_kq",
    "run_prompt_norm",
]
