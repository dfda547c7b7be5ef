"""Prompt tasks, each generated locally from a seed.

Every generator returns a :class:`Task`: training and test :class:`mlp.Dataset` s with prompts
``X (n, d, c)`` (tokens as columns), labels ``y (n,)``, the index of the target token where the
task has one, queries ``Z (n, d, 1)`` for cross attention, and task-specific arrays in ``info``.
The in-context regression task trains on a :class:`mlp.train.Stream` instead: fresh prompts at
every step, a pure function of ``(seed, step)``. The next-token tasks (``markov-in-context``,
``repeated-tokens``) hold integer token sequences ``X (n, C)`` with next-token targets
``y (n, C)``, also from a stream (sequences drawn by :mod:`attnlab.sequences`).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from einops import rearrange

from attnlab.sequences import markov_sequences, repeated_token_sequences
from mlp.contract import contract
from mlp.data import load_iris_split
from mlp.train.data import Dataset, Stream
from mlp.validation import as_float_array, check_finite, check_seed, choice, positive

COVARIANCES = ("identity", "spread")


@dataclass
class Task:
    """A task's data: ``train`` and ``test`` datasets and extra arrays (``info``)."""

    name: str
    train: Dataset | Stream
    test: Dataset
    n_classes: int
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def d(self) -> int:
        """Features per token of the prompts ``X (n, d, c)``; a task of integer tokens has none
        (its vocabulary is ``info['vocab']``) and raises ``ValueError``."""
        if self.test.X.dtype.kind in "iu":
            raise ValueError(
                f"task {self.name!r} holds integer tokens, not feature vectors: it has no d "
                f"(its vocabulary is info['vocab'] = {self.info.get('vocab')})"
            )
        return int(self.test.X.shape[1])


def _balanced_labels(n: int, k: int, rng: np.random.Generator) -> np.ndarray:
    return rng.permutation(np.arange(n) % k)


def iris_in_context(
    n_train: int = 2000,
    n_test: int = 500,
    context: int = 16,
    features: int = 4,
    seed: int = 0,
) -> Task:
    """Prompts of ``context`` iris flowers; one marked flower's class is the label (k = 3).

    Token ``t`` of a prompt is ``[standardized features of flower f_t, marker, 1]`` (d =
    ``features + 2``); exactly one token, at a uniformly random position, has marker 1. Labels
    are balanced over the three classes; the marked flower is drawn from its class, the other
    tokens uniformly from the split. Train prompts use only flowers of the iris train split, test
    prompts only the test split (``info['train_flowers']``, ``info['test_flowers']``: the row of
    each token's flower in the 150-flower table, shape ``(n, c)``). The split is seeded by ``seed``
    too, and standardized with the training mean and standard deviation.
    """
    positive("context", context, integer=True)
    positive("n_train", n_train, integer=True)
    positive("n_test", n_test, integer=True)
    split = load_iris_split(features=features, seed=seed, standardize=True)
    rng = np.random.default_rng([seed, 1])

    def make(
        n: int, Xs: np.ndarray, ys: np.ndarray, rows: np.ndarray
    ) -> tuple[Dataset, np.ndarray]:
        y = _balanced_labels(n, 3, rng)
        flowers = rng.integers(0, len(ys), size=(n, context))
        target = rng.integers(0, context, size=n)
        for i in range(n):  # the marked flower: one of the label's class
            flowers[i, target[i]] = rng.choice(np.flatnonzero(ys == y[i]))
        X = np.empty((n, features + 2, context))
        X[:, :features, :] = Xs[flowers].transpose(0, 2, 1)
        X[:, features, :] = 0.0
        X[np.arange(n), features, target] = 1.0
        X[:, features + 1, :] = 1.0
        return Dataset(X, y, target=target), rows[flowers]

    train, train_rows = make(n_train, split.X_train, split.y_train, split.train_index)
    test, test_rows = make(n_test, split.X_test, split.y_test, split.test_index)
    info = {
        "train_flowers": train_rows,
        "test_flowers": test_rows,
        "feature_names": split.feature_names,
    }
    return Task("iris-in-context", train, test, 3, info)


def _unit(a: np.ndarray, axis: int) -> np.ndarray:
    return a / np.linalg.norm(a, axis=axis, keepdims=True)


