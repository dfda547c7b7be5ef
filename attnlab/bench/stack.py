"""The attention stack's step against the same model in PyTorch autograd, in one process (the
benchmark's part ``stack``).

:func:`bench_stack` times ``AttentionStack.loss_and_grads`` (real prompts, ``attention="self"``,
no layer norm, readout at the last token, logistic loss) and :func:`torch_stack_step`, the same
forward written for PyTorch CPU autograd as one would write it (heads as a batch axis, the mask
by ``masked_fill``, the whole top layer computed; and with the library's shortcut of the top
layer's last query alone), at every library's default thread count.
Before timing it checks that the two give the same loss and gradients. Timing: each function's
``timeit.Timer.autorange`` loop count, then ``repeats`` samples of each, the two alternating;
the report keeps every sample and their medians.

torch is imported when a benchmark needs it (the ``bench`` extra).
"""

from __future__ import annotations

import timeit
from collections.abc import Callable
from typing import Any

import numpy as np

from attnlab.models.stack import AttentionStack

Step = Callable[[], tuple[float, dict[str, np.ndarray]]]


def stack_problem(
    n: int = 256,
    d: int = 64,
    c: int = 64,
    layers: int = 2,
    heads: int = 4,
    mask: str | None = "causal",
    seed: int = 0,
) -> tuple[AttentionStack, np.ndarray, np.ndarray]:
    """The benchmark's model and data: ``(model, X (n, d, c), y (n,))``, float64, standard
    normal prompts and random labels +-1."""
    model = AttentionStack(d, layers=layers, heads=heads, mask=mask, seed=seed)
    rng = np.random.default_rng([seed, 1])
    X = rng.standard_normal((n, d, c))
    y = rng.choice([-1.0, 1.0], size=n)
    return model, X, y


def torch_stack_step(
    model: AttentionStack, X: np.ndarray, y: np.ndarray, last_query: bool = False
) -> Step:
    """``model``'s step in PyTorch autograd (textbook softmax backward): a function returning
    ``(loss, grads)`` for the fixed ``X``, ``y``. For ``attention="self"``, real prompts, no
    layer norm or positions, readout ``"last"`` with the logistic loss; raises ImportError
    without torch. ``last_query=True``: the top layer computes the last token's query alone,
    the shortcut the library takes (the readout reads nothing else)."""
    import torch

    if (
        model.attention != "self"
        or model.vocab is not None
        or model.layernorm
        or model.positions is not None
        or model.loss != "logistic"
    ):
        raise ValueError("torch_stack_step: expected self attention on prompts, logistic loss")
    Xt = torch.from_numpy(X)
    yt = torch.from_numpy(y.astype(X.dtype))
    leaves = {k: torch.from_numpy(v.copy()).requires_grad_() for k, v in model.params.items()}
    c = X.shape[2]
    s, t = torch.arange(c)[:, None], torch.arange(c)[None, :]
    masked = {None: None, "causal": s > t, "exclude-last": (s == c - 1).expand(c, c)}[model.mask]
    zero = torch.zeros(X.shape[0], dtype=Xt.dtype)

    def step() -> tuple[float, dict[str, np.ndarray]]:
        for p in leaves.values():
            p.grad = None
        x = Xt  # (n, d, c)
        for l in range(model.layers):
            k = 0 if model.shared else l
            W, V = leaves[f"W{k}"], leaves[f"V{k}"]  # (h, d, d)
            xh = x.unsqueeze(1)  # (n, 1, d, c)
            top = last_query and l == model.layers - 1
            queries = xh[..., -1:] if top else xh
            scores = xh.transpose(-1, -2) @ (W @ queries)  # (n, h, c, c or 1) [s, t]
            if masked is not None:
                scores = scores.masked_fill(masked[:, -1:] if top else masked, float("-inf"))
            S = torch.softmax(scores, dim=-2)
            x = (x[:, :, -1:] if top else x) + (V @ (xh @ S)).sum(dim=1)
        z = x[:, :, -1] @ leaves["v"]
        loss = torch.logaddexp(zero, -yt * z[:, 0]).mean()
        loss.backward()
        return float(loss.detach()), {k: p.grad.numpy() for k, p in leaves.items()}

    return step


def max_rel_error(a: tuple[float, dict], b: tuple[float, dict]) -> float:
    """Largest relative error between two ``(loss, grads)``, over the loss and each gradient
    (relative to the gradient's largest entry)."""
    errs = [abs(a[0] - b[0]) / max(abs(b[0]), 1e-30)]
    for k, g in b[1].items():
        errs.append(float(np.max(np.abs(a[1][k] - g)) / max(np.max(np.abs(g)), 1e-30)))
    return max(errs)


def time_alternating(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, list[float]]:
    """Seconds per call of each function: its ``timeit.Timer.autorange`` loop count, then
    ``repeats`` samples of each, the functions taking turns (the first of each round
    alternating)."""
    timers = {k: timeit.Timer(f) for k, f in fns.items()}
    number = {k: t.autorange()[0] for k, t in timers.items()}
    keys = list(fns)
    times: dict[str, list[float]] = {k: [] for k in keys}
    for r in range(repeats):
        for k in keys[r % len(keys) :] + keys[: r % len(keys)]:
            times[k].append(timers[k].timeit(number[k]) / number[k])
    return times


