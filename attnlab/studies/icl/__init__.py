"""One-layer in-context linear regression (Zhang, Frei and Bartlett 2023, arXiv 2306.09927; von
Oswald et al. 2023, arXiv 2212.07677), in the study shape: one run as an experiment
(:data:`NAME`, :data:`DEFAULTS`, :func:`resolve`, :func:`run_experiment`) and
:func:`reproduce` over covariances and seeds (through the one sweep).

A prompt ``E (d+1, N+1)`` holds the examples ``(x_i, y_i)`` as columns, then the query
``(x_q, 0)`` (see :func:`attnlab.tasks.regression_prompts`). The model is the linear form of the
layer with the last column pooled and a linear head: the prediction is

    yhat = v^T E E^T W e_q / N          W (d+1, d+1), v (d+1, 1), e_q = (x_q, 0)

trained on the squared loss ``(yhat - <w, x_q>)^2 / 2``. With ``u`` the last entry of ``v`` and
``W11`` the top-left ``d x d`` block of ``W``, gradient flow from the paper's init reaches
``u W11 = Gamma^-1`` with ``Gamma = (1 + 1/N) Lambda + (tr(Lambda) / N) I_d`` (the closed forms
are in :mod:`.theory`).

- :mod:`.theory`: the closed forms (risk, one GD step, sensitivities);
- :mod:`.experiment`: one run;
- :mod:`.report`: the reproduction and ``results.md``.
"""

from attnlab.studies.icl.experiment import (
    DEFAULTS,
    NAME,
    Run,
    evaluate_predictors,
    make_model,
    paper_init,
    prepare,
    resolve,
    run_experiment,
    scale_inputs,
)
from attnlab.studies.icl.report import (
    LENGTHS,
    SHIFTS,
    TARGETS,
    compare_with_gd,
    reproduce,
    results_markdown,
)
from attnlab.studies.icl.theory import (
    gamma,
    gd_sensitivity,
    layer_sensitivity,
    linear_predict,
    off_block_norm,
    one_step_gd,
    product,
    rel_error,
    risk,
    shift_risk,
)

__all__ = [
    "DEFAULTS",
    "LENGTHS",
    "NAME",
    "SHIFTS",
    "TARGETS",
    "Run",
    "compare_with_gd",
    "evaluate_predictors",
    "gamma",
    "gd_sensitivity",
    "layer_sensitivity",
    "linear_predict",
    "make_model",
    "off_block_norm",
    "one_step_gd",
    "paper_init",
    "prepare",
    "product",
    "rel_error",
    "reproduce",
    "resolve",
    "results_markdown",
    "risk",
    "run_experiment",
    "scale_inputs",
    "shift_risk",
]
