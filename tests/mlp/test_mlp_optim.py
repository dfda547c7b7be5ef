"""Optimizers update dicts of arrays exactly as their formulas say; schedules give eta_t."""

import numpy as np
import pytest

import mlp


def _params_and_grads(seed: int = 0) -> tuple[dict, dict]:
    rng = np.random.default_rng(seed)
    shapes = {"W1": (3, 4), "b1": (4,), "W2": (4, 2), "b2": (2,)}
    params = {k: rng.standard_normal(s) for k, s in shapes.items()}
    grads = {k: rng.standard_normal(s) for k, s in shapes.items()}
    return params, grads


def _delta(before: dict, after: dict) -> dict:
    return {k: after[k] - before[k] for k in before}


def test_sgd_step_is_exact() -> None:
    params, grads = _params_and_grads()
    before = {k: v.copy() for k, v in params.items()}
    mlp.SGD().step(params, grads, 0.25)
    for k in params:
        assert np.array_equal(params[k], before[k] - 0.25 * grads[k]), k


def test_sgd_updates_only_the_given_keys_in_place() -> None:
    params, grads = _params_and_grads()
    W1, b2 = params["W1"], params["b2"].copy()
    mlp.SGD().step(params, {"W1": grads["W1"]}, 0.1)
    assert params["W1"] is W1  # in place
    assert np.array_equal(params["b2"], b2)


def test_normalized_gd_global_step_has_norm_lr() -> None:
    params, grads = _params_and_grads(1)
    before = {k: v.copy() for k, v in params.items()}
    mlp.NormalizedGD().step(params, grads, 0.1)
    d = _delta(before, params)
    total = np.sqrt(sum(np.sum(v**2) for v in d.values()))
    assert total == pytest.approx(0.1, rel=1e-12)
    gnorm = np.sqrt(sum(np.sum(g**2) for g in grads.values()))
    for k in d:  # the direction is -g / ||g|| over all parameters together
        np.testing.assert_allclose(d[k], -0.1 * grads[k] / gnorm, rtol=1e-9, atol=1e-15)


def test_normalized_gd_per_param_steps_have_norm_lr() -> None:
    params, grads = _params_and_grads(2)
    grads["b2"] *= 1e-8  # per-parameter normalization ignores the scale
    before = {k: v.copy() for k, v in params.items()}
    mlp.NormalizedGD(per_param=True).step(params, grads, 0.3)
    for k, v in _delta(before, params).items():
        assert np.linalg.norm(v) == pytest.approx(0.3, rel=1e-12), k


def test_normalized_gd_eps_shortens_tiny_steps() -> None:
    """``lr g / (||g|| + eps)``: a step of ``lr ||g|| / (||g|| + eps)`` in the direction of
    ``-g``, per parameter with ``per_param``: full length for large gradients, short for tiny."""
    params, grads = _params_and_grads(4)
    grads["b2"] = np.full_like(grads["b2"], 1e-16)  # ||g|| = 1e-16 sqrt(size), below eps
    eps = 2.0**-52
    before = {k: v.copy() for k, v in params.items()}
    mlp.NormalizedGD(per_param=True, eps=eps).step(params, grads, 0.3)
    for k, v in _delta(before, params).items():
        g = np.linalg.norm(grads[k])
        np.testing.assert_allclose(v, -0.3 * grads[k] / (g + eps), rtol=1e-12, atol=0)
    assert np.linalg.norm(_delta(before, params)["b2"]) < 0.3 * 0.5


@pytest.mark.parametrize("eps", [-1e-16, float("inf"), float("nan"), True, "0"])
def test_normalized_gd_refuses_a_bad_eps(eps: object) -> None:
    with pytest.raises(ValueError, match="eps: expected a finite number >= 0"):
        mlp.NormalizedGD(eps=eps)


def test_normalized_gd_zero_gradient_raises() -> None:
    params, grads = _params_and_grads(3)
    zero = {k: np.zeros_like(g) for k, g in grads.items()}
    with pytest.raises(mlp.ZeroGradientError, match="exactly zero"):
        mlp.NormalizedGD().step(params, zero, 0.1)
    grads["b1"] = np.zeros_like(grads["b1"])
    with pytest.raises(mlp.ZeroGradientError, match="'b1'"):
        mlp.NormalizedGD(per_param=True).step(params, grads, 0.1)
    before = {k: v.copy() for k, v in params.items()}
    mlp.NormalizedGD().step(params, grads, 0.1)  # globally the gradient is not zero: fine
    assert np.array_equal(params["b1"], before["b1"])
    assert not np.array_equal(params["W1"], before["W1"])


