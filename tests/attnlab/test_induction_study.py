"""The induction-head study: the minimal model (against a loop over its formulas, and its
gradients by central differences), the transformer at the authors' initialization and its
factored values' gradients, the options, one run of each model, a small reproduction's
``results.json``, and the figures."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from gradcheck import check_gradient

from attnlab.models.stack import AttentionStack
from attnlab.plots.induction import (
    KLPanel,
    ProbePanel,
    plot_attention_moments,
    plot_kl_curves,
    plot_probes,
)
from attnlab.studies.induction import (
    DEFAULTS,
    MinimalModel,
    decayed,
    make_stack,
    reproduce,
    resolve,
    run_experiment,
    summarize,
)
from mlp.train.folders import load_arrays
from mlp.train.sweep import plan_sweep

SMALL = {"steps": 30, "context": 12, "n_curve": 20, "n_test": 40, "n_probe": 8}


def minimal_loop(v: np.ndarray, W: np.ndarray, x: np.ndarray, k: int) -> np.ndarray:
    """The minimal model straight from its formulas, one sequence and position at a time:
    ``a_{s,t} = softmax_{s <= t} v[t - s]``, ``f_t = sum_s a_{s,t} e_s``,
    ``z_t = sum_{s <= t} (e_t^T W f_s) e_s``; logits ``(n, k, c)``."""
    n, c = x.shape
    z = np.zeros((n, k, c))
    for i in range(n):
        e = np.eye(k)[x[i]]  # (c, k): e_t as rows
        f = np.zeros((c, k))
        for t in range(c):
            scores = np.array([v[t - s] for s in range(t + 1)])
            a = np.exp(scores - scores.max())
            a /= a.sum()
            f[t] = sum(a[s] * e[s] for s in range(t + 1))
        for t in range(c):
            z[i, :, t] = sum((e[t] @ W @ f[s]) * e[s] for s in range(t + 1))
    return z


@pytest.mark.parametrize("k", [2, 3])
def test_the_minimal_model_computes_its_formulas(k: int) -> None:
    rng = np.random.default_rng(0)
    model = MinimalModel(states=k, context=10)
    model.params["v"] = rng.standard_normal(10)
    model.params["W"] = rng.standard_normal((k, k))
    x = rng.integers(0, k, size=(3, 9))
    z = model.forward(x)
    assert z.shape == (3, k, 9)
    np.testing.assert_allclose(z, minimal_loop(model.params["v"], model.params["W"], x, k),
                               rtol=1e-12, atol=1e-12)  # fmt: skip
    S1, S2 = model.attention_weights(x)
    assert S1.shape == S2.shape == (3, 1, 9, 9)
    np.testing.assert_allclose(S1.sum(axis=2), 1.0)  # layer 1: a distribution over s <= t
    assert np.all(np.triu(S1[:, 0].transpose(0, 2, 1), 1) == 0)  # no weight on s > t


def test_the_minimal_model_has_exact_gradients() -> None:
    rng = np.random.default_rng(1)
    model = MinimalModel(states=3, context=12)
    model.params["v"] = 0.5 * rng.standard_normal(12)
    model.params["W"] = 0.3 * rng.standard_normal((3, 3))
    x = rng.integers(0, 3, size=(4, 10))
    y = rng.integers(0, 3, size=(4, 10))
    loss, grads = model.loss_and_grads(x, y)
    assert set(grads) == {"v", "W"} and np.isfinite(loss)
    assert np.all(grads["v"][10:] == 0)  # offsets the sequences do not reach
    for key in ("v", "W"):
        check_gradient(lambda _: model.loss_and_grads(x, y)[0], model.params[key], grads[key],
                       name=key)  # fmt: skip


def test_the_minimal_model_stores_its_layers_under_the_stacks_keys() -> None:
    model = MinimalModel(states=2, context=8)
    p = model.layer_params()
    assert {k: v.shape for k, v in p.items()} == {
        "W0": (1, 2, 2), "V0": (1, 2, 2), "R0": (1, 8), "W1": (1, 4, 4), "V1": (1, 4, 4),
    }  # fmt: skip
    assert np.all(p["W0"] == 0) and np.array_equal(p["V0"][0], np.eye(2))
    np.testing.assert_array_equal(p["W1"][0, 2:, :2], 7 * model.params["W"].T)  # (c - 1) W^T
    assert model.jump_margin() == 0.0
    with pytest.raises(ValueError, match=r"X: expected tokens in 0\.\.1"):
        model.forward(np.array([[0, 2, 1]]))
    with pytest.raises(ValueError, match=r"X: expected 2\.\.context=8 tokens"):
        model.forward(np.zeros((1, 9), dtype=int))


def test_the_stack_starts_at_the_authors_initialization() -> None:
    model = make_stack(16, 2, 100, "relative-key", seed=3)
    p = model.params
    for key in ("E", "U", "WK0", "WQ1", "Vv0", "RK0"):
        assert 0.015 < p[key].std() < 0.025, key
    assert 0.007 < p["Vo1"].std() < 0.013 and "V0" not in p
    # the stack computes with V = Vo Vv: entries of std 0.01 0.02 sqrt(16)
    V0 = model.stack_params()["V0"]
    np.testing.assert_allclose(V0[0], p["Vo0"][0] @ p["Vv0"][0])
    assert 0.0005 < V0.std() < 0.0012
    assert np.all(p["g0"] == 1) and np.all(p["bF"] == 0)
    assert sorted(decayed(model)) == ["U", "Vo0", "Vo1", "Vv0", "Vv1", "WK0", "WK1", "WQ0", "WQ1"]
    single = make_stack(16, 2, 100, "relative", seed=3, values="single")
    assert isinstance(single, AttentionStack) and "R0" in single.params
    np.testing.assert_array_equal(single.params["V0"], V0)  # the same draws
    assert sorted(decayed(single)) == ["U", "V0", "V1", "WK0", "WK1", "WQ0", "WQ1"]


def test_the_factored_values_have_exact_gradients() -> None:
    rng = np.random.default_rng(4)
    model = make_stack(4, 3, 8, "relative-key", seed=5, init_std=0.5)
    x, y = rng.integers(0, 3, size=(3, 8)), rng.integers(0, 3, size=(3, 8))
    loss, grads = model.loss_and_grads(x, y)
    assert set(grads) == set(model.params)
    assert loss == model.stack.loss_and_grads(x, y)[0]  # the stack with V = Vo Vv
    np.testing.assert_array_equal(model.forward(x), model.stack.forward(x))
    for key in ("Vo0", "Vv0", "Vo1", "Vv1", "WK1", "RK0", "E"):
        check_gradient(lambda _: model.loss_and_grads(x, y)[0], model.params[key], grads[key],
                       name=key, max_entries=10)  # fmt: skip


def test_resolve_fills_each_models_defaults_and_names_bad_options() -> None:
    stack, minimal = resolve({}), resolve({"model": "minimal", "positions": "relative"})
    assert (stack["steps"], stack["batch_size"], stack["lr"]) == (2000, 64, 5e-4)
    assert (stack["weight_decay"], stack["clip_norm"], stack["v_lr"]) == (0.1, 0.0, None)
    assert stack["values"] == "factored" and minimal["values"] is None
    assert (minimal["steps"], minimal["batch_size"], minimal["lr"]) == (200, 128, 0.01)
    assert minimal["positions"] is None and minimal["d"] is None and minimal["v_lr"] == 3.0
    assert resolve(stack) == stack and resolve(minimal) == minimal
    for bad, match in [
        ({"bogus": 1}, "unknown \\['bogus'\\]"),
        ({"model": "gpt"}, "model"),
        ({"positions": "absolute"}, "positions"),
        ({"context": 7}, "context: expected an even number"),
        ({"n_curve": 50, "n_test": 40}, "n_curve: expected at most n_test=40"),
        ({"snapshot_every": 30}, "snapshot_every: expected a multiple of record_every=20"),
        ({"clip_norm": -1.0}, "clip_norm: expected a finite number >= 0"),
        ({"values": "shared"}, "values"),
        ({"model": "minimal", "v_lr": 0}, "v_lr"),
    ]:
        with pytest.raises(ValueError, match=match):
            resolve(bad)


def test_a_grid_over_positions_runs_the_minimal_model_once_per_seed() -> None:
    plan = plan_sweep("attnlab.studies.induction",
                      {"model": ["minimal", "stack"], "positions": ["relative-key", "relative"]},
                      seeds=[0, 1])  # fmt: skip
    kinds = [(r.config["model"], r.config["positions"], r.config["seed"]) for r in plan.runs]
    assert sorted(kinds, key=str) == sorted(
        [("minimal", None, s) for s in (0, 1)]
        + [("stack", p, s) for p in ("relative-key", "relative") for s in (0, 1)],
        key=str,
    )


def test_summarize_finds_the_plateau_the_drop_and_the_jump() -> None:
    steps = np.arange(0, 1001, 100)
    kl = np.array([0.2, 0.09, 0.08, 0.07, 0.07, 0.06, 0.07, 0.045, 0.03, 0.02, 0.02])
    margins = np.concatenate([np.linspace(0, 1.9, 60), np.linspace(2.0, 4, 41)])
    out = summarize(steps, kl, margins)
    assert out["plateau_kl"] == pytest.approx(np.mean([0.08, 0.07, 0.07, 0.06]))
    assert out["drop_step"] == 700 and out["jump_step"] == 60
    never = summarize(np.arange(3), np.full(3, 0.1), np.zeros(3))
    assert never == {"plateau_kl": None, "drop_step": None, "jump_step": None}


@pytest.mark.parametrize("model", ["minimal", "stack"])
def test_one_run_writes_its_folder(tmp_path: Path, model: str) -> None:
    extra = {"snapshot_every": 20, "record_every": 10} if model == "stack" else {}
    m = run_experiment({"model": model, **SMALL, **extra}, tmp_path / "run")
    assert m["stop_reason"] == "completed" and m["steps"] == 30
    names = {"config.json", "params.npz", "history.csv", "curves.npz", "metrics.json"}
    names |= {"snapshots.npz"} if model == "stack" else set()
    assert {p.name for p in (tmp_path / "run").iterdir()} == names
    params = load_arrays(tmp_path / "run" / "params.npz")
    curves = load_arrays(tmp_path / "run" / "curves.npz")
    assert 0 < m["final_kl"] < 1 and 0 <= m["prev_token_score"] <= 1
    assert set(m["baselines"]) == {"uniform", "unigram", "bayes"}
    header = (tmp_path / "run" / "history.csv").read_text().splitlines()[0].split(",")
    assert {"step", "test_loss", "test_kl", "prev_token_score"} <= set(header)
    if model == "minimal":
        assert set(params) == {"W0", "V0", "R0", "W1", "V1"}
        assert curves["margin"].shape == (31,) and "jump_step" in m
        assert list(curves["step"]) == list(range(0, 31, 5))
    else:
        assert {"E", "U", "WK0", "WQ0", "V0", "RK0", "WK1", "g1", "gF"} <= set(params)
        assert not {"Vo0", "Vv0"} & set(params)  # the stack's keys: the products
        assert 0 <= m["induction_score"] <= 1 and "jump_step" not in m
        snaps = load_arrays(tmp_path / "run" / "snapshots.npz")
        assert snaps["S"].shape == (3, 2, 1, 12, 12) and list(snaps["steps"]) == [0, 20, 30]
        assert snaps["tokens"].shape == (12,)


def test_a_small_reproduction_writes_the_results_the_issue_lists(tmp_path: Path) -> None:
    out = reproduce(tmp_path, seeds=[2], workers=0, n_baseline=500, overrides=SMALL)
    results = json.loads((tmp_path / "results.json").read_text())
    assert set(results) == {"baselines", "runs"}
    assert set(results["baselines"]) == {"uniform", "unigram", "bayes"}
    common = {"model", "seed", "run_dir", "steps", "kl", "final_kl"}
    stack = {"positions", "plateau_kl", "drop_step", "prev_token_score", "induction_score"}
    kinds = [(r["model"], r.get("positions")) for r in results["runs"]]
    assert kinds == [("minimal", None), ("stack", "relative-key"), ("stack", "relative")]
    for r in results["runs"]:
        want = common | ({"jump_step"} if r["model"] == "minimal" else stack)
        assert set(r) == want and r["seed"] == 2
        assert len(r["steps"]) == len(r["kl"]) and r["steps"][-1] == 30
        assert (tmp_path / r["run_dir"] / "metrics.json").is_file()
    for name in ("results.md", "kl.png", "probes.png", "attention_relative-key.png",
                 "attention_relative.png", "attention_relative-key.gif"):  # fmt: skip
        assert (tmp_path / name).stat().st_size > 1000, name
    assert out["wall_s"] > 0 and out["runs"] == results["runs"]
    assert set(DEFAULTS) >= set(SMALL)


def test_the_figures_take_arrays_and_name_bad_shapes(tmp_path: Path) -> None:
    steps = np.arange(0, 101, 10)
    kl = [(s, steps, 0.2 * np.exp(-steps / (30 + 10 * s))) for s in range(2)]
    panel = KLPanel("a model", kl, {0: 40, 1: None}, "drop", (20, 50))
    path = plot_kl_curves([panel, panel], {"uniform": 0.2, "bayes": 0.01}, tmp_path / "kl.png")
    assert path.read_bytes()[:4] == b"\x89PNG"
    probes = ProbePanel("a model", {"score": kl}, lines={"chance": 0.5})
    assert plot_probes([probes], tmp_path / "p.png").stat().st_size > 1000
    S = np.random.default_rng(0).dirichlet(np.ones(6), size=(3, 2, 6)).transpose(0, 1, 3, 2)
    plot_attention_moments(S, ["a", "b", "c"], tmp_path / "m.png", window=4)
    with pytest.raises(ValueError, match=r"S: expected shape \(m, l, c, c\)"):
        plot_attention_moments(S[0], ["a"], tmp_path / "m.png")
    with pytest.raises(ValueError, match="labels: expected 3 labels, received 2"):
        plot_attention_moments(S, ["a", "b"], tmp_path / "m.png")
