"""``svm-multi-token``: multi-token selection (Tarzanagh et al., "Transformers as Support Vector
Machines", arXiv 2308.16898, ``TFasSVM/multi_token_converge.ipynb``).

With a ReLU value head the trained softmax may keep several tokens of a prompt. Then ``W``'s
direction tends to ``W^SVMeq = W^fin + R W^mm`` (:func:`attnlab.svm.svm_eq`): ``W^mm`` scores
the selected tokens of each prompt equally and 1 above the others, ``W^fin`` fits the
log-ratios of the selected weights. A run of this study is one block of data seeds ``seed ..
seed + seeds - 1`` at one ``d``, each seed trained and judged as in the notebook (the report,
:mod:`attnlab.studies.svm_multi_token_report`, takes blocks in seed order until it has the
first ``kept`` runs that pass):

- data of seed ``s`` (:func:`prompts`, drawn by ``default_rng(s)``): ``V (d, d)`` standard
  normal over its Frobenius norm, then ``n = 3`` prompts of ``T = 4`` unit tokens, labels +-1
  (a seed whose labels are all +1 is skipped, as the authors do), unit queries ``z_i``, then
  ``W`` from ``U(-1/sqrt(d), 1/sqrt(d))`` (PyTorch's ``nn.Linear`` default; theirs is unseeded);
- model (:mod:`attnlab.models.relu_batch`): ``o_i = 1^T relu(V^T X_i softmax(X_i^T W z_i))``,
  logistic loss; ``W`` trained by normalized GD ``W <- W - lr g / (||g||_F + eps)`` (``eps`` =
  float64's machine epsilon), lr 0.1, 2001 iterations, ``chunk`` seeds side by side;
- filter, on the softmax of the last forward pass (after 2000 updates): a run is kept if no
  weight lies in ``(1e-6, 1e-3]`` and at least one is ``<= 1e-6``, and if the SVMs below are
  feasible (the authors catch the solver's failure);
- the selected set is the tokens with weight ``> 1e-3``; ``W^SVMeq`` and ``W^mm`` of that set and
  the one-token SVM of each prompt's argmax (:func:`attnlab.svm.attention_svm`) are compared
  with ``W`` after iterations ``1, 101, ..., 2001`` (recorded after the steps at ``it % 100 ==
  0``, as the notebook does), ``W^fin + R W^mm`` fitted to the final ``W``.

A run writes ``config.json``, ``runs.npz`` and ``metrics.json`` (last). ``runs.npz``: per seed
of the block ``seeds`` and ``outcome`` (an index into :data:`OUTCOMES`); per kept run
``kept_seeds``, ``gap_svmeq``, ``gap_mm``, ``gap_one_token`` ``(kept, records)`` of ``1 -
correlation``, ``masked_max`` (the largest softmax weight outside the selected set) and
``selected`` (how many tokens are selected in all); ``steps``, the recorded iterations.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from attnlab.models.relu_batch import relu_head_batch
from attnlab.svm import attention_svm, cosines, svm_eq
from mlp.train.folders import create_run_dir, save_arrays, write_json
from mlp.validation import check_seed, positive

__all__ = ["DEFAULTS", "NAME", "OUTCOMES", "prompts", "resolve", "run_experiment", "train_chunk"]

NAME = "svm-multi-token"
#: Prompts per problem and tokens per prompt (the notebook's n and T).
N, CONTEXT = 3, 4
#: The keep filter: no weight in (LOW, HIGH], some weight <= LOW; selected: weight > HIGH.
LOW, HIGH = 1e-6, 1e-3
#: ``W`` is recorded after the steps at iterations ``0, RECORD_EVERY, ...``.
RECORD_EVERY = 100
EPS = float(np.finfo(np.float64).eps)
DEFAULTS: dict[str, Any] = {
    "seed": 1,
    "d": 4,
    "seeds": 1024,
    "steps": 2001,
    "lr": 0.1,
    "chunk": 256,
}
#: What becomes of a seed: kept, or left out (a weight in (LOW, HIGH], no weight <= LOW, an
#: infeasible SVM, or labels all +1).
OUTCOMES = ("kept", "between", "finite", "infeasible", "all_positive")
PRELOAD = ("scipy.optimize",)


def resolve(config: Mapping[str, Any]) -> dict[str, Any]:
    """``config`` completed by :data:`DEFAULTS` and checked (``ValueError`` names the option)."""
    if not isinstance(config, Mapping):
        raise TypeError(f"config: expected a mapping of options, received {type(config).__name__}")
    unknown = sorted(set(config) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"config: unknown option(s) {unknown}; expected some of {list(DEFAULTS)}")
    cfg = {**DEFAULTS, **config}
    cfg["seed"] = check_seed(cfg["seed"])
    for key in ("d", "seeds", "steps", "chunk"):
        cfg[key] = positive(key, cfg[key], integer=True)
    cfg["lr"] = float(positive("lr", cfg["lr"]))
    if cfg["steps"] < 2:
        raise ValueError(f"steps: expected at least 2, received {cfg['steps']}")
    return cfg


def prompts(seed: int, d: int) -> dict[str, np.ndarray] | None:
    """The problem of data seed ``seed``: ``X (n, d, c)``, ``Z (n, d)``, ``y (n,)``,
    ``V (d, d)`` and the initial ``W (d, d)``, drawn by ``default_rng(seed)`` in the notebook's
    order (``V``, ``X``, ``y``, ``Z``, then ``W``); None when every label is +1."""
    rng = np.random.default_rng(seed)
    V = rng.standard_normal((d, d))
    V /= np.linalg.norm(V)
    X = rng.standard_normal((N, d, CONTEXT))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    y = np.where(rng.standard_normal(N) > 0, 1.0, -1.0)
    Z = rng.standard_normal((N, d))
    Z /= np.linalg.norm(Z, axis=1, keepdims=True)
    if not (y == -1).any():
        return None
    bound = 1.0 / np.sqrt(d)
    return {"X": X, "Z": Z, "y": y, "V": V, "W": rng.uniform(-bound, bound, (d, d))}


def train_chunk(
    data: Mapping[str, np.ndarray], steps: int, lr: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Normalized GD on every problem of ``data`` (stacked: ``X (s, n, d, c)``, ``Z (s, n,
    d)``, ``y (s, n)``, ``V (s, d, d)``, initial ``W (s, d, d)``) for ``steps`` iterations.

    Returns ``(records (r, s, d, d), last (s, n, c), recorded (r,))``: ``W`` after the step of
    each iteration ``0, RECORD_EVERY, ...`` (that is, after ``recorded`` updates), and the
    softmax of the last forward pass (after ``steps - 1`` updates)."""
    W = data["W"].copy()
    records, last = [], None
    for it in range(steps):
        _, g, weights = relu_head_batch(W, data["X"], data["Z"], data["y"], data["V"])
        if it == steps - 1:
            last = weights
        norm = np.sqrt(np.einsum("sed,sed->s", g, g))
        W -= (lr / (norm + EPS))[:, None, None] * g
        if it % RECORD_EVERY == 0:
            records.append(W.copy())
    recorded = np.arange(0, steps, RECORD_EVERY) + 1
    return np.array(records), last, recorded


