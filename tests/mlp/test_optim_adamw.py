"""AdamW, global gradient-norm clipping, per-parameter rate factors and the warm-up/cosine
schedule: by hand, against PyTorch (``torch.optim.AdamW``, ``clip_grad_norm_``, parameter
groups, ``LambdaLR`` and ``SequentialLR(LinearLR, CosineAnnealingLR)``) in float64 over several
steps, and resumed bit-identically from a checkpoint."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

import mlp
from mlp.train import AdamW, Dataset, Trainer, clip_grad_norm, make_optimizer, make_schedule
from mlp.train.optim import global_norm

SHAPES = {"W": (3, 4), "b": (4,), "E": (2, 5)}


def _params(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {k: rng.standard_normal(s) for k, s in SHAPES.items()}


def _grads(steps: int, seed: int = 1, scale: float = 1.0) -> list[dict[str, np.ndarray]]:
    """Gradients of growing size (some steps clip at max_norm 1, some do not)."""
    rng = np.random.default_rng(seed)
    return [
        {k: scale * (0.1 + 0.4 * t) * rng.standard_normal(s) for k, s in SHAPES.items()}
        for t in range(steps)
    ]


def _copy(d: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: v.copy() for k, v in d.items()}


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


# --- by hand ---------------------------------------------------------------------------------


def test_adamw_first_step_is_decay_then_minus_lr_sign_g() -> None:
    params, (g,) = _params(), _grads(1)
    before = _copy(params)
    AdamW(weight_decay=0.1).step(params, g, 0.01)
    for k in params:
        # m_hat = g, v_hat = g^2: w (1 - lr wd) - lr g / (|g| + eps)
        want = before[k] - 0.01 * 0.1 * before[k] - 0.01 * g[k] / (np.abs(g[k]) + 1e-8)
        np.testing.assert_allclose(params[k], want, rtol=1e-14, atol=1e-15)


def test_adamw_with_zero_gradients_only_decays_the_chosen_keys() -> None:
    """With g = 0 the Adam step is 0 / (0 + eps) = 0: each step multiplies a decayed key by
    (1 - f lr wd), with f its rate factor; a key outside ``decay`` stays put."""
    params = _params()
    before = _copy(params)
    opt = AdamW(weight_decay=0.5, decay=["W", "E"], lr_factors={"E": 3.0})
    for _ in range(4):
        opt.step(params, {k: np.zeros(s) for k, s in SHAPES.items()}, 0.1)
    np.testing.assert_allclose(params["W"], before["W"] * (1 - 0.1 * 0.5) ** 4, rtol=1e-14)
    np.testing.assert_allclose(params["E"], before["E"] * (1 - 0.3 * 0.5) ** 4, rtol=1e-14)
    assert np.array_equal(params["b"], before["b"])


def test_adamw_without_weight_decay_is_adam() -> None:
    pa, pb = _params(), _params()
    a, b = mlp.Adam(beta1=0.8), AdamW(beta1=0.8, weight_decay=0.0)
    for g in _grads(5):
        a.step(pa, g, 0.05)
        b.step(pb, g, 0.05)
    for k in pa:
        assert np.array_equal(pa[k], pb[k]), k


def test_clip_grad_norm_by_hand() -> None:
    grads = {"a": np.array([3.0, 0.0]), "b": np.array([[0.0], [4.0]])}  # ||g|| = 5
    clipped, norm = clip_grad_norm(grads, 1.0)
    assert norm == 5.0
    c = 1.0 / (5.0 + 1e-6)
    assert clipped["a"].tolist() == [3.0 * c, 0.0] and clipped["b"].tolist() == [[0.0], [4.0 * c]]
    assert grads["a"].tolist() == [3.0, 0.0]  # the caller's arrays are not modified
    same, norm = clip_grad_norm(grads, 10.0)  # below the limit: untouched
    assert norm == 5.0 and same["a"] is grads["a"] and same["b"] is grads["b"]


@pytest.mark.parametrize("scale", [1e-200, 1.0, 1e200])
def test_global_norm_of_tiny_and_huge_gradients(scale: float) -> None:
    grads = {"a": np.array([3.0, 0.0]) * scale, "b": np.array([4.0]) * scale}
    assert global_norm(grads) == pytest.approx(5.0 * scale, rel=1e-15)
    assert global_norm({"a": np.zeros(3)}) == 0.0


def test_sgd_with_clipping_and_a_rate_factor_by_hand() -> None:
    params = {"w": np.zeros(2), "b": np.zeros(1)}
    opt = mlp.SGD(lr_factors={"b": 100.0}, clip_norm=1.0)
    opt.step(params, {"w": np.array([3.0, 0.0]), "b": np.array([4.0])}, 0.01)
    c = 1.0 / (5.0 + 1e-6)
    np.testing.assert_allclose(params["w"], [-0.01 * 3.0 * c, 0.0], rtol=1e-15)
    np.testing.assert_allclose(params["b"], [-100 * 0.01 * 4.0 * c], rtol=1e-15)


def test_rate_factors_scale_each_optimizers_step() -> None:
    """A factor f on one key gives that key the step of the optimizer run at rate f lr."""
    for name in ("sgd", "ngd", "adam", "adamw"):
        g = _grads(3)
        p1, p2 = _params(), _params()
        o1 = make_optimizer(name, lr_factors={"b": 4.0})
        o2 = make_optimizer(name)
        for gt in g:
            o1.step(p1, gt, 0.01)
        for gt in g:  # the same rule with only "b" updated, at 4 lr
            if name == "ngd":  # the global norm still spans every key
                o2.step(p2, gt, 0.01)
                continue
            o2.step(p2, {"b": gt["b"]}, 0.04)
        if name == "ngd":
            np.testing.assert_allclose(p1["W"], p2["W"], rtol=1e-14)
            continue
        np.testing.assert_allclose(p1["b"], p2["b"], rtol=1e-13)


def test_make_optimizer_passes_the_new_options() -> None:
    opt = make_optimizer(
        "adamw", beta2=0.95, weight_decay=0.1, decay=["W"], lr_factors={"b": 2}, clip_norm=1.0
    )
    assert isinstance(opt, AdamW) and opt.name == "adamw"
    assert (opt.beta2, opt.weight_decay, opt.decay) == (0.95, 0.1, frozenset({"W"}))
    assert opt.lr_factors == {"b": 2.0} and opt.clip_norm == 1.0
    assert "adamw" in mlp.train.OPTIMIZERS


@pytest.mark.parametrize(
    ("build", "error", "match"),
    [
        (lambda: AdamW(weight_decay=-0.1), ValueError,
         r"weight_decay: expected a finite number >= 0, received -0\.1"),
        (lambda: AdamW(decay="W"), TypeError,
         r"decay: expected a list of parameter names or None, received 'W'"),
        (lambda: AdamW(clip_norm=0.0), ValueError,
         r"clip_norm: expected a positive finite number, received 0\.0"),
        (lambda: mlp.SGD(lr_factors={"W": 0}), ValueError,
         r"lr_factors\['W'\]: expected a positive finite number, received 0"),
        (lambda: mlp.SGD(lr_factors=[("W", 2.0)]), TypeError,
         r"lr_factors: expected a dict parameter name -> factor, received list"),
        (lambda: mlp.SGD(lr_factors={"x": 2.0}).step(_params(), _grads(1)[0], 0.1), ValueError,
         r"lr_factors: unknown parameter\(s\) \['x'\]; params has \['W', 'b', 'E'\]"),
        (lambda: AdamW(decay=["x"]).step(_params(), _grads(1)[0], 0.1), ValueError,
         r"decay: unknown parameter\(s\) \['x'\]"),
        (lambda: make_optimizer("ngd", clip_norm=1.0), ValueError,
         r"optimizer 'ngd': unknown option\(s\) \['clip_norm'\]"),
        (lambda: clip_grad_norm({"a": np.ones(2)}, -1.0), ValueError,
         r"max_norm: expected a positive finite number, received -1\.0"),
        (lambda: AdamW().load_state_dict({}), ValueError, r"AdamW state: expected key 't'"),
    ],
)  # fmt: skip
def test_errors(build, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        build()


# --- schedules ---------------------------------------------------------------------------------


def test_cosine_schedule_by_hand() -> None:
    """lr 1, 2 warm-up updates, 6 in all, floor 0.1: (t+1)/2, then 0.1 + 0.9 (1 + cos(pi u/4))/2
    for u = t - 2 = 0..3."""
    schedule = make_schedule("cosine", 1.0, steps=6, warmup=2, floor=0.1)
    want = [0.5, 1.0, 1.0]
    want += [0.1 + 0.9 * (1 + math.cos(math.pi * u / 4)) / 2 for u in (1, 2, 3)]
    assert [schedule(t) for t in range(6)] == pytest.approx(want, rel=1e-15)
    assert want[4] == pytest.approx(0.55, rel=1e-15)
    assert schedule(6) == schedule(100) == pytest.approx(0.1, rel=1e-15)  # the floor after
    plain = make_schedule("cosine", 2.0, steps=4)  # no warm-up, floor 0
    assert [plain(t) for t in range(5)] == pytest.approx(
        [2.0, 1 + math.cos(math.pi / 4), 1.0, 1 - math.cos(math.pi / 4), 0.0], abs=1e-15
    )


def test_warmup_before_the_other_kinds() -> None:
    constant = make_schedule("constant", 0.4, warmup=4)
    assert [constant(t) for t in range(6)] == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.4, 0.4])
    inverse = make_schedule("inverse", 0.4, decay_steps=2.0, warmup=2)
    assert [inverse(t) for t in range(5)] == pytest.approx([0.2, 0.4, 0.4, 0.4 / 1.5, 0.2])
    step = make_schedule("step", 1.0, steps=12, warmup=2, milestones=(0.5,))  # 10 left: at 5
    assert [step(t) for t in (0, 1, 6, 7)] == pytest.approx([0.5, 1.0, 1.0, 0.1])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"kind": "cosine"}, r"steps: the 'cosine' schedule needs the run's number of updates"),
        ({"kind": "cosine", "steps": 10, "warmup": 10},
         r"warmup: expected fewer updates than the run's steps=10, received 10"),
        ({"kind": "constant", "warmup": -1}, r"warmup: expected an integer >= 0, received -1"),
        ({"kind": "cosine", "steps": 10, "floor": 1.0},
         r"floor: expected a fraction of lr in \[0, 1\), received 1\.0"),
    ],
)  # fmt: skip
def test_schedule_errors(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make_schedule(lr=0.1, **kwargs)


# --- against PyTorch in float64 ----------------------------------------------------------------


def _torch_run(
    params: dict[str, np.ndarray],
    grads: list[dict[str, np.ndarray]],
    *,
    lr: float,
    schedule,
    groups: list[tuple[list[str], float, float]],
    clip: float | None,
    betas: tuple[float, float] = (0.9, 0.95),
) -> list[dict[str, np.ndarray]]:
    """torch.optim.AdamW with parameter groups (keys, rate factor, weight decay) of their own
    lr, clip_grad_norm_ before each step and LambdaLR; the parameters after every step."""
    torch = pytest.importorskip("torch")
    tp = {k: torch.nn.Parameter(torch.tensor(v, dtype=torch.float64)) for k, v in params.items()}
    opt = torch.optim.AdamW(
        [{"params": [tp[k] for k in keys], "lr": lr * f, "weight_decay": wd}
         for keys, f, wd in groups],
        lr=lr, betas=betas, eps=1e-8,
    )  # fmt: skip
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: schedule(t) / lr)
    out = []
    for g in grads:
        for k, p in tp.items():
            p.grad = torch.tensor(g[k], dtype=torch.float64)
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(list(tp.values()), clip)
        opt.step()
        sched.step()
        out.append({k: p.detach().numpy().copy() for k, p in tp.items()})
    return out


@pytest.mark.parametrize("clip", [None, 1.0])
def test_adamw_with_groups_clipping_and_cosine_matches_torch(clip: float | None) -> None:
    lr, steps = 0.05, 8
    schedule = make_schedule("cosine", lr, steps=steps, warmup=3, floor=0.1)
    grads = _grads(steps)
    assert any(global_norm(g) > 1.0 for g in grads) and any(global_norm(g) < 1.0 for g in grads)
    ref = _torch_run(
        _params(), grads, lr=lr, schedule=schedule, clip=clip,
        groups=[(["W"], 1.0, 0.1), (["b"], 1.0, 0.0), (["E"], 100.0, 0.1)],
    )  # fmt: skip
    params = _params()
    opt = AdamW(
        beta2=0.95, weight_decay=0.1, decay=["W", "E"], lr_factors={"E": 100}, clip_norm=clip
    )
    for t, g in enumerate(grads):
        opt.step(params, g, schedule(t))
        for k in params:
            assert _rel(params[k], ref[t][k]) < 1e-12, (t, k)


def test_clip_grad_norm_matches_torch() -> None:
    torch = pytest.importorskip("torch")
    for g in _grads(4, seed=5):
        tg = {
            k: torch.nn.Parameter(torch.zeros(v.shape, dtype=torch.float64)) for k, v in g.items()
        }
        for k, p in tg.items():
            p.grad = torch.tensor(g[k], dtype=torch.float64)
        norm_ref = float(torch.nn.utils.clip_grad_norm_(list(tg.values()), 1.0))
        clipped, norm = clip_grad_norm(g, 1.0)
        assert norm == pytest.approx(norm_ref, rel=1e-14)
        for k in g:
            assert _rel(clipped[k], tg[k].grad.numpy()) < 1e-14, k


def test_sgd_with_a_fast_group_matches_torch() -> None:
    """The minimal model's optimizer: SGD with one parameter at 100x the base rate."""
    torch = pytest.importorskip("torch")
    tp = {k: torch.nn.Parameter(torch.tensor(v, dtype=torch.float64)) for k, v in _params().items()}
    opt = torch.optim.SGD(
        [{"params": [tp["W"], tp["b"]]}, {"params": [tp["E"]], "lr": 1.0}], lr=0.01
    )
    params, ours = _params(), mlp.SGD(lr_factors={"E": 100.0})
    for g in _grads(5):
        for k, p in tp.items():
            p.grad = torch.tensor(g[k], dtype=torch.float64)
        opt.step()
        ours.step(params, g, 0.01)
        for k in params:
            assert _rel(params[k], tp[k].detach().numpy()) < 1e-12, k


