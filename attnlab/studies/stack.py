"""The stack experiment: one configured training of :class:`attnlab.AttentionStack` on a task that
fits it, from a plain config dict to a run folder and its metrics.

Tasks: ``repeated-tokens`` (random tokens, then the same tokens again: the induction probe) and
``markov-in-context`` (each sequence its own Markov chain), next-token prediction at every
position on integer tokens (``readout="tokens"``); and ``iris-in-context`` on real prompts, read
at the last token (``readout="last"``, cross-entropy over the three species). The stack's options
(``layers``, ``heads``, ``attention``, ``mask``, ``positions``, ``layernorm``, ...) are those of
the model; :data:`TASK_DEFAULTS` gives each task's defaults for the rest.

The run folder (through :mod:`mlp.train.folders`: one run, ``metrics.json`` last) holds
``config.json``, ``checkpoint.npz``, ``history.csv``, ``params.npz`` (the stack's keys),
``snapshots.npz`` (``X`` of a few test prompts, ``steps (t,)`` and every layer's and head's
weights ``S (t, p, l, h, c, c)`` at each evaluation), ``curves.png``, ``attention_layers.png``
(the first snapshot prompt at the end) and ``metrics.json``: the test loss and accuracy; on
``repeated-tokens`` the ``induction_score`` of the top layer and the ``previous_token_score`` of
the first (the best head of each), and ``induction_score_half_length``, the same probe on
prompts half as long (a head that matches tokens keeps its score there; one that attends at a
fixed offset, which a relative-position bias can learn for prompts of one length, does not); on
``markov-in-context`` the last-token KL to the true transition and its baselines.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from attnlab.blocks.heads import ATTENTIONS, MASKS, POSITIONS, SCORES
from attnlab.induction import baselines, induction_score, last_token_kl, previous_token_score
from attnlab.models.stack import AttentionStack
from attnlab.sequences import repeated_token_sequences
from attnlab.tasks import Task, make_task
from mlp.train.data import Dataset
from mlp.train.folders import (
    RunFolderError,
    create_run_dir,
    finish_run,
    load_arrays,
    load_model,
    read_json,
    resume_from,
    save_arrays,
    write_json,
)
from mlp.train.optim import OPTIMIZERS, make_optimizer
from mlp.train.trainer import Trainer
from mlp.validation import check_seed, choice, known_options, positive

#: What sweeps and run ids call this experiment.
NAME = "stack"
#: The tasks of integer tokens, and every task a stack trains on here.
TOKEN_TASKS = ("repeated-tokens", "markov-in-context")
STACK_TASKS = (*TOKEN_TASKS, "iris-in-context")
#: Every option and its default (``None``: the task's, from :data:`TASK_DEFAULTS`).
DEFAULTS: dict[str, Any] = {
    "task": "repeated-tokens",
    "layers": 2,
    "heads": 1,
    "attention": None,
    "rank": None,
    "scores": "softmax",
    "mask": None,
    "positions": None,
    "layernorm": None,
    "shared": False,
    "d": None,
    "vocab": None,
    "context": None,
    "optimizer": None,
    "lr": None,
    "steps": None,
    "batch_size": None,
    "seed": 0,
    "eval_every": None,
    "checkpoint_every": None,
    "snapshots": 4,
}
#: Each task's defaults: a 2-layer causal stack that forms an induction head on repeated tokens,
#: the in-context Markov chains of Edelman et al. (d = 16, T = 100, pre-layer norm, AdamW), and
#: a stack read at the last token of the demo's prompts.
TASK_DEFAULTS: dict[str, dict[str, Any]] = {
    "repeated-tokens": {
        "attention": "kq",
        "mask": "causal",
        "positions": "relative",
        "layernorm": False,
        "d": 32,
        "vocab": 16,
        "context": 32,
        "optimizer": "adam",
        "lr": 0.01,
        "steps": 1500,
        "batch_size": 64,
    },
    "markov-in-context": {
        "attention": "kq",
        "mask": "causal",
        "positions": "relative-key",
        "layernorm": True,
        "d": 16,
        "vocab": 2,
        "context": 100,
        "optimizer": "adamw",
        "lr": 5e-4,
        "steps": 2000,
        "batch_size": 64,
    },
    "iris-in-context": {
        "attention": "self",
        "mask": None,
        "positions": None,
        "layernorm": False,
        "d": None,
        "vocab": None,
        "context": 16,
        "optimizer": "sgd",
        "lr": 0.3,
        "steps": 2000,
        "batch_size": 64,
    },
}
#: What a run imports on first use (its figures): a sweep's worker processes start with these.
PRELOAD = ("attnlab.plots",)
#: The options a resumed experiment may change; every other one is the run folder's own.
CHANGEABLE_ON_RESUME = ("steps",)
#: The files of a run folder (``metrics.json`` is written last).
FILES = (
    "config.json",
    "checkpoint.npz",
    "history.csv",
    "params.npz",
    "snapshots.npz",
    "curves.png",
    "attention_layers.png",
    "metrics.json",
)
#: Test prompts evaluated at once by the probes (memory grows with this, not the test set).
PROBE_CHUNK = 256


def resolve(config: Mapping[str, Any]) -> dict[str, Any]:
    """The options of ``config`` (``None`` or absent: the task's default) completed and checked:
    an unknown key or a bad value raises ``ValueError`` naming the option; the model's own
    combinations are checked by building it (``AttentionStack`` names what does not fit)."""
    known_options(config, DEFAULTS)
    task = config.get("task") or DEFAULTS["task"]
    choice("task", task, STACK_TASKS)
    opts = {**DEFAULTS, **TASK_DEFAULTS[task]}
    opts.update({k: v for k, v in config.items() if v is not None})
    for name, valid in (
        ("attention", ATTENTIONS),
        ("scores", SCORES),
        ("optimizer", OPTIMIZERS),
    ):
        choice(name, opts[name], valid)
    for name, valid in (("mask", MASKS), ("positions", POSITIONS)):
        if opts[name] not in valid:
            raise ValueError(f"{name}: expected one of {list(valid)}, received {opts[name]!r}")
    for name in ("layers", "heads", "context", "steps", "snapshots", "batch_size"):
        positive(name, opts[name], integer=True)
    for name in ("rank", "d", "vocab", "eval_every", "checkpoint_every"):
        if opts[name] is not None:
            positive(name, opts[name], integer=True)
    for name in ("layernorm", "shared"):
        if not isinstance(opts[name], (bool, np.bool_)):
            raise ValueError(f"{name}: expected true or false, received {opts[name]!r}")
    if task == "iris-in-context" and (opts["d"] is not None or opts["vocab"] is not None):
        raise ValueError("d, vocab: iris-in-context's prompts set d (6 features) and have no vocab")
    if task == "markov-in-context" and opts["vocab"] < 2:
        raise ValueError(f"vocab: a Markov chain needs at least 2 states, received {opts['vocab']}")
    opts["lr"] = float(positive("lr", opts["lr"]))
    check_seed(opts["seed"])
    if opts["eval_every"] is None:
        opts["eval_every"] = max(1, opts["steps"] // 30)
    if opts["checkpoint_every"] is None:
        opts["checkpoint_every"] = opts["eval_every"]
    return opts


def _task(o: Mapping[str, Any]) -> Task:
    if o["task"] == "repeated-tokens":
        return make_task(
            o["task"], vocab=o["vocab"], context=o["context"], seed=o["seed"],
            batch_size=o["batch_size"], n_test=512,
        )  # fmt: skip
    if o["task"] == "markov-in-context":
        return make_task(
            o["task"], states=o["vocab"], context=o["context"], seed=o["seed"],
            batch_size=o["batch_size"], n_test=1000,
        )  # fmt: skip
    return make_task(o["task"], context=o["context"], seed=o["seed"])


def build_model(o: Mapping[str, Any], d: int | None = None) -> AttentionStack:
    """The stack of the options ``o`` (``d``: the prompts' features, for real prompts)."""
    tokens = o["vocab"] is not None
    return AttentionStack(
        o["d"] if tokens else d,
        layers=o["layers"],
        heads=o["heads"],
        attention=o["attention"],
        rank=o["rank"],
        scores=o["scores"],
        mask=o["mask"],
        positions=o["positions"],
        context=o["context"],
        vocab=o["vocab"],
        layernorm=o["layernorm"],
        shared=o["shared"],
        readout="tokens" if tokens else "last",
        n_classes=1 if tokens else 3,
        seed=o["seed"],
    )


@dataclass
class Experiment:
    """A prepared stack experiment: resolved ``options``, the ``task``, the ``model``, the
    ``trainer`` and the ``snapshot`` prompts (the first test prompts)."""

    options: dict[str, Any]
    task: Task
    model: AttentionStack
    trainer: Trainer
    snapshot: Dataset

    def probes(self) -> dict[str, float]:
        """The task's probes on the test prompts (in chunks of :data:`PROBE_CHUNK`)."""
        task, model = self.task, self.model
        if task.name == "repeated-tokens":
            first, last = [], []
            for part in task.test.chunks(PROBE_CHUNK):
                S = model.attention_weights(part.X)
                w = len(part)
                first.append(previous_token_score(S[0]) * w)
                last.append(induction_score(S[-1], part.X) * w)
            n = len(task.test)
            # the same probe on prompts half as long (another period): an induction head
            # matches tokens and keeps its score; attention at a fixed offset does not
            half = max(2, 2 * (self.options["context"] // 4))
            rng = np.random.default_rng([self.options["seed"], 3])
            short = repeated_token_sequences(PROBE_CHUNK, self.options["vocab"], half, rng).X
            return {
                "previous_token_score": float(np.max(np.sum(first, axis=0) / n)),
                "induction_score": float(np.max(np.sum(last, axis=0) / n)),
                "induction_score_half_length": float(
                    np.max(induction_score(model.attention_weights(short)[-1], short))
                ),
            }
        if task.name == "markov-in-context":
            X = task.test.X
            logits = np.concatenate(
                [model.forward(p.X)[:, :, -1] for p in task.test.chunks(PROBE_CHUNK)]
            )
            p = np.exp(logits - logits.max(axis=1, keepdims=True))
            p /= p.sum(axis=1, keepdims=True)
            P = task.info["transitions"]
            return {
                "last_token_kl": last_token_kl(P, X, p),
                **{f"{k}_kl": v for k, v in baselines(P, X).items()},
            }
        return {}

    def metrics(self) -> dict[str, Any]:
        """The final numbers: test loss and accuracy, final training loss, the probes, the task
        and the steps done."""
        last = self.trainer.history.last
        return {
            "test_loss": last.get("test_loss"),
            "test_accuracy": last.get("test_accuracy"),
            "final_loss": last.get("batch_loss", last.get("train_loss")),
            **(self.probes() if self.trainer.history.rows else {}),
            "task": self.options["task"],
            "steps": self.trainer.step,
        }

    def config(self) -> dict[str, Any]:
        """What ``config.json`` holds: the resolved options (so that the run can be resumed),
        the model's constructor arguments and the experiment's name."""
        return {**self.options, "experiment": NAME, "model": self.model.config}

    def save(self, run_dir: str | Path) -> None:
        """Write ``config.json``, ``history.csv``, ``params.npz`` and ``snapshots.npz``
        (``X`` of the snapshot prompts, ``steps (t,)``, ``S (t, p, l, h, c, c)``)."""
        out = Path(run_dir)
        h, snap = self.trainer.history, self.snapshot
        write_json(out / "config.json", self.config())
        h.to_csv(out / "history.csv")
        save_arrays(out / "params.npz", self.model.params)
        S = np.stack(h.snapshots) if h.snapshots else np.zeros((0, 0, 0, 0, 0, 0))
        steps = np.asarray(h.snapshot_steps, dtype=np.int64)
        save_arrays(out / "snapshots.npz", {"X": snap.X, "steps": steps, "S": S})


def prepare(
    config: Mapping[str, Any],
    checkpoint: str | Path | None = None,
    progress: bool | None = None,
) -> Experiment:
    """Build the task, the stack and the trainer of ``config`` (see :func:`resolve`)."""
    o = resolve(config)
    task = _task(o)
    d = None if o["vocab"] is not None else task.d
    model = build_model(o, d)
    # before any folder or array exists: a step must fit in memory
    model.check_fits(o["batch_size"], o["context"], training=True)
    snapshot = task.test.subset(np.arange(min(o["snapshots"], len(task.test))))
    stream = o["vocab"] is not None
    trainer = Trainer(
        model,
        make_optimizer(o["optimizer"]),
        task.train,
        steps=o["steps"],
        lr=o["lr"],
        batch_size=None if stream else o["batch_size"],
        test=task.test,
        eval_every=o["eval_every"],
        eval_batch_size=PROBE_CHUNK,
        seed=o["seed"],
        snapshot=snapshot,
        checkpoint=checkpoint,
        checkpoint_every=o["checkpoint_every"],
        progress=progress,
        description=f"{o['task']}, {o['layers']} layers x {o['heads']} heads",
    )
    return Experiment(o, task, model, trainer, snapshot)


def run_experiment(
    config: Mapping[str, Any], run_dir: str | Path | None = None, *, progress: bool | None = None
) -> dict[str, Any]:
    """Train the stack of ``config`` into a new run folder (``run_dir``, or a new
    ``runs/stack-<time>-<suffix>``; a folder that holds a run is refused). Returns what
    ``metrics.json`` holds, and ``run_dir``."""
    experiment = prepare(config, progress=progress)
    run_dir = create_run_dir(run_dir, NAME, config=experiment.config(), files=FILES)
    experiment.trainer.checkpoint = run_dir / "checkpoint.npz"
    return finish(experiment, run_dir)


def resume_experiment(
    run_dir: str | Path, steps: int | None = None, progress: bool | None = None
) -> Experiment:
    """Rebuild the experiment of ``run_dir`` with its own options and its last checkpoint;
    ``steps`` is the new total (None: the run's own). :func:`finish` then completes it,
    bit-identical to a run never interrupted."""
    return resume_from(run_dir, DEFAULTS, prepare, {"steps": steps}, progress, check=resolve)


def finish(experiment: Experiment, run_dir: str | Path) -> dict[str, Any]:
    """Train ``experiment`` to its last step and complete ``run_dir`` (see
    :func:`mlp.train.folders.finish_run`): its files, ``curves.png``, ``attention_layers.png``,
    then ``metrics.json``."""
    run_dir = Path(run_dir)

    def write_files() -> None:
        from attnlab.plots import plot_attention_curves

        experiment.save(run_dir)
        o = experiment.options
        plot_attention_curves(
            experiment.trainer.history,
            run_dir / "curves.png",
            title=f"{o['task']}: {o['layers']} layers x {o['heads']} heads, {o['attention']}, "
            f"mask {o['mask']}, positions {o['positions']}, {o['optimizer']} lr {o['lr']:g}, "
            f"seed {o['seed']}",
        )
        plot_run(run_dir)

    return finish_run(run_dir, experiment.trainer, write_files, experiment.metrics, FILES)


# --- a run folder read back, and its figures ----------------------------------------------------


@dataclass
class SavedRun:
    """A stack run folder read back: the trained ``model``, ``config`` and the snapshots."""

    model: AttentionStack
    config: dict[str, Any]
    snapshots: dict[str, np.ndarray]


def is_stack_run(run_dir: str | Path) -> bool:
    """Whether ``run_dir``'s ``config.json`` says it holds a run of this experiment (False when
    it has none, or none that reads: the caller's own loading then names what is wrong)."""
    try:
        return read_json(Path(run_dir) / "config.json").get("experiment") == NAME
    except (OSError, ValueError):
        return False


def load(run_dir: str | Path) -> SavedRun:
    """The model (``config.json`` + ``params.npz``) and ``snapshots.npz`` of a stack run folder,
    checked: ``X (p, ...)``, ``steps (t,)`` and ``S (t, p, l, h, c, c)`` with the model's
    layers and heads; :class:`RunFolderError` names a file that does not hold what it must."""
    run_dir = Path(run_dir)
    model, config = load_model(run_dir, lambda kwargs: AttentionStack(**kwargs))
    path = run_dir / "snapshots.npz"
    snaps = load_arrays(path)
    S, steps = snaps.get("S"), snaps.get("steps")
    if S is None or steps is None or "X" not in snaps:
        raise RunFolderError(f"run folder: {path} lacks X, steps or S")
    p = len(snaps["X"])
    fits = S.ndim == 6 and S.shape[:4] == (len(steps), p, model.layers, model.heads)
    if S.size and not fits:
        raise RunFolderError(
            f"run folder: {path}: 'S' has shape {S.shape}, expected (t={len(steps)}, p={p}, "
            f"l={model.layers}, h={model.heads}, c, c)"
        )
    return SavedRun(model, config, snaps)


def plot_run(
    run_dir: str | Path, out: str | Path | None = None, animate: bool = False
) -> dict[str, Path]:
    """Reload a stack run folder (:func:`load`) and draw every layer's and head's attention on
    the first snapshot prompt at the end (``attention_layers.png``, from the trained model) into
    ``out`` (default: the run folder); ``animate=True`` adds the maps at every recorded step
    (``attention_layers.gif``)."""
    from attnlab.plots import LayerFrames, animate_layer_maps, plot_layer_maps

    saved = load(run_dir)
    out = Path(run_dir) if out is None else Path(out)
    out.mkdir(parents=True, exist_ok=True)
    c, model = saved.config, saved.model
    X = saved.snapshots["X"][:1]
    tokens = [int(t) for t in X[0]] if model.vocab is not None else None
    S = np.stack([s[0] for s in model.attention_weights(X)])  # (l, h, c, c)
    steps = saved.snapshots["steps"]
    where = (
        f"{c['task']}: {c['layers']} layers x {c['heads']} heads, mask {c['mask']}, "
        f"positions {c['positions']}, seed {c['seed']}"
    )
    done = int(steps[-1]) if steps.size else 0
    paths = {
        "attention_layers": plot_layer_maps(
            S, out / "attention_layers.png", tokens, f"{where}, after {done} steps"
        )
    }
    if animate:
        if steps.size == 0:
            raise RunFolderError(
                f"run folder: {Path(run_dir) / 'snapshots.npz'} holds no attention snapshots: "
                "train with at least one evaluation to animate it"
            )
        frames = LayerFrames(saved.snapshots["S"][:, 0], steps, tokens, where)
        paths["attention_animation"] = animate_layer_maps(frames, out / "attention_layers.gif")
    return paths