def max_margin(n: int = 6, context: int = 8, d: int = 10, seed: int = 0) -> Task:
    """Tarzanagh et al. 2023 ("Transformers as SVMs", ``local_converge``): cross attention data.

    Tokens ``x_t`` and one query ``z_i`` per prompt drawn from N(0, I) and scaled to unit norm;
    a fixed random unit head ``v (d,)`` in ``info['v']``; labels +-1 at random. ``X (n, d, c)``,
    ``Z (n, d, 1)``. There is no held-out set: ``test`` is ``train``. ``target`` is the token
    with the best score ``y_i v^T x_it`` (the globally optimal token; the trained attention may
    select a locally optimal one instead).
    """
    for name, value in (("n", n), ("context", context), ("d", d)):
        positive(name, value, integer=True)
    rng = np.random.default_rng(seed)
    v = _unit(rng.standard_normal(d), 0)
    y = np.where(rng.standard_normal(n) > 0, 1.0, -1.0)
    X = _unit(rng.standard_normal((n, d, context)), 1)
    Z = _unit(rng.standard_normal((n, d, 1)), 1)
    target = np.argmax(y[:, None] * contract("n d c, d -> n c", X, v), axis=1)
    data = Dataset(X, y, Z=Z, target=target)
    return Task("max-margin", data, data, 1, {"v": v})


def prompt_norm(n: int = 3, context: int = 7, seed: int = 0) -> Task:
    """Tarzanagh et al. 2023 ("Max-Margin Token Selection", ``multi_input_converge``), d = 3.

    Token 0 sits near (1, 0), tokens 1..(c-1)//2 (1..3 for c = 7) near (-1, 1), the others near
    (-0.5, -0.5) (Gaussian
    spread 0.2); the third coordinate is the token's score, read by the fixed head ``v = e3``:
    1 for token 0 (the optimal token, ``target``), 0.5 for the others. All labels are +1.
    """
    positive("n", n, integer=True)
    positive("context", context, integer=True)
    rng = np.random.default_rng(seed)
    X = 0.2 * rng.standard_normal((n, 3, context))
    X[:, :, 0] += np.array([1.0, 0.0, 0.0])
    half = (context + 1) // 2
    X[:, :, 1:half] += np.array([-1.0, 1.0, 0.0])[:, None]
    X[:, :, half:] += np.array([-0.5, -0.5, 0.0])[:, None]
    X[:, 2, 0] = 1.0
    X[:, 2, 1:] = 0.5
    y = np.ones(n)
    data = Dataset(X, y, target=np.zeros(n, dtype=np.int64))
    return Task("prompt-norm", data, data, 1, {"v": np.array([0.0, 0.0, 1.0])})


def covariance_matrix(covariance: str | np.ndarray, d: int) -> np.ndarray:
    """``Lambda (d, d)``: ``'identity'`` is ``I_d``, ``'spread'`` is ``diag(linspace(0.5, 2, d))``;
    an array must be a finite symmetric positive definite ``(d, d)`` matrix."""
    d = positive("d", d, integer=True)
    if isinstance(covariance, str):
        choice("covariance", covariance, COVARIANCES)
        return np.eye(d) if covariance == "identity" else np.diag(np.linspace(0.5, 2.0, d))
    Lam = as_float_array("covariance", covariance, ndim=2).astype(np.float64)
    if Lam.shape != (d, d):
        raise ValueError(f"covariance: expected shape (d={d}, d={d}), received {Lam.shape}")
    check_finite("covariance", Lam)
    if not np.allclose(Lam, Lam.T, rtol=1e-12, atol=0) or np.linalg.eigvalsh(Lam)[0] <= 0:
        raise ValueError("covariance: expected a symmetric positive definite matrix")
    return Lam


def regression_prompts(n: int, N: int, Lambda: np.ndarray, rng: np.random.Generator) -> Dataset:
    """``n`` prompts of in-context linear regression: ``Dataset(E (n, d+1, N+1), t (n,))``.

    Per prompt: ``x_1..x_N, x_q ~ N(0, Lambda)`` and ``w ~ N(0, I_d)``; column ``i`` of ``E`` is
    ``(x_i, y_i)`` with ``y_i = <w, x_i>``, the last column is the query ``(x_q, 0)`` and the
    target is ``t = <w, x_q>``. ``x = L z`` with ``Lambda = L L^T`` (Cholesky), ``z ~ N(0, I)``.
    """
    return _prompts(n, N, np.linalg.cholesky(Lambda), rng)


def _prompts(n: int, N: int, L: np.ndarray, rng: np.random.Generator) -> Dataset:
    """:func:`regression_prompts` with the Cholesky factor ``L (d, d)`` of ``Lambda`` given."""
    d = L.shape[0]
    E = np.empty((n, d + 1, N + 1))
    x = E[:, :d, :]
    np.matmul(L, rng.standard_normal((n, d, N + 1)), out=x)  # x = L z, written into E
    w = rng.standard_normal((n, 1, d))
    np.matmul(w, x, out=E[:, d:, :])  # y = w^T x, the last row
    t = E[:, d, N].copy()
    E[:, d, N] = 0.0
    return Dataset(E, t)