def test_adam_first_step_is_minus_lr_sign_g() -> None:
    params, grads = _params_and_grads(4)
    before = {k: v.copy() for k, v in params.items()}
    mlp.Adam().step(params, grads, 0.01)
    for k, v in _delta(before, params).items():
        # m_hat = g, v_hat = g^2: the step is -lr g / (|g| + eps)
        np.testing.assert_allclose(v, -0.01 * np.sign(grads[k]), rtol=1e-4)
        np.testing.assert_allclose(v, -0.01 * grads[k] / (np.abs(grads[k]) + 1e-8), rtol=1e-12)


def test_adam_state_dict_round_trip() -> None:
    params, _ = _params_and_grads(5)
    rng = np.random.default_rng(6)
    steps = [{k: rng.standard_normal(v.shape) for k, v in params.items()} for _ in range(5)]
    a = mlp.Adam(beta1=0.8, beta2=0.99)
    pa = {k: v.copy() for k, v in params.items()}
    for g in steps[:3]:
        a.step(pa, g, 0.05)
    state = {k: np.array(v) for k, v in a.state_dict().items()}
    assert int(state["t"]) == 3
    assert set(state) == {"t", *(f"m/{k}" for k in params), *(f"v/{k}" for k in params)}
    b = mlp.Adam(beta1=0.8, beta2=0.99)
    b.load_state_dict(state)
    pb = {k: v.copy() for k, v in pa.items()}
    for g in steps[3:]:
        a.step(pa, g, 0.05)
        b.step(pb, g, 0.05)
    for k in params:
        assert np.array_equal(pa[k], pb[k]), k
    fresh = mlp.Adam(beta1=0.8, beta2=0.99)  # without the state the result differs
    pc = {k: v.copy() for k, v in params.items()}
    for g in steps[3:]:
        fresh.step(pc, g, 0.05)
    assert not np.array_equal(pa["W1"], pc["W1"])


def test_optimizer_state_errors() -> None:
    with pytest.raises(ValueError, match="Adam state: expected key 't'"):
        mlp.Adam().load_state_dict({"m/W1": np.zeros(2)})
    with pytest.raises(ValueError, match="SGD has no state"):
        mlp.SGD().load_state_dict({"t": np.array(1)})
    with pytest.raises(ValueError, match="beta1"):
        mlp.Adam(beta1=1.0)


@pytest.mark.parametrize(
    ("name", "cls"),
    [("sgd", mlp.SGD), ("ngd", mlp.NormalizedGD), ("adam", mlp.Adam), ("adamw", mlp.AdamW)],
)
def test_make_optimizer(name: str, cls: type) -> None:
    assert isinstance(mlp.make_optimizer(name), cls)


def test_make_optimizer_unknown() -> None:
    with pytest.raises(
        ValueError, match="optimizer: expected one of 'sgd', 'ngd', 'adam', 'adamw'"
    ):
        mlp.make_optimizer("rmsprop")