@pytest.mark.parametrize(("warmup", "floor"), [(0, 0.0), (4, 0.1)])
def test_cosine_schedule_matches_torch_schedulers(warmup: int, floor: float) -> None:
    """torch's own LinearLR (from 1/warmup, over warmup - 1 updates) then CosineAnnealingLR (to
    floor * lr), chained by SequentialLR."""
    torch = pytest.importorskip("torch")
    lr, steps = 0.3, 20
    p = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))
    opt = torch.optim.SGD([p], lr=lr)
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(
        opt, T_max=steps - warmup, eta_min=floor * lr
    )
    if warmup:
        linear = torch.optim.lr_scheduler.LinearLR(
            opt, start_factor=1 / warmup, total_iters=warmup - 1
        )
        sched = torch.optim.lr_scheduler.SequentialLR(opt, [linear, cosine], [warmup])
    else:
        sched = cosine
    ours = make_schedule("cosine", lr, steps=steps, warmup=warmup, floor=floor)
    for t in range(steps + 1):
        assert ours(t) == pytest.approx(opt.param_groups[0]["lr"], rel=1e-12, abs=1e-15), t
        opt.step()
        sched.step()


# --- resumed bit-identically -------------------------------------------------------------------


class Quadratic:
    """``loss = mean_i (w . (E * x_i) + b - y_i)^2 / 2``, defined only here: three keys with
    gradients of different sizes."""

    def __init__(self) -> None:
        rng = np.random.default_rng(0)
        self.params = {"w": rng.standard_normal(3), "b": np.zeros(()), "E": np.ones(3)}

    def loss_and_grads(self, X: np.ndarray, y: np.ndarray) -> tuple[float, dict]:
        w, b, E = self.params["w"], self.params["b"], self.params["E"]
        r = (X * E) @ w + b - y
        n = len(X)
        grads = {"w": (X * E).T @ r / n, "b": np.asarray(r.sum() / n), "E": w * (X.T @ r) / n}
        return float(r @ r / (2 * n)), grads


