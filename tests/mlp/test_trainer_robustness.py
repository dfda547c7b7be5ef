"""The trainer under stress: divergence, exact resume, a crash mid-run, and Ctrl-C.

- Divergence stops at the first non-finite loss, gradient or parameter, names the step, the
  learning rate and the parameter (or the loss), and leaves the last good checkpoint on disk.
- A run stopped at step k (or crashed after its last periodic checkpoint) and resumed by a new
  trainer, model and optimizer ends bit-identical to an uninterrupted run: parameters and
  history rows, for SGD with mini-batches and for Adam, on the MLP and on the attention model.
- Ctrl-C (SIGINT) in a child process: ``TrainingInterrupted`` carries the path of the checkpoint
  it saved, which loads and has step > 0.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import mlp
from attnlab.models.context_window import ContextWindowModel
from attnlab.tasks import iris_in_context

# --- divergence ------------------------------------------------------------------------------


def _iris(scale: float = 1.0) -> mlp.Dataset:
    split = mlp.load_iris_split(features=4, seed=0)
    return mlp.Dataset(split.X_train * scale, split.y_train)


def test_divergence_names_step_lr_and_parameter_and_keeps_the_last_good_checkpoint(
    tmp_path: Path,
) -> None:
    """Six sane steps, then lr = 1e308: the update overflows a parameter. Every step is
    checkpointed, so the checkpoint on disk must be the one of the step just before."""
    path = tmp_path / "run.npz"
    model = mlp.MLP(4, 8, 3, seed=0)
    trainer = mlp.Trainer(
        model, mlp.SGD(), _iris(scale=1e3), steps=50, lr=lambda t: 1e-6 if t < 6 else 1e308,
        batch_size=30, checkpoint=path, checkpoint_every=1, progress=False,
    )  # fmt: skip
    with np.errstate(all="ignore"), pytest.raises(mlp.TrainingDiverged) as info:
        trainer.run()
    message = str(info.value)
    found = re.search(r"diverged at step (\d+) with learning rate 1e\+308: (.*)", message)
    assert found, message
    failing = int(found.group(1))
    assert failing == 7
    assert re.search(r"parameter '(W1|b1|W2|b2)'", found.group(2)), message
    assert f"the last good checkpoint is {path}" in message
    params, _, meta, _ = mlp.load_checkpoint(path, expected_params=mlp.MLP(4, 8, 3).params)
    assert meta["step"] == failing - 1
    for k, v in params.items():
        assert np.isfinite(v).all(), k
    assert not all(np.isfinite(v).all() for v in model.params.values())  # it did blow up


def test_a_non_finite_loss_names_the_loss_and_the_step(tmp_path: Path) -> None:
    """Finite but huge weights: the logits overflow, the loss is NaN at the first step."""
    model = mlp.MLP(4, 8, 3, seed=0)
    model.params["W1"] *= 1e200
    model.params["W2"] *= 1e200
    trainer = mlp.Trainer(model, mlp.SGD(), _iris(), steps=5, lr=0.5, progress=False)
    trainer.history.rows.append({"step": 0})  # as if evaluated: the first update meets the NaN
    with np.errstate(all="ignore"), pytest.raises(mlp.TrainingDiverged) as info:
        trainer.run()
    assert re.fullmatch(
        r"training diverged at step 1 with learning rate 0\.5: the loss is (nan|inf)",
        str(info.value),
    ), str(info.value)
    assert trainer.step == 0


def test_a_non_finite_evaluation_is_a_divergence() -> None:
    """The evaluation before the first update already meets the overflowing logits."""
    model = mlp.MLP(4, 8, 3, seed=0)
    model.params["W1"] *= 1e200
    model.params["W2"] *= 1e200
    trainer = mlp.Trainer(model, mlp.SGD(), _iris(), steps=5, lr=0.5, progress=False)
    with np.errstate(all="ignore"), pytest.raises(mlp.TrainingDiverged) as info:
        trainer.run()
    assert re.fullmatch(
        r"training diverged by step 0: the evaluation gave non-finite train_loss.*",
        str(info.value),
    ), str(info.value)
    assert trainer.history.rows == []


# --- exact resume ----------------------------------------------------------------------------


def _setup(kind: str) -> tuple[object, mlp.Dataset, mlp.Dataset]:
    if kind == "mlp":
        split = mlp.load_iris_split(features=2, seed=0)
        model = mlp.MLP(2, 8, 3, seed=0)
        return (
            model,
            mlp.Dataset(split.X_train, split.y_train),
            mlp.Dataset(split.X_test, split.y_test),
        )
    task = iris_in_context(n_train=64, n_test=24, context=4, seed=0)
    model = ContextWindowModel(task.d, attention="self", head="mlp", n_classes=3, hidden=8, seed=0)
    return model, task.train, task.test


def _trainer(kind: str, opt: str, steps: int, path: Path, **kwargs: object) -> mlp.Trainer:
    """A fresh model, optimizer and trainer with one fixed configuration."""
    model, train, test = _setup(kind)
    optimizer = mlp.make_optimizer(opt)
    lr = mlp.make_schedule("inverse", 0.1 if opt == "sgd" else 0.01, decay_steps=50)
    options = {"batch_size": 16, "eval_every": 25, "checkpoint_every": 50, "seed": 1, **kwargs}
    return mlp.Trainer(
        model, optimizer, train, steps=steps, lr=lr, test=test, checkpoint=path, progress=False,
        **options,
    )  # fmt: skip


def _assert_same_run(a: mlp.Trainer, b: mlp.Trainer) -> None:
    assert a.step == b.step
    for k in a.model.params:
        assert a.model.params[k].dtype == b.model.params[k].dtype
        assert np.array_equal(a.model.params[k], b.model.params[k]), k
    assert a.history.rows == b.history.rows
    sa, sb = a.optimizer.state_dict(), b.optimizer.state_dict()
    assert set(sa) == set(sb) and all(np.array_equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("opt", ["sgd", "adam"])
@pytest.mark.parametrize("kind", ["mlp", "attention"])
def test_stop_at_100_then_resume_to_200_equals_an_uninterrupted_run(
    tmp_path: Path, kind: str, opt: str
) -> None:
    full = _trainer(kind, opt, 200, tmp_path / "full.npz")
    full.run()

    first = _trainer(kind, opt, 100, tmp_path / "split.npz")
    first.run()
    at_100 = {k: v.copy() for k, v in first.model.params.items()}
    second = _trainer(kind, opt, 200, tmp_path / "split.npz")  # new model, optimizer, trainer
    assert not np.array_equal(second.model.params[next(iter(at_100))], at_100[next(iter(at_100))])
    second.resume(tmp_path / "split.npz")
    assert second.step == 100
    second.run()

    _assert_same_run(full, second)
    assert any(not np.array_equal(at_100[k], second.model.params[k]) for k in at_100)
    assert [r["step"] for r in second.history.rows] == list(range(0, 201, 25))
    assert mlp.load_checkpoint(tmp_path / "split.npz")[2]["step"] == 200


class _Crash(RuntimeError):
    pass


def _crash_at(step: int, schedule):
    def lr(t: int) -> float:
        if t == step:
            raise _Crash(f"simulated crash at step {t}")
        return schedule(t)

    return lr


@pytest.mark.parametrize(("kind", "opt"), [("mlp", "sgd"), ("attention", "adam")])
def test_a_crash_between_checkpoints_resumes_from_the_last_one_bit_identically(
    tmp_path: Path, kind: str, opt: str
) -> None:
    """Checkpoints every 50 steps, rows every 40: a crash at step 160 leaves the step-150
    checkpoint, taken mid-way between two rows; the resumed run still matches the
    uninterrupted one, including the batch-loss average of the row at step 160."""
    options = {"eval_every": 40}
    full = _trainer(kind, opt, 200, tmp_path / "full.npz", **options)
    full.run()

    crashed = _trainer(kind, opt, 200, tmp_path / "crash.npz", **options)
    crashed.schedule = _crash_at(160, crashed.schedule)
    with pytest.raises(_Crash):
        crashed.run()
    assert crashed.step == 160
    assert mlp.load_checkpoint(tmp_path / "crash.npz")[2]["step"] == 150

    resumed = _trainer(kind, opt, 200, tmp_path / "crash.npz", **options)
    resumed.resume(tmp_path / "crash.npz")
    assert resumed.step == 150
    resumed.run()
    _assert_same_run(full, resumed)
    assert "batch_loss" in resumed.history.rows[4] and resumed.history.rows[4]["step"] == 160


# --- Ctrl-C ----------------------------------------------------------------------------------

CHILD = textwrap.dedent(
    """
    import sys

    import mlp

    split = mlp.load_iris_split(features=4, seed=0)
    model = mlp.MLP(4, 16, 3, seed=0)
    trainer = mlp.Trainer(
        model, mlp.SGD(), mlp.Dataset(split.X_train, split.y_train), steps=10**8, lr=0.01,
        batch_size=8, eval_every=10**7, checkpoint=sys.argv[1], checkpoint_every=50,
        progress=False,
    )
    try:
        trainer.run()
    except mlp.TrainingInterrupted as err:
        print(err.checkpoint, trainer.step, flush=True)
        print(err, file=sys.stderr, flush=True)
        sys.exit(130)
    sys.exit(0)
    """
)


def test_ctrl_c_saves_a_checkpoint_and_says_where(tmp_path: Path) -> None:
    path = tmp_path / "run.npz"
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not path.exists():
            assert child.poll() is None, child.communicate()
            assert time.monotonic() < deadline, "no checkpoint within 60 s"
            time.sleep(0.02)
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == 130, (out, err)
    where, step = out.split()
    assert Path(where) == path
    assert re.search(
        rf"interrupted at step {step}; checkpoint saved to {re.escape(str(path))}", err
    )
    params, _, meta, _ = mlp.load_checkpoint(path, expected_params=mlp.MLP(4, 16, 3).params)
    assert meta["step"] == int(step) > 0
    assert all(np.isfinite(v).all() for v in params.values())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.npz"]  # no temporary file left


class _SGDInterruptedMidUpdate(mlp.SGD):
    """SGD that receives SIGINT after updating the first parameter of step ``at``."""

    def __init__(self, at: int) -> None:
        self.at, self.calls = at, 0

    def step(self, params: dict, grads: dict, lr: float) -> None:
        self.calls += 1
        for i, key in enumerate(grads):
            super().step(params, {key: grads[key]}, lr)
            if i == 0 and self.calls == self.at:
                os.kill(os.getpid(), signal.SIGINT)


def test_ctrl_c_in_the_middle_of_an_update_finishes_the_step_before_saving(tmp_path: Path) -> None:
    """The interrupt is handled between steps: the checkpoint holds a whole step (every
    parameter updated, the step counted), so resuming it equals an uninterrupted run."""
    path = tmp_path / "run.npz"
    model, train, _ = _setup("mlp")
    options = {"steps": 20, "lr": 0.1, "batch_size": 16, "seed": 1, "progress": False}
    trainer = mlp.Trainer(model, _SGDInterruptedMidUpdate(at=5), train, checkpoint=path, **options)
    with pytest.raises(mlp.TrainingInterrupted, match=r"interrupted at step 5; checkpoint saved"):
        trainer.run()
    assert mlp.load_checkpoint(path)[2]["step"] == 5

    clean, _, _ = _setup("mlp")
    mlp.Trainer(clean, mlp.SGD(), train, **{**options, "steps": 5}).run()
    params = mlp.load_checkpoint(path, expected_params=clean.params)[0]
    for k in clean.params:
        assert np.array_equal(params[k], clean.params[k]), k

    full, _, _ = _setup("mlp")
    mlp.Trainer(full, mlp.SGD(), train, **options).run()
    resumed_model, _, _ = _setup("mlp")
    resumed = mlp.Trainer(resumed_model, mlp.SGD(), train, checkpoint=path, **options)
    resumed.resume(path)
    resumed.run()
    for k in full.params:
        assert np.array_equal(resumed_model.params[k], full.params[k]), k
