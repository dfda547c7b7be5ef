"""In-context regression with depth (Ahn, Cheng, Daneshmand and Sra 2023, arXiv 2306.00297): L
linear attention layers on prompts of linear regression learn L steps of preconditioned gradient
descent. A study (:data:`NAME`, :data:`DEFAULTS`, :func:`resolve`, :func:`run_experiment`,
:data:`PRELOAD`, :func:`reproduce`).

- :mod:`.prompts`: the prompts of the authors' two settings (``identity`` and ``rotated``), a
  pure function of ``(seed, step)``;
- :mod:`.forward`: the L-layer linear model in numpy (vectorized and a loop reference) and
  preconditioned gradient descent on the prompt's least squares;
- :mod:`.theory`: the exact population loss of L steps of GD, its optimal rates, the one-layer
  closed forms and the distance to identity;
- :mod:`.optimizers`: Adam then SGD, LAMB's layer-wise trust ratio, and any optimizer in
  coordinates whitened by the training prompts' second moment;
- :mod:`.experiment`: one run, the model (:class:`attnlab.models.regression_stack.
  RegressionStack`, built from the stack's layer) trained on fresh prompts, its run folder;
- :mod:`.report`: every variant, covariance, L and seed through the one sweep, then
  ``results.json``, ``results.md`` and the figures.
"""

from attnlab.studies.icl_depth.experiment import (
    DEFAULTS,
    NAME,
    VARIANTS,
    make_model,
    measure,
    one_layer_target,
    prepare,
    resolve,
    run_experiment,
    schedule,
    switch_step,
)
from attnlab.studies.icl_depth.optimizers import AdamThenSGD, Trust, Whitened, second_moment
from attnlab.studies.icl_depth.report import (
    LAYERS,
    SETTINGS,
    TARGETS,
    checks,
    gd_optimal,
    reproduce,
)

#: Modules a run imports on first use (a sweep's workers start with them imported).
PRELOAD = ("scipy.optimize",)

__all__ = [
    "DEFAULTS",
    "LAYERS",
    "NAME",
    "PRELOAD",
    "SETTINGS",
    "TARGETS",
    "VARIANTS",
    "AdamThenSGD",
    "Trust",
    "Whitened",
    "checks",
    "gd_optimal",
    "make_model",
    "measure",
    "one_layer_target",
    "prepare",
    "reproduce",
    "resolve",
    "run_experiment",
    "schedule",
    "second_moment",
    "switch_step",
]
