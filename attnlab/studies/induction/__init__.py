"""Induction heads on in-context Markov chains (Edelman, Edelman, Goel, Malach, Tsilivis 2024,
"The Evolution of Statistical Induction Heads", arXiv 2402.11004), in the study shape: one run
as an experiment (:data:`NAME`, :data:`DEFAULTS`, :func:`resolve`, :func:`run_experiment`,
:data:`PRELOAD`) and :func:`reproduce` over the models and seeds (through the one sweep).

Two models learn next-token prediction on sequences that each follow their own random Markov
chain: the authors' minimal model (:class:`MinimalModel`: a positional first layer, a linear
second layer, built from the stack's layer), and their two-layer attention-only transformer on
the stack (:func:`make_stack`, its value path in two factors as theirs) with their relative
positions (a vector per offset added to the keys) and, beside it, a bias per offset. Both sit
first on the in-context unigram plateau, then drop towards the Bayes bigram predictor as layer 1
turns to the previous token and layer 2 to the tokens that followed earlier copies of the
current one.

- :mod:`.minimal`: the minimal model;
- :mod:`.transformer`: the two-layer transformer on the stack, its value path in two factors;
- :mod:`.experiment`: one run (options, models, optimizers, probes, the run folder);
- :mod:`.report`: the reproduction, ``results.json``, ``results.md`` and the figures.
"""

from attnlab.studies.induction.experiment import (
    DEFAULTS,
    DROP_KL,
    JUMP_MARGIN,
    MODEL_DEFAULTS,
    MODELS,
    NAME,
    PLATEAU,
    POSITIONS,
    PRELOAD,
    VALUES,
    make_model,
    make_optimizer,
    predict_last,
    prepare,
    probe_scores,
    resolve,
    run_experiment,
    summarize,
)
from attnlab.studies.induction.minimal import MinimalModel
from attnlab.studies.induction.report import (
    KINDS,
    PUBLISHED_BASELINES,
    TARGETS,
    baseline_kl,
    checks,
    reproduce,
    results_markdown,
)
from attnlab.studies.induction.transformer import FactoredValues, decayed, make_stack

__all__ = [
    "DEFAULTS",
    "DROP_KL",
    "JUMP_MARGIN",
    "KINDS",
    "MODELS",
    "MODEL_DEFAULTS",
    "NAME",
    "PLATEAU",
    "POSITIONS",
    "PRELOAD",
    "PUBLISHED_BASELINES",
    "TARGETS",
    "VALUES",
    "FactoredValues",
    "MinimalModel",
    "baseline_kl",
    "checks",
    "decayed",
    "make_model",
    "make_optimizer",
    "make_stack",
    "predict_last",
    "prepare",
    "probe_scores",
    "reproduce",
    "resolve",
    "results_markdown",
    "run_experiment",
    "summarize",
]
