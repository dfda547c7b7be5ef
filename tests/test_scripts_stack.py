"""The stack experiment end to end: ``train_attention.py`` with the stack's options, its run
folder, ``plot_attention.py`` on it, resuming it, and the stack in a sweep. The probes in
``metrics.json`` are recomputed here from the saved parameters."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from attnlab.induction import induction_score, previous_token_score
from attnlab.studies import stack
from attnlab.tasks import make_task
from mlp.train.sweep import sweep

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ROOT / "scripts" / "train_attention.py"
PLOT = ROOT / "scripts" / "plot_attention.py"
SHORT = ["--steps", "40", "--eval-every", "20", "--seed", "1"]


def _run(script: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(script), *args], capture_output=True, text=True, timeout=300
    )


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    out = tmp_path_factory.mktemp("stack") / "run"
    options = ["--task", "repeated-tokens", "--layers", "2", "--heads", "2"]
    done = _run(
        TRAIN, *options, "--positions", "relative", "--mask", "causal", *SHORT, "--out", str(out)
    )
    return out, done


def test_the_script_trains_a_stack_and_writes_its_run_folder(run: tuple) -> None:
    out, done = run
    assert done.returncode == 0, done.stderr
    assert f"run folder: {out}" in done.stdout and "induction score" in done.stdout
    for name in stack.FILES:
        assert (out / name).is_file(), name
    config = json.loads((out / "config.json").read_text())
    assert config["experiment"] == "stack" and config["layers"] == 2 and config["heads"] == 2
    assert config["model"]["readout"] == "tokens" and config["model"]["vocab"] == 16
    with np.load(out / "params.npz") as p:
        assert sorted(p.files) == sorted(
            ["E", "WK0", "WQ0", "V0", "R0", "WK1", "WQ1", "V1", "R1", "U"]
        )
        assert p["R1"].shape == (2, 32) and p["V0"].shape == (2, 32, 32)
    with np.load(out / "snapshots.npz") as s:
        assert s["steps"].tolist() == [0, 20, 40]
        assert s["S"].shape == (3, 4, 2, 2, 32, 32)


def test_the_probes_in_metrics_json_are_those_of_the_saved_model(run: tuple) -> None:
    out, _ = run
    metrics = json.loads((out / "metrics.json").read_text())
    saved = stack.load(out)
    test = make_task("repeated-tokens", vocab=16, context=32, seed=1, n_test=512).test
    S = saved.model.attention_weights(test.X)
    assert metrics["induction_score"] == pytest.approx(induction_score(S[1], test.X).max())
    assert metrics["previous_token_score"] == pytest.approx(previous_token_score(S[0]).max())
    assert metrics["stop_reason"] == "completed" and metrics["steps"] == 40


def test_plot_attention_draws_every_layer_and_head(run: tuple, tmp_path: Path) -> None:
    out, _ = run
    done = _run(PLOT, str(out), "--out", str(tmp_path), "--animate")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "attention_layers.png").read_bytes()[:4] == b"\x89PNG"
    from PIL import Image

    with Image.open(tmp_path / "attention_layers.gif") as gif:
        assert gif.n_frames == 3  # one per recorded step


def test_resume_continues_bit_identically(run: tuple, tmp_path: Path) -> None:
    out, _ = run
    whole = tmp_path / "whole"
    args = ["--task", "repeated-tokens", "--layers", "2", "--heads", "2", "--mask", "causal"]
    args += ["--positions", "relative", "--eval-every", "20", "--seed", "1"]
    assert _run(TRAIN, *args, "--steps", "60", "--out", str(whole)).returncode == 0
    done = _run(TRAIN, "--resume", str(out), "--steps", "60")
    assert done.returncode == 0, done.stderr
    with np.load(out / "params.npz") as a, np.load(whole / "params.npz") as b:
        assert all(np.array_equal(a[k], b[k]) for k in a.files)


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--layers", "2", "--pool", "last"], "--pool: an option of the context-window model"),
        (
            ["--task", "markov-in-context", "--positions", "relative", "--mask", "exclude-last"],
            "mask",
        ),
        (["--layers", "0"], "layers: expected a positive integer"),
        (["--task", "iris-in-context", "--layers", "2", "--vocab", "4"], "vocab"),
    ],
)
def test_bad_stack_options_exit_2_with_one_line(args: list, named: str, tmp_path: Path) -> None:
    done = _run(TRAIN, *args, "--out", str(tmp_path / "x"))
    assert done.returncode == 2 and named in done.stderr, done.stderr
    assert done.stderr.count("\n") == 1
    assert not (tmp_path / "x").exists()


def test_the_stack_on_real_prompts_and_on_markov_chains() -> None:
    iris = stack.prepare({"task": "iris-in-context", "steps": 3})
    assert iris.model.readout == "last" and iris.model.d == 6
    markov = stack.prepare({"task": "markov-in-context", "steps": 3})
    assert markov.model.layernorm and markov.model.positions == "relative-key"
    markov.trainer.run()
    m = markov.metrics()
    assert set(m) >= {"last_token_kl", "uniform_kl", "unigram_kl", "bayes_kl"}
    assert m["bayes_kl"] < m["unigram_kl"] < m["uniform_kl"]


def test_a_sweep_of_the_stack_equals_runs_in_this_process(tmp_path: Path) -> None:
    fixed = {"steps": 20, "eval_every": 10, "heads": 1}
    result = sweep(
        "attnlab.studies.stack",
        {"layers": [1, 2]},
        fixed,
        [0],
        tmp_path / "s",
        workers=0,
        progress=False,
    )
    assert result.finished == 2
    for row in result.rows:
        here = stack.run_experiment(
            {**fixed, "layers": int(row["layers"])}, tmp_path / row["run_id"]
        )
        assert float(row["induction_score"]) == here["induction_score"]
        assert float(row["test_loss"]) == here["test_loss"]
