"""The icl-depth study: its options, the measures of a trained model (held against parameters
whose values the theory knows), the checks of the issue, a short run through the run-folder
layer, and the reproduction through the one sweep (reduced)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from attnlab.studies import EXPERIMENTS
from attnlab.studies.icl_depth import (
    DEFAULTS,
    NAME,
    AdamThenSGD,
    Trust,
    Whitened,
    checks,
    gd_optimal,
    make_model,
    measure,
    one_layer_target,
    prepare,
    prompts,
    reproduce,
    resolve,
    run_experiment,
    schedule,
    second_moment,
    switch_step,
    theory,
)
from mlp.train import Adam
from mlp.train.folders import load_arrays, read_json
from mlp.train.sweep import load_experiment

D, N = 5, 20


def test_the_study_is_in_the_table_of_experiments() -> None:
    assert EXPERIMENTS["icl-depth"] == "attnlab.studies.icl_depth"
    name, _, module = load_experiment("icl-depth", EXPERIMENTS)
    assert name == NAME == "icl-depth" and module.DEFAULTS is DEFAULTS


@pytest.mark.parametrize(
    "config, match",
    [
        ({"variant": "full", "L": 1}, "L: variant 'full' needs L >= 2"),
        ({"variant": "both"}, "variant: expected one of 'full', 'gd'"),
        ({"covariance": "spread"}, "covariance: expected one of"),
        ({"covariance": "rotated", "d": 4}, "d: the rotated covariance is defined for d = 5"),
        ({"L": 0}, "L: expected a positive integer"),
        ({"beta2": 1.0}, r"beta2: expected a number in \[0, 1\)"),
        ({"clip_norm": -1}, "clip_norm: expected a positive finite number"),
        ({"sgd_from": 1.0}, r"sgd_from: expected a fraction of the run in \(0, 1\)"),
        ({"sgd_from": 0.0}, "sgd_from: expected a fraction"),
        ({"sgd_from": 1e-5}, "at least one update"),
        ({"sgd_lr": 0}, "sgd_lr: expected a positive finite number"),
        ({"whiten": 1}, "whiten: expected true or false, received 1"),
        ({"trust": "yes"}, "trust: expected true or false, received 'yes'"),
        ({"average": 1.5}, "average: expected a fraction"),
        ({"lr": 0}, "lr: expected a positive finite number"),
        ({"bogus": 1}, r"options: unknown \['bogus'\]"),
    ],
)
def test_resolve_names_the_bad_option(config: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        resolve(config)


def test_resolve_fills_the_defaults() -> None:
    o = resolve({"L": 3, "variant": "full", "clip_norm": None})
    assert o["L"] == 3 and o["clip_norm"] is None and o["eval_every"] == o["steps"] // 40
    assert set(o) == set(DEFAULTS)


def test_adam_then_sgd_switches_at_its_step_and_the_rate_follows() -> None:
    o = resolve({"steps": 10, "sgd_from": 0.4, "lr": 0.1, "sgd_lr": 0.01, "clip_norm": None})
    rate = schedule(o)
    assert switch_step(o) == 4
    assert [rate(t) for t in (0, 2, 4, 9)] == pytest.approx([0.1, 0.05, 0.01, 0.01])
    assert switch_step(resolve({"sgd_from": None})) == DEFAULTS["steps"]
    opt = AdamThenSGD(Adam(), switch=2)
    params = {"A0": np.ones((2, 2))}
    g = {"A0": np.full((2, 2), 3.0)}
    opt.step(params, g, 0.1)  # Adam's first step: lr * sign(g)
    np.testing.assert_allclose(params["A0"], 0.9, rtol=1e-6)
    opt.step(params, g, 0.1)
    before = params["A0"].copy()
    opt.step(params, g, 0.01)  # plain SGD
    np.testing.assert_allclose(params["A0"], before - 0.03, rtol=1e-12)
    state = opt.state_dict()
    again = AdamThenSGD(Adam(), switch=2)
    again.load_state_dict(state)
    assert again.t == 3 and np.array_equal(again.adam.m["A0"], opt.adam.m["A0"])


def test_whiten_trains_in_the_coordinates_of_the_first_batch() -> None:
    config = {"L": 2, "variant": "full", "covariance": "rotated", "steps": 10, "average": 0.5}
    plain = prepare({**config, "whiten": False})
    white = prepare({**config, "whiten": True, "trust": True})
    assert isinstance(white.trainer.optimizer.inner, Whitened)
    assert isinstance(white.trainer.optimizer.inner.inner, Trust)
    assert isinstance(plain.trainer.optimizer.inner, AdamThenSGD)
    first = prompts.train_batch(0, 0, n=DEFAULTS["batch_size"], covariance="rotated")
    np.testing.assert_allclose(white.trainer.optimizer.inner.S, second_moment(first.X, D))
    assert np.linalg.norm(white.trainer.optimizer.inner.S - white.Sigma) < 0.05 * np.linalg.norm(
        white.Sigma
    )  # an estimate of Sigma from the x alone


def test_the_initial_model_draws_its_own_stream_and_holds_b_zero_for_gd() -> None:
    o = resolve({"L": 2, "variant": "gd", "seed": 4})
    gd = make_model(o)
    full = make_model({**o, "variant": "full"})
    assert not gd.params["B0"].any() and not gd.params["B1"].any()
    np.testing.assert_array_equal(gd.params["A1"], full.params["A1"])
    assert full.params["B0"].std() == pytest.approx(o["init_std"], rel=0.5)
    assert not np.array_equal(full.params["A0"], make_model({**o, "seed": 5}).params["A0"])


@pytest.mark.parametrize("covariance", prompts.COVARIANCES)
def test_measure_of_the_optimal_gd_steps(covariance: str) -> None:
    """``A_l = -a_l Sigma^-1`` at the optimal rates, ``B = 0``: the trained model is the reference
    itself (the same predictions on the same prompts), its ``a`` are the rates and its matrices
    multiples of the identity once whitened."""
    o = resolve({"L": 3, "covariance": covariance, "seed": 1, "n_test": 3000, "chunk": 1000})
    Sigma = prompts.covariance_matrix(covariance, D, 1)
    rates, loss = theory.optimal_rates(3)
    A = -rates[:, None, None] * np.linalg.inv(Sigma)
    m = measure(A, np.zeros_like(A), o, Sigma)
    assert m["test_loss"] == pytest.approx(m["gd_same_prompts"], rel=1e-10)
    assert m["gd_optimal_loss"] == pytest.approx(loss, rel=1e-12)
    np.testing.assert_allclose(m["a"], rates, rtol=1e-10)
    np.testing.assert_allclose(m["dist_A"], 0.0, atol=1e-10)
    assert m["b"] is None and m["dist_B"] is None and "A0_error" not in m
    assert m["population_loss"] == pytest.approx(loss, rel=1e-10)  # exact: no Monte Carlo left
    assert 0 < m["test_loss_se"] < m["test_loss"]


def test_population_loss_of_other_rates_and_of_matrices() -> None:
    o = resolve({"L": 2, "covariance": "rotated", "n_test": 20_000})
    Sigma = prompts.covariance_matrix("rotated", D, 0)
    rates = 1.1 * theory.optimal_rates(2)[0]
    A = -rates[:, None, None] * np.linalg.inv(Sigma)
    m = measure(A, np.zeros_like(A), o, Sigma)
    assert m["population_loss"] == pytest.approx(theory.gd_loss(rates), rel=1e-10)
    E = 0.03 * np.random.default_rng(0).standard_normal((2, D, D))  # off the scalar steps
    m = measure(A + E, np.zeros_like(A), o, Sigma)
    assert max(m["dist_A"]) > 0.01
    assert m["population_loss"] != pytest.approx(theory.gd_loss(m["a"]), rel=1e-6)
    assert m["population_loss"] == pytest.approx(m["test_loss"], rel=0.1)  # 2% standard error


def test_measure_of_full_layers_and_of_one_layer() -> None:
    o = resolve({"L": 2, "variant": "full", "covariance": "rotated", "n_test": 500})
    Sigma = prompts.covariance_matrix("rotated", D, 0)
    R = theory.sqrt_spd(Sigma)
    A = np.stack([-0.5 * np.linalg.inv(Sigma), -np.linalg.inv(Sigma)])
    B = np.stack([0.7 * np.eye(D), np.linalg.inv(R) @ np.diag([1.0, 2, 3, 4, 5]) @ R])
    m = measure(A, B, o, Sigma)
    np.testing.assert_allclose(m["b"], [0.7], rtol=1e-12)  # only the layers below the top
    np.testing.assert_allclose(m["dist_B"], [0.0], atol=1e-12)
    one = resolve({"L": 1, "covariance": "rotated", "n_test": 500})
    target = one_layer_target("rotated", Sigma, N)
    np.testing.assert_allclose(target, -(N / (N + D + 1)) * np.linalg.inv(Sigma), rtol=1e-10)
    m1 = measure((1.01 * target)[None], np.zeros((1, D, D)), one, Sigma)
    assert m1["A0_error"] == pytest.approx(0.01, rel=1e-9)
    np.testing.assert_allclose(one_layer_target("identity", np.eye(D), N), -20 / 26 * np.eye(D))


def _details(variant: str, cov: str, L: int, **values: object) -> dict:
    base = {"variant": variant, "covariance": cov, "L": L, "seed": 0, "dist_B": None}
    return {**base, **values}


def test_checks_hold_and_fail_where_the_issue_says() -> None:
    opt = gd_optimal([1, 2, 3])
    a2, a3 = opt[1]["a"], opt[2]["a"]
    runs = [
        _details("gd", "identity", 1, A0_error=0.005, test_loss=1.16, gd_same_prompts=1.15,
                 a=[0.77], dist_A=[0.001]),
        _details("gd", "rotated", 1, A0_error=0.02, test_loss=1.20, gd_same_prompts=1.15,
                 a=[0.77], dist_A=[0.001]),
        _details("gd", "identity", 2, test_loss=0.37, population_loss=0.37,
                 a=list(np.multiply(a2, [1.05, 0.97])), dist_A=[0.01, 0.04]),
        _details("full", "identity", 3, test_loss=0.0025, gd_same_prompts=0.13,
                 a=a3, dist_A=[0.01, 0.02, 0.02], dist_B=[0.04, 0.01]),
    ]  # fmt: skip
    found = {(c["check"], c["covariance"], c["layers"]): c["ok"] for c in checks(runs, opt)}
    assert found == {
        ("A_0 relative error", "identity", 1): True,
        ("|loss / 1.1538 - 1|", "identity", 1): True,
        ("A_0 relative error", "rotated", 1): False,
        ("|loss / 1.1538 - 1|", "rotated", 1): False,  # 1.20 / 1.1538 - 1 = 4%
        ("|rotated / identity - 1|", "rotated", 1): True,  # 1.20 / 1.16 - 1 = 3.4%
        ("|population loss / optimal GD steps - 1|", "identity", 2): True,  # 2.4%
        ("max dist_A", "identity", 2): True,
        ("max |a / a* - 1| (sorted)", "identity", 2): True,
        ("loss / optimal GD steps", "identity", 3): True,
        ("loss", "identity", 3): False,
        ("max dist_A, dist_B", "identity", 3): False,
    }


def test_a_short_run_writes_its_folder(tmp_path: Path) -> None:
    config = {"L": 2, "variant": "full", "covariance": "rotated", "seed": 2, "steps": 30,
              "batch_size": 16, "n_test": 400, "chunk": 150, "n_history": 50}  # fmt: skip
    m = run_experiment(config, tmp_path / "run", progress=False)
    folder = Path(m["run_dir"])
    assert sorted(p.name for p in folder.iterdir()) == [
        "config.json", "history.csv", "metrics.json", "params.npz"]  # fmt: skip
    cfg = read_json(folder / "config.json")
    assert {k: cfg[k] for k in ("d", "N", "L", "variant", "covariance", "seed")} == {
        "d": 5, "N": 20, "L": 2, "variant": "full", "covariance": "rotated", "seed": 2}  # fmt: skip
    p = load_arrays(folder / "params.npz")
    assert p["A"].shape == p["B"].shape == (2, D, D) and p["Sigma"].shape == (D, D)
    np.testing.assert_allclose(p["Sigma"], prompts.covariance_matrix("rotated", D, 2))
    saved = read_json(folder / "metrics.json")
    assert saved["stop_reason"] == "completed" and saved["steps"] == 30
    assert len(saved["a"]) == len(saved["dist_A"]) == 2 and len(saved["dist_B"]) == 1
    assert np.isfinite(saved["test_loss"]) and saved["test_loss"] < 5.0  # below the start


def test_a_reduced_reproduction_through_the_sweep(tmp_path: Path) -> None:
    small = {"steps": 20, "batch_size": 16, "n_test": 300, "chunk": 300, "n_history": 20}
    results = reproduce(
        tmp_path, seeds=[0], settings={"full": small, "gd": small},
        layers={"full": [2], "gd": [1, 2]}, workers=0,
    )  # fmt: skip
    on_disk = json.loads((tmp_path / "results.json").read_text())
    assert set(on_disk) == {"runs", "gd_optimal"}
    runs = [(r["variant"], r["covariance"], r["layers"]) for r in on_disk["runs"]]
    assert runs == [("full", "identity", 2), ("full", "rotated", 2), ("gd", "identity", 1),
                    ("gd", "identity", 2), ("gd", "rotated", 1), ("gd", "rotated", 2)]  # fmt: skip
    for r in on_disk["runs"]:
        assert list(r) == ["variant", "covariance", "layers", "seed", "run_dir", "test_loss",
                           "a", "dist_A", "dist_B"]  # fmt: skip
        assert (r["dist_B"] is None) == (r["variant"] == "gd")
        assert (tmp_path / r["run_dir"] / "metrics.json").is_file()
    assert [o["layers"] for o in on_disk["gd_optimal"]] == [1, 2]
    assert on_disk["gd_optimal"][1]["loss"] == pytest.approx(1795 / 4969)
    assert results["checks"] and all(isinstance(c["ok"], bool) for c in results["checks"])
    text = (tmp_path / "results.md").read_text()
    assert text.startswith("# In-context regression with depth") and "## Checks" in text
    assert (tmp_path / "loss_vs_depth.png").read_bytes()[:4] == b"\x89PNG"
    assert len(list((tmp_path / "params").glob("*.png"))) == 6
