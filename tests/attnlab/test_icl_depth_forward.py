"""In-context regression with depth: the prompts of both settings (layout, seeding, the
distributions of x and w, whitening) and the numpy L-layer linear model against its loop
reference and against gradient descent (plain and preconditioned), with its sign and transpose
conventions."""

import numpy as np
import pytest

from attnlab.models.stack import AttentionStack
from attnlab.studies.icl_depth import forward, prompts, theory
from mlp.train.data import Stream

D, N = 5, 20


def _params(L: int, seed: int, scale: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return scale * rng.standard_normal((L, D, D)), scale * rng.standard_normal((L, D, D))


# --- prompts ---------------------------------------------------------------------------------


@pytest.mark.parametrize("covariance", prompts.COVARIANCES)
def test_prompt_layout_labels_and_target(covariance: str) -> None:
    data = prompts.train_batch(1, 2, n=6, covariance=covariance)
    Z, y_q = data.X, data.y
    assert Z.shape == (6, D + 1, N + 1) and y_q.shape == (6,)
    assert np.all(Z[:, D, N] == 0.0)
    for prompt, target in zip(Z, y_q, strict=True):  # the labels are <w, x> for one w
        X, y = prompt[:D, :N].T, prompt[D, :N]
        w = np.linalg.lstsq(X, y, rcond=None)[0]
        np.testing.assert_allclose(X @ w, y, atol=1e-10)
        assert w @ prompt[:D, N] == pytest.approx(target, abs=1e-9)


def test_prompts_are_a_pure_function_of_seed_and_step() -> None:
    a = prompts.train_batch(4, 9, n=5, covariance="rotated")
    b = prompts.train_batch(4, 9, n=5, covariance="rotated")
    np.testing.assert_array_equal(a.X, b.X)
    assert not np.allclose(a.X, prompts.train_batch(4, 10, n=5, covariance="rotated").X)
    s = prompts.stream(4, n=5, covariance="rotated")
    assert isinstance(s, Stream)
    np.testing.assert_array_equal(s.batch(9).X, a.X)
    np.testing.assert_array_equal(s.batch(9).y, a.y)
    (test,) = prompts.eval_prompts(4, n=5, covariance="rotated")
    assert not np.allclose(test.X, a.X)  # the test stream is apart from training's


def test_rotated_covariance_is_the_authors() -> None:
    U = prompts.rotation(D, 0)
    np.testing.assert_allclose(U @ U.T, np.eye(D), atol=1e-12)
    Sigma = prompts.covariance_matrix("rotated", D, 0)
    np.testing.assert_allclose(np.linalg.eigvalsh(Sigma), [1 / 16, 1 / 4, 1, 1, 1], atol=1e-12)
    np.testing.assert_allclose(Sigma, U @ np.diag([1, 1, 1 / 4, 1 / 16, 1]) @ U.T, atol=1e-12)
    assert not np.allclose(Sigma, prompts.covariance_matrix("rotated", D, 1))  # U per seed
    np.testing.assert_array_equal(prompts.covariance_matrix("identity", 3, 0), np.eye(3))


def test_rotated_x_and_w_have_the_stated_covariances() -> None:
    seed = 2
    Sigma = prompts.covariance_matrix("rotated", D, seed)
    data = prompts.train_batch(seed, 0, n=40_000, covariance="rotated")
    x = data.X[:, :D, 0]  # one example per prompt
    X, y = data.X[:, :D, :N].transpose(0, 2, 1), data.X[:, D, :N]
    rhs = np.einsum("ncd,nc->nd", X, y)[:, :, None]
    w = np.linalg.solve(np.matmul(X.transpose(0, 2, 1), X), rhs)[:, :, 0]
    for v, cov in ((x, Sigma), (w, np.linalg.inv(Sigma))):
        outer = v[:, :, None] * v[:, None, :]
        mean, se = outer.mean(0), outer.std(0, ddof=1) / np.sqrt(len(v))
        assert np.all(np.abs(mean - cov) < 5 * se), np.max(np.abs(mean - cov) / se)


def test_whitened_rotated_prompts_are_the_identity_prompts() -> None:
    R = prompts.covariance_root("rotated", D, 6)
    rot = prompts.train_batch(6, 3, n=50, covariance="rotated")
    iso = prompts.train_batch(6, 3, n=50, covariance="identity")
    np.testing.assert_allclose(np.linalg.solve(R, rot.X[:, :D]), iso.X[:, :D], atol=1e-12)
    np.testing.assert_allclose(rot.X[:, D], iso.X[:, D], atol=1e-12)
    np.testing.assert_allclose(rot.y, iso.y, atol=1e-12)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: prompts.train_batch(0, 0, n=3, d=4, covariance="rotated"), "d: the rotated"),
        (lambda: prompts.train_batch(0, 0, n=3, covariance="spread"), "covariance: expected"),
        (lambda: prompts.train_batch(-1, 0, n=3), "seed"),
        (lambda: prompts.train_batch(0, -2, n=3), "step"),
        (lambda: prompts.train_batch(0, 0, n=0), "n: expected a positive integer"),
        (lambda: list(prompts.eval_prompts(0, n=3, chunk=0)), "chunk"),
    ],
)
def test_prompt_errors_name_the_argument(call, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()


# --- the model -------------------------------------------------------------------------------


@pytest.mark.parametrize("L", [1, 3])
def test_stack_forward_matches_the_loop_reference(L: int) -> None:
    Z = prompts.train_batch(0, 0, n=4, N=6, covariance="rotated").X
    A, B = _params(L, L)
    out = forward.stack_forward(Z, A, B)
    assert out.shape == Z.shape
    np.testing.assert_allclose(out, forward.stack_forward_loop(Z, A, B), rtol=1e-12, atol=1e-12)


def test_gd_predict_matches_the_loop_reference() -> None:
    Z = prompts.train_batch(1, 0, n=7, covariance="rotated").X
    P = _params(3, 5)[0]
    out = forward.gd_predict(Z, P)
    assert out.shape == (7,)
    np.testing.assert_allclose(out, forward.gd_predict_loop(Z, P), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("covariance", prompts.COVARIANCES)
def test_stack_with_b_zero_and_a_minus_rates_is_plain_gd(covariance: str) -> None:
    Z = prompts.train_batch(2, 0, n=50, covariance=covariance).X
    a = np.array([0.4224, 0.6891, 1.7142])
    A = -a[:, None, None] * np.eye(D)
    yhat = forward.stack_predict(Z, A, np.zeros_like(A))
    gd = forward.gd_predict(Z, forward.rates_to_preconditioners(a, D))
    np.testing.assert_allclose(yhat, gd, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(yhat, forward.gd_predict_loop(Z, A), rtol=1e-12, atol=1e-12)


def test_stack_with_b_zero_is_gd_preconditioned_by_the_transpose_of_a() -> None:
    Z = prompts.train_batch(3, 0, n=50, covariance="rotated").X
    A = _params(2, 8, scale=0.3)[0]  # not symmetric
    yhat = forward.stack_predict(Z, A, np.zeros_like(A))
    At = A.transpose(0, 2, 1)
    np.testing.assert_allclose(yhat, forward.gd_predict(Z, At), rtol=1e-12, atol=1e-12)
    assert np.max(np.abs(yhat - forward.gd_predict(Z, A))) > 1e-3  # A itself: not the same


def test_the_last_layers_b_and_the_examples_labels_of_z_l() -> None:
    Z = prompts.train_batch(4, 0, n=20, covariance="identity").X
    A, B = _params(2, 4)
    B2 = B.copy()
    B2[-1] = 5.0 * np.eye(D)  # the last B never reaches the prediction
    np.testing.assert_allclose(
        forward.stack_predict(Z, A, B), forward.stack_predict(Z, A, B2), rtol=1e-12, atol=1e-12
    )
    # with B = 0 the example columns of the label row hold the residuals y - X w_L
    zero = np.zeros_like(A)
    Z_L = forward.stack_forward(Z, A, zero)
    x, y = Z[:, :D, :N], Z[:, D, :N]
    S = np.einsum("ndc,nec->nde", x, x) / N
    w = np.zeros((len(Z), D))
    for A_l in A:  # preconditioned by A_l^T
        w = w + np.einsum(
            "ed,ne->nd", A_l, np.einsum("nde,ne->nd", S, w) - np.einsum("ndc,nc->nd", x, y) / N
        )
    np.testing.assert_allclose(Z_L[:, D, :N], y - np.einsum("nd,ndc->nc", w, x), atol=1e-12)
    np.testing.assert_array_equal(Z_L[:, :D], Z[:, :D])


def test_the_stack_is_equivariant_under_whitening() -> None:
    seed = 5
    Sigma = prompts.covariance_matrix("rotated", D, seed)
    data = prompts.train_batch(seed, 0, n=30, covariance="rotated")
    A, B = _params(3, 2, scale=0.3)
    R = theory.sqrt_spd(Sigma)
    white = data.X.copy()
    white[:, :D] = np.linalg.solve(R, data.X[:, :D])  # x' = Sigma^-1/2 x, labels unchanged
    WA, WB = theory.whitened(A, B, Sigma)
    np.testing.assert_allclose(
        forward.stack_predict(data.X, A, B), forward.stack_predict(white, WA, WB), atol=1e-10
    )


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: forward.stack_forward(np.zeros((2, 6, 5)), np.zeros((1, 4, 4)), None), "A:"),
        (
            lambda: forward.stack_forward(
                np.zeros((2, 6, 5)), np.zeros((2, 5, 5)), np.zeros((1, 5, 5))
            ),
            r"B: expected shape \(L, d=5",
        ),
        (
            lambda: forward.stack_forward(
                np.zeros((6, 5)), np.zeros((1, 5, 5)), np.zeros((1, 5, 5))
            ),
            "Z: expected a 3-d array",
        ),
        (
            lambda: forward.stack_predict(
                np.full((1, 6, 5), np.nan), np.zeros((1, 5, 5)), np.zeros((1, 5, 5))
            ),
            "Z",
        ),
        (lambda: forward.gd_predict(np.zeros((2, 6, 5)), np.zeros((0, 5, 5))), "P:"),
    ],
)
def test_model_errors_name_the_argument(call, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()


def test_the_attention_stack_with_these_blocks_is_this_model() -> None:
    """The stack's linear form with the query excluded from the keys, ``W{l} = Q_l``,
    ``V{l} = P_l`` and the head ``v = -e_d``, predicts ``-Z_L[d, N]`` as this model does."""
    L = 3
    Z = prompts.train_batch(0, 0, n=40, covariance="rotated").X
    A, B = _params(L, 7, scale=0.2)  # neither symmetric
    stack = AttentionStack(D + 1, layers=L, scores="linear", mask="exclude-last", loss="squared")
    for l in range(L):
        Q, P = np.zeros((D + 1, D + 1)), np.zeros((D + 1, D + 1))
        Q[:D, :D], P[:D, :D], P[D, D] = A[l], B[l], 1.0
        stack.params[f"W{l}"], stack.params[f"V{l}"] = Q[None], P[None]
    stack.params["v"] = -np.eye(D + 1)[:, D:]
    np.testing.assert_allclose(
        stack.forward(Z)[:, 0], forward.stack_predict(Z, A, B), rtol=1e-12, atol=1e-12
    )
