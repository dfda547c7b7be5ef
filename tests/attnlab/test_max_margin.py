"""The max-margin experiment as a config -> run folder function, its settings, and the tasks'
fixed head."""

from __future__ import annotations

import json

import numpy as np
import pytest

from attnlab.models.context_window import ContextWindowModel
from attnlab.studies.max_margin import (
    DEFAULTS,
    SETTINGS,
    load_run,
    resolve,
    run_experiment,
    run_max_margin,
)
from attnlab.tasks import fixed_head, iris_in_context, max_margin, prompt_norm
from mlp.train.folders import RunFolderError, load_arrays, load_model


@pytest.mark.parametrize("init", ["zero", "uniform"])
def test_run_experiment_metrics_are_run_max_margins(tmp_path, init):
    config = {"seed": 3, "steps": 300, "init": init}
    metrics = run_experiment(config, tmp_path / "run", progress=False)
    run = run_max_margin(3, steps=300, init=init)
    assert metrics == {
        "correlation": run.correlation[-1],
        "correlation_ge_0.99": bool(run.correlation[-1] >= 0.99),
        "probability": run.probability[-1],
        "norm": run.norm[-1],
        "settled": run.settled,
        "stop_reason": "completed",
    }
    out = tmp_path / "run"
    assert json.loads((out / "metrics.json").read_text()) == metrics
    config = json.loads((out / "config.json").read_text())
    assert {k: config[k] for k in DEFAULTS} == {**DEFAULTS, "seed": 3, "steps": 300, "init": init}
    assert config["settings"] == SETTINGS["max-margin"]
    curves = load_arrays(out / "curves.npz")
    np.testing.assert_array_equal(curves["correlation"], run.correlation)
    np.testing.assert_array_equal(curves["norm"], run.norm)
    assert curves["probability"].shape == (301,)
    # the run folder rebuilds the trained model: W and the fixed head v
    model, _ = load_model(out, lambda cfg: ContextWindowModel(**cfg))
    np.testing.assert_array_equal(model.params["W"], run.model.params["W"])
    np.testing.assert_array_equal(model.params["v"][:, 0], max_margin(seed=3).info["v"])
    assert (out / "correlation.png").stat().st_size > 0


@pytest.mark.parametrize("textbook", [False, True])
def test_load_run_gives_back_the_run(tmp_path, textbook):
    config = {"seed": 2, "steps": 120, "init": "uniform", "textbook_backward": textbook}
    run_experiment(config, tmp_path / "run", progress=False)
    loaded = load_run(tmp_path / "run")
    run = run_max_margin(2, steps=120, init="uniform", textbook_backward=textbook)
    for name in ("correlation", "probability", "norm", "selected", "optimal"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(run, name), err_msg=name)
    assert (loaded.seed, loaded.settled, loaded.stop_reason) == (2, run.settled, "completed")
    np.testing.assert_array_equal(loaded.svm.solution, run.svm.solution)
    assert loaded.textbook_backward is textbook and loaded.model.textbook_backward is textbook
    np.testing.assert_array_equal(loaded.model.params["W"], run.model.params["W"])


def test_load_run_refuses_curves_that_do_not_fit(tmp_path):
    run_experiment({"seed": 0, "steps": 30}, tmp_path / "run", progress=False)
    curves = load_arrays(tmp_path / "run" / "curves.npz")
    np.savez(tmp_path / "run" / "curves.npz", **{**curves, "norm": curves["norm"][:-1]})
    with pytest.raises(RunFolderError, match=r"curves.npz: expected .* of shape \(31,\)"):
        load_run(tmp_path / "run")


def test_run_experiment_passes_textbook_backward(tmp_path):
    config = {"seed": 4, "steps": 2000, "textbook_backward": True}
    metrics = run_experiment(config, tmp_path, progress=False)
    assert metrics["correlation"] == run_max_margin(4, textbook_backward=True).correlation[-1]
    assert metrics["correlation"] < 0.99  # the textbook backward drifts once saturated


@pytest.mark.parametrize(
    ("config", "error", "match"),
    [
        ({"iterations": 5}, ValueError, r"config: unknown option\(s\) \['iterations'\]"),
        ({"steps": 0}, ValueError, "steps: expected a positive integer, received 0"),
        ({"lr": -1.0}, ValueError, "lr: expected a positive finite number"),
        ({"init": "small"}, ValueError, "init: expected one of 'zero', 'uniform'"),
        ({"seed": -1}, ValueError, "seed: expected a non-negative integer"),
        ({"textbook_backward": "yes"}, TypeError, "textbook_backward: expected True or False"),
        (["seed"], TypeError, "config: expected a mapping"),
    ],
)
def test_resolve_refuses_bad_options_by_name(config, error, match):
    with pytest.raises(error, match=match):
        resolve(config)


def test_defaults_are_the_settings():
    assert resolve({}) == DEFAULTS
    assert DEFAULTS["steps"] == SETTINGS["max-margin"]["steps"] == 2000
    assert DEFAULTS["lr"] == SETTINGS["max-margin"]["lr"] == 0.1
    run = run_max_margin(0, steps=1)
    s = SETTINGS["max-margin"]
    assert (run.model.attention, run.model.pool, run.model.head) == (
        s["attention"],
        s["pool"],
        s["head"],
    )


@pytest.mark.parametrize(
    ("task", "attention", "trainable"),
    [
        (max_margin(seed=2), "cross", ["W"]),
        (max_margin(seed=2), "cross-kq", ["WK", "WQ"]),
        (prompt_norm(), "prompt", ["p"]),
    ],
)
def test_fixed_head_sets_v_and_returns_the_other_keys(task, attention, trainable):
    model = ContextWindowModel(task.d, attention=attention, head="linear")
    assert fixed_head(task, model) == trainable
    np.testing.assert_array_equal(model.params["v"], task.info["v"][:, None])
    assert not np.shares_memory(model.params["v"], task.info["v"])


def test_fixed_head_keeps_the_dtype_and_fixes_nothing_without_a_head_vector():
    task = max_margin()
    model = ContextWindowModel(task.d, attention="cross", dtype=np.float32)
    assert fixed_head(task, model) == ["W"]
    assert model.params["v"].dtype == np.float32
    mlp_head = ContextWindowModel(task.d, attention="cross", head="mlp")
    assert fixed_head(task, mlp_head) == list(mlp_head.params)
    iris = iris_in_context(n_train=6, n_test=3, context=4)
    model = ContextWindowModel(iris.d, attention="self", head="linear", n_classes=3)
    before = model.params["v"].copy()
    assert fixed_head(iris, model) == ["W", "v"]
    np.testing.assert_array_equal(model.params["v"], before)


def test_fixed_head_refuses_a_head_of_several_classes():
    task = max_margin()
    model = ContextWindowModel(task.d, attention="cross", n_classes=3)
    with pytest.raises(ValueError, match=r"expected a linear head v of shape \(d=10, 1\)"):
        fixed_head(task, model)