def _judge(
    problem: Mapping[str, np.ndarray], weights: np.ndarray, trajectory: np.ndarray
) -> dict[str, Any] | str:
    """A trained problem's kept record, or why it is not kept: ``'between'`` (a weight in
    ``(LOW, HIGH]``), ``'finite'`` (no weight ``<= LOW``) or ``'infeasible'`` (an SVM)."""
    if np.any((weights > LOW) & (weights <= HIGH)):
        return "between"
    if not np.any(weights <= LOW):
        return "finite"
    X, Z = problem["X"], problem["Z"]
    try:
        eq = svm_eq(X, Z, weights, trajectory[-1], HIGH)
        one = attention_svm(X, Z, np.argmax(weights, axis=1))
    except ValueError:
        return "infeasible"
    return {
        "gap_svmeq": 1.0 - cosines(trajectory, eq.solution),
        "gap_mm": 1.0 - cosines(trajectory, eq.mm.solution),
        "gap_one_token": 1.0 - cosines(trajectory, one.solution),
        "masked_max": float(weights[~eq.selected].max()),
        "selected": int(eq.selected.sum()),
    }


def search(cfg: Mapping[str, Any]) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """Every seed of the block of ``cfg``, ``cfg['chunk']`` trained at a time; returns the
    arrays of ``runs.npz`` and how many seeds had each outcome."""
    d, first = cfg["d"], cfg["seed"]
    seeds = np.arange(first, first + cfg["seeds"])
    outcome = np.full(seeds.size, OUTCOMES.index("all_positive"))
    problems = [(k, prompts(int(s), d)) for k, s in enumerate(seeds)]
    problems = [(k, p) for k, p in problems if p is not None]
    kept: list[dict[str, Any]] = []
    recorded = np.arange(0, cfg["steps"], RECORD_EVERY) + 1
    for start in range(0, len(problems), cfg["chunk"]):
        chunk = problems[start : start + cfg["chunk"]]
        data = {k: np.stack([p[k] for _, p in chunk]) for k in ("X", "Z", "y", "V", "W")}
        records, last, recorded = train_chunk(data, cfg["steps"], cfg["lr"])
        for j, (k, problem) in enumerate(chunk):
            judged = _judge(problem, last[j], records[:, j])
            if isinstance(judged, str):
                outcome[k] = OUTCOMES.index(judged)
            else:
                outcome[k] = 0
                kept.append({"kept_seeds": seeds[k], **judged})
    r = recorded.size
    arrays: dict[str, np.ndarray] = {
        "kept_seeds": np.array([x["kept_seeds"] for x in kept], dtype=np.int64),
        **{
            key: np.array([x[key] for x in kept]).reshape(len(kept), r)
            for key in ("gap_svmeq", "gap_mm", "gap_one_token")
        },
        "masked_max": np.array([x["masked_max"] for x in kept], dtype=np.float64),
        "selected": np.array([x["selected"] for x in kept], dtype=np.int64),
        "seeds": seeds,
        "outcome": outcome,
        "steps": recorded,
    }
    return arrays, {name: int(np.sum(outcome == k)) for k, name in enumerate(OUTCOMES)}


