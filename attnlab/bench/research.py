"""Part ``research``: the trainer's whole update at the sizes the studies train at, against the
same update in PyTorch autograd, in one process (float64; at the default thread count, where
the targets are, and on the pinned count: one thread unless ``--threads`` says otherwise).

One update is what :class:`mlp.train.Trainer` does per step: ``trainer.batch(step)`` (a
mini-batch of the data set, or a stream's fresh prompts), then ``trainer._update(batch, lr)``
(``loss_and_grads``, the divergence checks, the optimizer's update). The PyTorch side
(:func:`attnlab.bench.references.torch_training`) takes the same batches, the same learning
rates and the same update on a copy of the same initial parameters; before any timing, the two
must agree on the loss and gradients of the first batch and on the first updates. Both then
train as in a run, step after step; after as many updates as the study's run has, both start
again from the initial parameters (so a long timing never trains past the run's end).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from attnlab.bench.plan import Options
from attnlab.bench.references import (
    demo_loss,
    icl_loss,
    max_margin_loss,
    max_rel_error,
    torch_training,
)
from attnlab.bench.timing import at_settings, rounds_info, summary, time_round_robin
from attnlab.studies import attention, icl
from mlp.train.trainer import Trainer


@dataclass(frozen=True)
class Study:
    """A research size: ``prepare(seed)`` builds the study's trainer (and model) as its runs do,
    ``loss`` is the same model in PyTorch, ``target``: whether the ratio has a target."""

    prepare: Callable[[int], Trainer]
    loss: Callable[..., Any]
    target: bool


#: The research sizes, in the report's order.
STUDIES = {
    "demo": Study(lambda seed: attention.prepare({"seed": seed}).trainer, demo_loss, True),
    "max-margin": Study(
        lambda seed: attention.prepare({"task": "max-margin", "seed": seed}).trainer,
        max_margin_loss,
        True,
    ),
    "in-context regression": Study(
        lambda seed: icl.prepare({"seed": seed}).trainer, icl_loss, False
    ),
}
#: Updates compared before timing (parameters after each, relative to their change).
CHECK_UPDATES = 3


def describe(trainer: Trainer) -> dict[str, Any]:
    """The model, batch and update of ``trainer``, for the report."""
    model = trainer.model
    batch = trainer.batch(0)
    Z = batch.inputs.get("Z")
    return {
        **{k: model.config[k] for k in ("attention", "scores", "pool", "head", "loss")},
        "hidden": model.config["hidden"] if model.config["head"] == "mlp" else None,
        "n": batch.X.shape[0],
        "d": batch.X.shape[1],
        "c": batch.X.shape[2],
        "j": None if Z is None else Z.shape[2],
        "optimizer": getattr(trainer.optimizer, "name", type(trainer.optimizer).__name__),
        "lr": trainer.schedule(0),
        "trained": list(trainer.trainable),
        "steps": trainer.steps,
    }


def cycling(update: Callable[[int], object], reset: Callable[[], None], period: int) -> Callable:
    """A function doing ``update(0)``, ``update(1)``, ... at each call, and ``reset()`` then
    ``update(0)`` again after ``period`` updates."""
    step = [0]

    def call() -> None:
        if step[0] == period:
            reset()
            step[0] = 0
        if update(step[0]) is None:
            raise RuntimeError(f"the update at step {step[0]} stopped training")
        step[0] += 1

    return call


def _ours(trainer: Trainer) -> tuple[Callable[[int], float | None], Callable[[], None]]:
    """The trainer's update of step ``s`` and a reset to its parameters and optimizer state
    now."""
    params, opt = trainer.model.params, trainer.optimizer
    init = {k: v.copy() for k, v in params.items()}
    state = {k: np.copy(v) for k, v in opt.state_dict().items()}

    def update(s: int) -> float | None:
        return trainer._update(trainer.batch(s), trainer.schedule(s))

    def reset() -> None:
        for k, v in init.items():
            params[k] = v.copy()
        opt.load_state_dict({k: np.copy(v) for k, v in state.items()})

    return update, reset


def check_agree(trainer: Trainer, loss: Callable[..., Any]) -> tuple[Any, dict[str, float]]:
    """The PyTorch training of ``trainer`` (:func:`torch_training`), after checking that it
    gives the library's loss and gradients on the first batch and its parameters after the
    first :data:`CHECK_UPDATES` updates; both are back at their initial state after. Returns it
    and the relative errors; ``AssertionError`` above 1e-10."""
    ours, reset = _ours(trainer)
    ref = torch_training(trainer, loss)
    batch = trainer.batch(0)
    value, grads = trainer.model.loss_and_grads(batch.X, batch.y, **batch.inputs)
    expected = (value, {k: grads[k] for k in trainer.trainable})
    errors = {"loss_and_grads": max_rel_error(ref.loss_and_grads(batch), expected)}
    init = {k: trainer.model.params[k].copy() for k in trainer.trainable}
    err = 0.0
    for s in range(CHECK_UPDATES):
        ours(s)
        ref.step(s)
        for k, w0 in init.items():  # the change of each parameter so far
            change = trainer.model.params[k] - w0
            got = ref.params[k].detach().numpy() - w0
            err = max(
                err, float(np.max(np.abs(got - change)) / max(np.max(np.abs(change)), 1e-300))
            )
    errors["updates"] = err
    reset()
    ref.reset()
    for name, e in errors.items():
        if not e <= 1e-10:
            raise AssertionError(f"the PyTorch {name} differ from attnlab's: {e:.2e} > 1e-10")
    return ref, errors


def measure(opts: Options) -> dict[str, Any]:
    """Each of :data:`STUDIES`: attnlab's update and (unless ``opts.torch_note``) PyTorch's, at
    the default thread count and on ``opts.pinned`` threads, timed in turn; the ratios of their
    medians at each setting."""
    labels = ("default", str(opts.pinned))
    rows = []
    for name, study in STUDIES.items():
        trainer = study.prepare(opts.seed)
        row: dict[str, Any] = {"name": name, **describe(trainer), "target": study.target}
        ours, reset = _ours(trainer)
        updates = {"attnlab": cycling(ours, reset, trainer.steps)}
        if opts.torch_note is None:
            ref, row["max_rel_error"] = check_agree(trainer, study.loss)
            updates["torch"] = cycling(ref.step, ref.reset, trainer.steps)
        fns, settings = at_settings(updates, (None, opts.pinned))
        sizes = opts.sizes
        timing = time_round_robin(fns, sizes.repeats, sizes.autorange, settings, opts.quiet)
        row["times"] = {
            lab: {k: summary(timing.times[f"{k}@{lab}"]) for k in updates} for lab in labels
        }
        row["vs_torch"] = {
            lab: t["attnlab"]["median"] / t["torch"]["median"] if "torch" in t else None
            for lab, t in row["times"].items()
        }
        row["calls_per_sample"] = timing.number
        row["rounds"] = rounds_info(timing)
        rows.append(row)
    return {"rows": rows, "pinned": opts.pinned, "torch_note": opts.torch_note}