@pytest.mark.parametrize(
    ("kind", "decay_steps", "t", "expected"),
    [
        ("constant", 100.0, 0, 0.1),
        ("constant", 100.0, 10_000, 0.1),
        ("inverse", 100.0, 0, 0.1),
        ("inverse", 100.0, 100, 0.05),
        ("inverse", 50.0, 450, 0.01),
    ],
)
def test_schedules(kind: str, decay_steps: float, t: int, expected: float) -> None:
    assert mlp.make_schedule(kind, 0.1, decay_steps)(t) == pytest.approx(expected, rel=1e-15)


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (("constant", -1.0), "lr: expected a positive finite number, received -1.0"),
        (("constant", 0.0), "lr: expected a positive"),
        (("inverse", float("nan")), "lr: expected a positive"),
        (("inverse", 0.1, 0.0), "decay_steps: expected a positive"),
        (("linear", 0.1), "schedule: expected one of 'constant', 'inverse'"),
    ],
)
def test_schedule_errors(args: tuple, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        mlp.make_schedule(*args)


@pytest.mark.parametrize("scale", [1e-200, 1e-160, 1.0, 1e160, 1e200])
@pytest.mark.parametrize("per_param", [False, True])
def test_normalized_gd_step_has_length_lr_for_tiny_and_huge_gradients(scale, per_param):
    # entries below 1e-154 square to 0 in float64: a naive ||g|| would be 0 (or inf above 1e154)
    params = {"a": np.zeros(3), "b": np.zeros(2)}
    grads = {"a": np.array([3.0, 0.0, 0.0]) * scale, "b": np.array([0.0, 4.0]) * scale}
    mlp.NormalizedGD(per_param=per_param).step(params, grads, 0.5)
    if per_param:
        np.testing.assert_allclose(params["a"], [-0.5, 0.0, 0.0], rtol=1e-15)
        np.testing.assert_allclose(params["b"], [0.0, -0.5], rtol=1e-15)
    else:
        np.testing.assert_allclose(params["a"], [-0.3, 0.0, 0.0], rtol=1e-15)
        np.testing.assert_allclose(params["b"], [0.0, -0.4], rtol=1e-15)


# --- the step schedule and iterate averaging -------------------------------------------------


@pytest.mark.parametrize(
    ("t", "expected"),
    [(0, 0.2), (49, 0.2), (50, 0.02), (79, 0.02), (80, 0.002), (99, 0.002), (10_000, 0.002)],
)
def test_step_schedule_divides_at_the_milestones(t: int, expected: float) -> None:
    """Defaults: lr for the first half, lr/10 from 50% (step 50 of 100), lr/100 from 80%."""
    schedule = mlp.make_schedule("step", 0.2, steps=100)
    assert schedule(t) == pytest.approx(expected, rel=1e-15)


def test_step_schedule_with_its_own_milestones_and_factor() -> None:
    schedule = mlp.make_schedule("step", 1.0, steps=10, milestones=(0.25,), factor=0.5)
    assert [schedule(t) for t in range(4)] == [1.0, 1.0, 0.5, 0.5]  # floor(0.25 * 10) = 2


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({}, r"steps: the 'step' schedule needs the run's number of updates, received None"),
        ({"steps": 0}, r"steps: expected a positive integer, received 0"),
        ({"steps": 10, "milestones": (0.8, 0.5)}, r"milestones: expected increasing fractions"),
        ({"steps": 10, "milestones": (0.5, 1.0)}, r"milestones: expected increasing fractions"),
        ({"steps": 10, "milestones": ()}, r"milestones: expected increasing fractions"),
        ({"steps": 10, "factor": -0.1}, r"factor: expected a positive finite number"),
    ],
)
def test_step_schedule_errors(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        mlp.make_schedule("step", 0.1, **kwargs)


def test_averaged_is_the_mean_of_the_iterates_from_start() -> None:
    """SGD on ``w`` with gradient 1 moves ``w`` by ``-lr`` per step: iterates -1, -2, ..., -5;
    averaging from update 2 (0-based) is the mean of -3, -4, -5."""
    opt = mlp.train.Averaged(mlp.SGD(), start=2)
    params = {"w": np.zeros(2), "fixed": np.ones(1)}
    assert opt.averaged(params)["w"].tolist() == [0.0, 0.0]  # nothing averaged yet
    for _ in range(5):
        opt.step(params, {"w": np.ones(2)}, 1.0)
    assert params["w"].tolist() == [-5.0, -5.0]  # the live iterate follows SGD
    mean = opt.averaged(params)
    assert mean["w"].tolist() == [-4.0, -4.0] and mean["fixed"].tolist() == [1.0]
    assert mean["w"] is not opt.mean["w"]


def test_averaged_state_round_trip_resumes_the_same_mean() -> None:
    def run(steps: int, opt: mlp.train.Averaged, params: dict) -> None:
        for t in range(opt.t, steps):
            opt.step(params, {"w": np.sin(np.arange(3.0) + t)}, 0.1)

    full, p_full = mlp.train.Averaged(mlp.Adam(), start=3), {"w": np.zeros(3)}
    run(8, full, p_full)
    half, p_half = mlp.train.Averaged(mlp.Adam(), start=3), {"w": np.zeros(3)}
    run(5, half, p_half)
    state = {k: np.array(v) for k, v in half.state_dict().items()}
    resumed = mlp.train.Averaged(mlp.Adam(), start=3)
    resumed.load_state_dict(state)
    run(8, resumed, p_half)
    np.testing.assert_array_equal(p_half["w"], p_full["w"])
    np.testing.assert_array_equal(resumed.averaged(p_half)["w"], full.averaged(p_full)["w"])
    assert resumed.name == "averaged-adam"


@pytest.mark.parametrize(
    ("build", "error", "match"),
    [
        (lambda: mlp.train.Averaged(mlp.SGD(), start=-1), ValueError,
         r"start: expected an integer >= 0, received -1"),
        (lambda: mlp.train.Averaged(object(), start=0), TypeError,
         r"inner: expected an optimizer with step, state_dict and load_state_dict"),
        (lambda: mlp.train.Averaged(mlp.SGD(), 0).load_state_dict({"x": np.zeros(1)}),
         ValueError, r"Averaged state: expected an integer 't' >= 0"),
    ],
)  # fmt: skip
def test_averaged_errors(build, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        build()