def bench_stack(
    n: int = 256,
    d: int = 64,
    c: int = 64,
    layers: int = 2,
    heads: int = 4,
    mask: str | None = "causal",
    repeats: int = 7,
    seed: int = 0,
    torch: bool = True,
) -> dict[str, Any]:
    """Time the stack's ``loss_and_grads`` against :func:`torch_stack_step` at the default
    thread counts: ``{"sizes", "max_rel_error", "times": {"attnlab": [...], "torch": [...],
    "torch_last_query": [...]}, "median": {...}, "ratio", "ratio_last_query"}``: ``ratio`` is
    the attnlab median over the median of PyTorch as written (the whole top layer),
    ``ratio_last_query`` over PyTorch with the library's shortcut (the top layer's last query
    alone), in seconds per step. Raises ImportError without torch; ``torch=False`` times
    attnlab alone (no error, no ratios: those keys are None)."""
    model, X, y = stack_problem(n, d, c, layers, heads, mask, seed)
    fns: dict[str, Step] = {"attnlab": lambda: model.loss_and_grads(X, y)}
    if torch:
        fns["torch"] = torch_stack_step(model, X, y)
        fns["torch_last_query"] = torch_stack_step(model, X, y, last_query=True)
    results = {k: f() for k, f in fns.items()}
    others = [max_rel_error(results["attnlab"], results[k]) for k in fns if k != "attnlab"]
    times = time_alternating(fns, repeats)  # type: ignore[arg-type]
    median = {k: float(np.median(v)) for k, v in times.items()}
    return {
        "sizes": {"n": n, "d": d, "c": c, "layers": layers, "heads": heads, "mask": mask},
        "max_rel_error": max(others) if others else None,
        "times": times,
        "median": median,
        "ratio": median["attnlab"] / median["torch"] if torch else None,
        "ratio_last_query": median["attnlab"] / median["torch_last_query"] if torch else None,
    }


# --- the benchmark part (attnlab.bench.PARTS["stack"]) ------------------------------------------

#: The sizes of the stack's step in each mode (the quick test shrinks them).
SIZES = {"n": 256, "d": 64, "c": 64, "layers": 2, "heads": 4, "mask": "causal"}


def measure(options: Any) -> dict[str, Any]:
    """The part: :func:`bench_stack` at :data:`SIZES` (tiny ones in the tests' mode), with the
    mode's repeats; attnlab alone without torch (``torch_note`` says why)."""
    sizes = dict(SIZES)
    if not options.sizes.autorange:  # --quick-test
        sizes.update(n=4, d=4, c=5, heads=2)
    res = bench_stack(
        **sizes, repeats=options.sizes.repeats, seed=options.seed, torch=options.torch_note is None
    )
    res["torch_note"] = options.torch_note
    return res


def figure(res: dict[str, Any], path: Any) -> None:
    """Median time of one step (with the interquartile range): attnlab beside PyTorch as written
    and with the top layer's last query alone (attnlab alone without torch)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mlp.train.folders import save_figure

    names = list(res["times"])
    t = [np.asarray(res["times"][k]) * 1e3 for k in names]
    med = [float(np.median(v)) for v in t]
    low = [m - np.percentile(v, 25) for m, v in zip(med, t, strict=True)]
    high = [np.percentile(v, 75) - m for m, v in zip(med, t, strict=True)]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    colors = [f"C{i}" for i in range(len(names))]
    ax.bar(range(len(names)), med, yerr=[low, high], capsize=3, color=colors)
    ax.set_xticks(range(len(names)), names)
    ax.set_ylabel("ms per step (median, IQR)")
    s = res["sizes"]
    ax.set_title(
        f"stack step: L={s['layers']}, H={s['heads']}, C={s['c']}, d={s['d']}, n={s['n']}, "
        f"{s['mask']}, float64, default threads"
        + ("" if res["ratio"] is None else f"; ratio {res['ratio']:.2f}x"),
        fontsize=9,
    )
    save_figure(fig, path, dpi=120)
    plt.close(fig)


def report(res: dict[str, Any]) -> list[str]:
    """The part's lines: the sizes, the medians and the two ratios."""
    s, m = res["sizes"], res["median"]
    head = [
        "",
        f"stack step (loss_and_grads): L = {s['layers']}, H = {s['heads']}, C = {s['c']}, "
        f"d = {s['d']}, n = {s['n']}, mask {s['mask']}, float64, default threads; medians",
    ]
    if res["ratio"] is None:
        return [
            *head,
            f"attnlab {m['attnlab'] * 1e3:.1f} ms; PyTorch not timed ({res['torch_note']})",
        ]
    return [
        *head,
        "| attnlab | PyTorch | attnlab / PyTorch | PyTorch, last query only | ratio |",
        "| --- | --- | --- | --- | --- |",
        f"| {m['attnlab'] * 1e3:.1f} ms | {m['torch'] * 1e3:.1f} ms | {res['ratio']:.2f}x | "
        f"{m['torch_last_query'] * 1e3:.1f} ms | {res['ratio_last_query']:.2f}x |",
        f"checked before timing, largest relative error {res['max_rel_error']:.1e}",
    ]


def targets(res: dict[str, Any]) -> list[tuple[str, float | None, str]]:
    """The stack's ratio to PyTorch as written, at the default thread count."""
    return [("stack step vs torch", res.get("ratio"), "stack_vs_torch_max")]
