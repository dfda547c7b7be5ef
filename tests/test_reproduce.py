"""The max-margin reproduction: short runs of the experiments and the script end to end."""

from __future__ import annotations

import csv
import itertools
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from attnlab.models.context_window import ContextWindowModel
from attnlab.studies.max_margin import GD_LR, SETTINGS, run_max_margin, run_prompt_norm
from attnlab.studies.max_margin.report import TARGETS, reproduce, reproduction_config
from attnlab.tasks import max_margin
from mlp.train.optim import NormalizedGD
from mlp.train.trainer import Trainer

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "reproduce_max_margin.py"


def test_trainer_on_step_sees_every_update():
    task = max_margin(seed=0)
    model = ContextWindowModel(task.d, attention="cross")
    seen: list[tuple[int, np.ndarray]] = []
    trainer = Trainer(
        model,
        NormalizedGD(),
        task.train,
        steps=5,
        lr=0.1,
        trainable=["W"],
        progress=False,
        on_step=lambda step, params: seen.append((step, params["W"].copy())),
    )
    W0 = model.params["W"].copy()
    trainer.run()
    assert [s for s, _ in seen] == [1, 2, 3, 4, 5]
    np.testing.assert_array_equal(seen[-1][1], model.params["W"])
    # normalized GD moves W by exactly lr per step
    steps = [W0] + [W for _, W in seen]
    for a, b in itertools.pairwise(steps):
        assert np.linalg.norm(b - a) == pytest.approx(0.1, rel=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("init", ["zero", "uniform"])
def test_max_margin_correlation_rises_above_098(seed, init):
    run = run_max_margin(seed, steps=1000, init=init)
    assert run.stop_reason == "completed"
    if init == "zero":
        assert np.isnan(run.correlation[0]) and run.norm[0] == 0.0
    else:
        assert abs(run.correlation[0]) < 0.5  # the random init is far from W_mm
    assert run.correlation[-1] > 0.98
    assert run.correlation[-1] > run.correlation[200]
    assert run.probability[-1] > 0.99
    # normalized GD: ||W|| grows by at most lr per step
    assert np.all(np.diff(run.norm) <= 0.1 + 1e-12)
    assert run.svm.margin == pytest.approx(1.0, abs=1e-6)


def test_textbook_backward_drifts_once_the_softmax_saturates():
    exact = run_max_margin(4, steps=2000)
    textbook = run_max_margin(4, steps=2000, textbook_backward=True)
    # identical before saturation, then the textbook gradient loses its digits
    assert textbook.correlation[500] == pytest.approx(exact.correlation[500], abs=1e-6)
    assert exact.correlation[-1] > 0.995
    assert textbook.correlation[-1] < exact.correlation[-1] - 0.05


def test_prompt_norm_ngd_grows_norm_faster_than_gd():
    ngd = run_prompt_norm("ngd", 0.1, steps=200)
    gd = run_prompt_norm("gd", GD_LR, steps=200)
    assert ngd.norm[0] == 0.0 and gd.norm[0] == 0.0
    assert ngd.norm[200] >= TARGETS["norm_ratio"] * gd.norm[200]
    assert ngd.norm[200] == pytest.approx(20.0, rel=0.05)  # lr 0.1 per step, nearly straight
    assert ngd.probability[-1] > 0.999
    assert ngd.correlation[-1] > gd.correlation[-1]


def test_runs_reject_bad_options():
    with pytest.raises(ValueError, match="steps: expected a positive integer"):
        run_max_margin(0, steps=0)
    with pytest.raises(ValueError, match="optimizer: expected one of 'ngd', 'gd'"):
        run_prompt_norm("adam", 0.1)


def run_script(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=120
    )


def test_script_end_to_end(tmp_path):
    out = tmp_path / "run"
    proc = run_script("--seeds", "2", "--iterations", "30", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert f"wrote {out}" in proc.stdout
    for name in (
        "config.json",
        "results.json",
        "results.md",
        "curves.npz",
        "max_margin_correlation.png",
        "max_margin_probability_norm.png",
        "prompt_norm.png",
    ):
        assert (out / name).stat().st_size > 0, name
    res = json.loads((out / "results.json").read_text())
    exact = res["max_margin"]["exact"]
    assert len(exact["per_seed"]) == 2
    assert res["prompt_norm"]["iterations"] == 15
    assert res["prompt_norm"]["norm_step"] == 15
    curves = np.load(out / "curves.npz")
    assert curves["correlation_exact"].shape == (2, 31)
    assert exact["correlation_final_mean"] == pytest.approx(
        curves["correlation_exact"][:, -1].mean(), abs=1e-12
    )
    md = (out / "results.md").read_text()
    assert "| quantity | published |" in md and "≈ 19.5" in md
    # the max-margin seeds are a sweep: one run folder per seed and backward
    with open(out / "seeds" / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert sorted((r["textbook_backward"], r["seed"]) for r in rows) == [
        ("False", "0"),
        ("False", "1"),
        ("True", "0"),
        ("True", "1"),
    ]
    assert len(list((out / "seeds" / "runs").iterdir())) == 4
    config = json.loads((out / "config.json").read_text())
    assert config["seeds"] == 2 and config["iterations"] == 30
    # written from the code's values: the models that ran and their trained keys
    assert config["max_margin"]["model"] == run_max_margin(0, steps=1).model.config
    assert config["max_margin"]["trainable"] == ["W"]
    assert config["max_margin"]["lr"] == SETTINGS["max-margin"]["lr"]
    assert config["prompt_norm"]["model"]["attention"] == "prompt"
    assert config["prompt_norm"]["trainable"] == ["p"]
    assert config["prompt_norm"]["optimizers"] == {"ngd": 0.1, "gd": GD_LR}
    assert "max_margin_kq" not in config


@pytest.mark.parametrize("workers", [0, 2])
def test_reproduction_through_the_sweep_is_the_runs_of_one_process(tmp_path, workers):
    """The seeds run as a sweep (in this process, or on a local cluster of 2 workers) give
    exactly the curves and the summary of run_max_margin called here."""
    results, _ = reproduce(tmp_path / "run", seeds=2, steps=40, workers=workers)
    curves = np.load(tmp_path / "run" / "curves.npz")
    for backward, textbook in (("exact", False), ("textbook", True)):
        runs = [run_max_margin(s, steps=40, textbook_backward=textbook) for s in range(2)]
        for name in ("correlation", "probability", "norm"):
            expected = np.array([getattr(r, name) for r in runs])
            np.testing.assert_array_equal(curves[f"{name}_{backward}"], expected)
        per_seed = results["max_margin"][backward]["per_seed"]
        for row, run in zip(per_seed, runs, strict=True):
            assert row["selected"] == run.selected.tolist()
            assert row["globally_optimal"] == run.optimal.tolist()
            assert row["selection_settled_at"] == run.settled
            assert (row["svm_norm"], row["svm_kkt"]) == (run.svm.norm, run.svm.kkt)


def test_reproduction_defaults_are_the_settings(tmp_path):
    config = reproduction_config(20, SETTINGS["max-margin"]["steps"], "zero", kq=False)
    assert config["iterations"] == 2000
    assert config["prompt_norm_iterations"] == SETTINGS["prompt-norm"]["steps"] == 1000
    with pytest.raises(ValueError, match="steps: expected at least 2, received 1"):
        reproduce(tmp_path, seeds=1, steps=1)
    with pytest.raises(ValueError, match="init: expected one of 'zero', 'uniform'"):
        reproduce(tmp_path, seeds=1, steps=5, init="small")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--seeds", "0"], "--seeds: expected a positive integer, received 0"),
        (["--iterations", "1"], "--iterations: expected at least 2, received 1"),
        (["--init", "small"], "argument --init: invalid choice: 'small'"),
    ],
)
def test_script_rejects_bad_arguments(tmp_path, args, message):
    proc = run_script(*args, "--out", str(tmp_path / "x"))
    assert proc.returncode == 2
    assert message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()