def _data(n: int, seed: int) -> Dataset:
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 3))
    return Dataset(X, X @ np.array([1.0, -2.0, 0.5]) + 4.0)


def _trainer(optimizer: str, steps: int, path: Path | None) -> Trainer:
    if optimizer == "adamw":
        opt = make_optimizer(
            "adamw", beta2=0.95, weight_decay=0.1, decay=["w"], lr_factors={"E": 10.0},
            clip_norm=0.5,
        )  # fmt: skip
    else:
        opt = make_optimizer("sgd", lr_factors={"b": 5.0}, clip_norm=0.5)
    return Trainer(
        Quadratic(), opt, _data(64, 0), steps=steps, batch_size=16, test=_data(20, 1),
        lr=make_schedule("cosine", 0.05, steps=60, warmup=10, floor=0.1),
        eval_every=10, checkpoint=path, checkpoint_every=10, seed=2, progress=False,
    )  # fmt: skip


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_a_run_resumed_from_its_checkpoint_is_bit_identical(tmp_path: Path, optimizer: str) -> None:
    whole = _trainer(optimizer, 60, None)
    whole.run()
    _trainer(optimizer, 30, tmp_path / "c.npz").run()
    rest = _trainer(optimizer, 60, tmp_path / "c.npz")
    rest.resume(tmp_path / "c.npz")
    assert rest.step == 30
    rest.run()
    for k in whole.model.params:
        assert np.array_equal(whole.model.params[k], rest.model.params[k]), k
    assert rest.history.rows == whole.history.rows
    sa, sb = whole.optimizer.state_dict(), rest.optimizer.state_dict()
    assert set(sa) == set(sb) and all(np.array_equal(sa[k], sb[k]) for k in sa)
    assert whole.history.rows[-1]["test_loss"] < 0.5 * whole.history.rows[0]["test_loss"]
    lrs = [r["lr"] for r in whole.history.rows]  # warm-up, then the cosine decay
    assert lrs[1] == pytest.approx(0.05) and lrs[-1] == pytest.approx(
        0.05 * (0.1 + 0.9 * (1 + math.cos(math.pi * 49 / 50)) / 2)
    )


def test_adamw_state_round_trip_and_resume_refuses_another_optimizer(tmp_path: Path) -> None:
    a, pa = AdamW(weight_decay=0.1), _params()
    grads = _grads(6)
    for g in grads[:3]:
        a.step(pa, g, 0.05)
    state = {k: np.array(v) for k, v in a.state_dict().items()}
    assert int(state["t"]) == 3 and set(state) == {"t"} | {f"{m}/{k}" for m in "mv" for k in SHAPES}
    b, pb = AdamW(weight_decay=0.1), _copy(pa)
    b.load_state_dict(state)
    for g in grads[3:]:
        a.step(pa, g, 0.05)
        b.step(pb, g, 0.05)
    for k in pa:
        assert np.array_equal(pa[k], pb[k]), k
    _trainer("adamw", 20, tmp_path / "c.npz").run()
    other = Trainer(
        Quadratic(), mlp.Adam(), _data(64, 0), steps=40, batch_size=16, lr=0.01, seed=2,
        progress=False,
    )  # fmt: skip
    with pytest.raises(ValueError, match=r"written by 'adamw', this trainer has 'adam'"):
        other.resume(tmp_path / "c.npz")