def regression_test_prompts(
    n: int, M: int, Lambda: np.ndarray, seed: int, chunk: int = 10_000
) -> Iterator[Dataset]:
    """The test prompts of ``seed`` with ``M`` in-context examples, in pieces of at most
    ``chunk`` prompts (memory grows with the chunk, not with ``n``).

    Piece ``k`` comes from ``default_rng([seed, 1, M, k])``: a stream apart from training's
    ``[seed, 0, step]``, the same prompts for every model evaluated with the same arguments.
    """
    n, M, chunk = (positive(k, v, integer=True) for k, v in (("n", n), ("M", M), ("chunk", chunk)))
    L = np.linalg.cholesky(Lambda)
    for k, start in enumerate(range(0, n, chunk)):
        rng = np.random.default_rng([check_seed(seed), 1, M, k])
        yield _prompts(min(chunk, n - start), M, L, rng)


def linear_regression_in_context(
    d: int = 5,
    N: int = 20,
    covariance: str | np.ndarray = "identity",
    seed: int = 0,
    batch_size: int = 250,
    n_test: int = 10_000,
) -> Task:
    """Zhang, Frei and Bartlett 2023 (arXiv 2306.09927): linear regression in context.

    ``train`` is a :class:`mlp.train.Stream`: update ``step`` gets ``batch_size`` fresh prompts
    from ``default_rng([seed, 0, step])`` (see :func:`regression_prompts`); ``test`` holds
    ``n_test`` prompts of :func:`regression_test_prompts` (in one piece). Prompts ``E (n, d+1,
    N+1)``, real targets ``(n,)``; ``info['Lambda']`` is the covariance of ``x``, ``info['N']``
    the number of in-context examples.
    """
    Lam = covariance_matrix(covariance, d)
    N = positive("N", N, integer=True)
    batch_size = positive("batch_size", batch_size, integer=True)
    seed = check_seed(seed)

    L = np.linalg.cholesky(Lam)

    def batch(step: int) -> Dataset:
        return _prompts(batch_size, N, L, np.random.default_rng([seed, 0, step]))

    (test,) = regression_test_prompts(n_test, N, Lam, seed, chunk=n_test)
    train = Stream(batch, "linear-regression-in-context")
    return Task("linear-regression-in-context", train, test, 1, {"Lambda": Lam, "N": N})


def _token_stream(name: str, make: Callable[[np.random.Generator], Dataset], seed: int) -> Stream:
    """Update ``step`` gets ``make(default_rng([seed, 0, step]))``: fresh sequences, a pure
    function of ``(seed, step)``."""
    return Stream(lambda step: make(np.random.default_rng([seed, 0, step])), name)


def markov_in_context(
    states: int = 2, context: int = 100, seed: int = 0, batch_size: int = 64, n_test: int = 1000
) -> Task:
    """Edelman et al. 2024 (arXiv 2402.11004): next-token prediction on in-context Markov chains.

    Every sequence draws its own ``states x states`` transition matrix (rows ~ Dirichlet(1)), a
    first state from its stationary distribution, then ``context`` tokens of the chain (see
    :func:`attnlab.sequences.markov_sequences`): ``X (n, C)`` and the next tokens ``y (n, C)``,
    int64 in ``0..states-1``. ``train`` is a :class:`mlp.train.Stream` of ``batch_size`` fresh
    sequences per update from ``default_rng([seed, 0, step])``; ``test`` holds ``n_test``
    sequences from ``default_rng([seed, 1])``. ``info['transitions'] (n_test, k, k)``: the test
    sequences' true matrices (for :func:`attnlab.induction.last_token_kl` and
    :func:`attnlab.induction.baselines`); ``info['vocab']``: ``states``.
    """
    seed = check_seed(seed)
    batch_size = positive("batch_size", batch_size, integer=True)
    test, P = markov_sequences(n_test, states, context, np.random.default_rng([seed, 1]))
    train = _token_stream(
        "markov-in-context",
        lambda rng: markov_sequences(batch_size, states, context, rng)[0],
        seed,
    )
    info = {"transitions": P, "vocab": int(states), "context": int(context)}
    return Task("markov-in-context", train, test, int(states), info)


def repeated_tokens(
    vocab: int = 16, context: int = 32, seed: int = 0, batch_size: int = 64, n_test: int = 1000
) -> Task:
    """The induction probe: ``r_1..r_m`` uniform over ``0..vocab-1``, then the same ``m =
    context / 2`` tokens again (see :func:`attnlab.sequences.repeated_token_sequences`);
    targets are the next tokens (the last one ``r_1``). ``train``: a stream of ``batch_size``
    fresh sequences per update from ``default_rng([seed, 0, step])``; ``test``: ``n_test``
    sequences from ``default_rng([seed, 1])``. ``info['vocab']``: ``vocab``."""
    seed = check_seed(seed)
    batch_size = positive("batch_size", batch_size, integer=True)
    test = repeated_token_sequences(n_test, vocab, context, np.random.default_rng([seed, 1]))
    train = _token_stream(
        "repeated-tokens",
        lambda rng: repeated_token_sequences(batch_size, vocab, context, rng),
        seed,
    )
    info = {"vocab": int(vocab), "context": int(context)}
    return Task("repeated-tokens", train, test, int(vocab), info)