def run_experiment(
    config: Mapping[str, Any], run_dir: str | Path, *, progress: bool | None = None
) -> dict[str, Any]:
    """One block of seeds at one ``d`` (``config``, see :data:`DEFAULTS`) written to
    ``run_dir``; returns the metrics: ``d``, ``kept_runs`` and how many seeds had each other
    outcome (:data:`OUTCOMES`), and over the block's kept runs the mean final ``1 -
    correlation`` with ``W^SVMeq`` (``svmeq``), ``W^mm`` (``mm``) and the one-token SVM
    (``one_token``; None without kept runs) and how many select more than one token in some
    prompt (``multi_token_runs``)."""
    cfg = resolve(config)
    out = create_run_dir(run_dir, NAME, files=("runs.npz",))
    arrays, counts = search(cfg)
    write_json(
        out / "config.json",
        {**cfg, "n": N, "context": CONTEXT, "low": LOW, "high": HIGH, "eps": EPS},
    )
    save_arrays(out / "runs.npz", arrays)
    k = arrays["kept_seeds"].size
    metrics = {
        "d": cfg["d"],
        "kept_runs": k,
        **{name: counts[name] for name in OUTCOMES[1:]},
        **{
            name: float(arrays[f"gap_{name}"][:, -1].mean()) if k else None
            for name in ("svmeq", "mm", "one_token")
        },
        "multi_token_runs": int(np.sum(arrays["selected"] > N)),
    }
    write_json(out / "metrics.json", metrics)  # last: the run folder is complete
    return metrics