def fixed_head(task: Task, model: Any) -> list[str]:
    """Give ``model`` (anything with a ``params`` dict) the task's fixed head and return the
    parameter keys left to train.

    A task with ``info['v'] (d,)`` (max-margin, prompt-norm) fixes the linear head: the model's
    ``params['v'] (d, 1)`` becomes ``v`` (in the model's dtype) and every other key is trained.
    Otherwise (no such vector, or an MLP head) nothing is fixed and every key is returned.
    Raises ``ValueError`` when the model's ``v`` is not ``(d, 1)`` (one logit).
    """
    keys = list(model.params)
    if "v" not in task.info or "v" not in model.params:
        return keys
    v = np.asarray(task.info["v"])
    old = model.params["v"]
    if old.shape != (v.size, 1):
        raise ValueError(
            f"model: expected a linear head v of shape (d={v.size}, 1) for the fixed head of "
            f"task {task.name!r}, received params['v'] of shape {old.shape}"
        )
    model.params["v"] = rearrange(v, "d -> d 1").astype(old.dtype)
    return [k for k in keys if k != "v"]


@dataclass(frozen=True)
class TaskSpec:
    """One entry of the task registry: the generator ``make(**options) -> Task``, whether its
    training data is a stream of fresh prompts, and ``settings``: the model and training options
    the attention experiment uses for it by default (the published settings, for the tasks of a
    paper), as ``attention``, ``pool``, ``head``, ``context``, ``optimizer``, ``lr``, ``steps``;
    ``target_name``: what figures call its target token."""

    name: str
    make: Callable[..., Task]
    stream: bool = False
    settings: Mapping[str, Any] = field(default_factory=dict)
    target_name: str = "target token"


#: The tasks, by name. A new task is one :func:`register_task` call (here, or in a study).
REGISTRY: dict[str, TaskSpec] = {}


def register_task(spec: TaskSpec) -> TaskSpec:
    """Add ``spec`` to :data:`REGISTRY` (a name already taken raises ``ValueError``)."""
    if spec.name in REGISTRY:
        raise ValueError(f"task: {spec.name!r} is registered already")
    REGISTRY[spec.name] = spec
    return spec


register_task(TaskSpec("iris-in-context", iris_in_context, target_name="marked token"))
register_task(
    TaskSpec(
        "max-margin",
        max_margin,
        # Tarzanagh et al.'s local_converge: full batch, normalized GD, the head fixed
        settings={
            "attention": "cross",
            "pool": "mean",
            "head": "linear",
            "context": 8,
            "optimizer": "ngd",
            "lr": 0.1,
            "steps": 2000,
        },
        target_name="optimal token",
    )
)
register_task(
    TaskSpec(
        "prompt-norm",
        prompt_norm,
        # multi_input_converge: 1000 steps, as in the paper (||p|| is read at step 200)
        settings={
            "attention": "prompt",
            "pool": "mean",
            "head": "linear",
            "context": 7,
            "optimizer": "ngd",
            "lr": 0.1,
            "steps": 1000,
        },
        target_name="optimal token",
    )
)
register_task(TaskSpec("linear-regression-in-context", linear_regression_in_context, stream=True))
register_task(
    TaskSpec(
        "markov-in-context",
        markov_in_context,
        stream=True,
        # Edelman et al.'s runs: 100 tokens, AdamW at 5e-4, batch 64, 2000 updates
        settings={
            "context": 100,
            "optimizer": "adamw",
            "lr": 5e-4,
            "batch_size": 64,
            "steps": 2000,
        },
        target_name="next token",
    )
)
register_task(TaskSpec("repeated-tokens", repeated_tokens, stream=True, target_name="next token"))

#: The names of the tasks with a fixed set of prompts, and of those whose training data is a
#: stream of fresh prompts (the registry as it is at import).
TASKS = tuple(k for k, v in REGISTRY.items() if not v.stream)
STREAM_TASKS = tuple(k for k, v in REGISTRY.items() if v.stream)


def make_task(name: str, **options: Any) -> Task:
    """The task called ``name`` (a key of :data:`REGISTRY`) with its generator's options."""
    choice("task", name, tuple(REGISTRY))
    fn = REGISTRY[name].make
    allowed = list(inspect.signature(fn).parameters)
    unknown = sorted(k for k in options if k not in allowed)
    if unknown:
        raise ValueError(f"task {name!r}: unknown option(s) {unknown}; expected options {allowed}")
    return fn(**options)
