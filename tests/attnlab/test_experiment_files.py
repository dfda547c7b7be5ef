"""Reading an attention run folder back (``attnlab.studies.attention.load``, ``resume_experiment``):
every file is checked against what it must hold, its arrays' headers before their data, and
anything else is one ``RunFolderError`` naming the file, never a KeyError or IndexError."""

from __future__ import annotations

import json
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from attnlab.studies.attention import load, plot_run, resume_experiment, run_experiment
from mlp.train.folders import RunFolderError, save_arrays


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("attention") / "run"
    run_experiment({"attention": "prompt", "steps": 4, "eval_every": 2}, out, progress=False)
    return out


@pytest.fixture()
def run(trained: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(trained, tmp_path / "run"))


def _snapshots(run: Path) -> dict[str, np.ndarray]:
    with np.load(run / "snapshots.npz") as f:
        return {k: f[k] for k in f.files}


def _edit_snapshots(change: Callable[[dict], None]) -> Callable[[Path], None]:
    def edit(run: Path) -> None:
        snap = _snapshots(run)
        change(snap)
        save_arrays(run / "snapshots.npz", snap)

    return edit


def _edit_config(change: Callable[[dict], None]) -> Callable[[Path], None]:
    def edit(run: Path) -> None:
        config = json.loads((run / "config.json").read_text())
        change(config)
        (run / "config.json").write_text(json.dumps(config))

    return edit


def _bomb_S(run: Path) -> None:
    """``S`` declares (10^6, 10^6, 16, 1) floats in its header, and holds 8 bytes."""
    snap = _snapshots(run)
    with zipfile.ZipFile(run / "snapshots.npz", "w") as z:
        for k, v in snap.items():
            with z.open(f"{k}.npy", "w") as m:
                if k == "S":
                    header = {
                        "descr": "<f8",
                        "fortran_order": False,
                        "shape": (10**6,) * 2 + (16, 1),
                    }
                    np.lib.format.write_array_header_1_0(m, header)
                    m.write(b"\0" * 8)
                else:
                    np.lib.format.write_array(m, v)


BROKEN = {
    "missing target": (
        _edit_snapshots(lambda s: s.pop("target")),
        r"lacks the arrays \['target'\]",
    ),
    "unknown array": (_edit_snapshots(lambda s: s.update(W=np.zeros(2))), r"never writes: \['W'\]"),
    "S of another shape": (
        _edit_snapshots(lambda s: s.update(S=s["S"][:, :, :3])),
        r"'S' has shape \(3, 6, 3, 1\) float64, expected \(t, p, c, j\) with steps",
    ),
    "X of strings": (
        _edit_snapshots(lambda s: s.update(X=s["X"].astype(str))),
        r"entry 'X' is not a numeric array",
    ),
    "target as floats": (
        _edit_snapshots(lambda s: s.update(target=s["target"] * 1.0)),
        r"'target' has shape \(6,\) float64, expected \(p=6,\) integers",
    ),
    "label out of range": (
        _edit_snapshots(lambda s: s["y"].__setitem__(0, 7)),
        r"snapshots\.npz: y: expected class labels in 0\.\.2, received 7",
    ),
    "label 1e300": (
        _edit_snapshots(lambda s: s.update(y=np.where(np.arange(6) == 0, 1e300, s["y"]))),
        r"y: expected class labels in 0\.\.2, received 1e\+300",
    ),
    "target out of range": (
        _edit_snapshots(lambda s: s["target"].__setitem__(0, 16)),
        r"target: expected token indices in 0\.\.15, received 16",
    ),
    "a terabyte S": (_bomb_S, r"'S' declares shape \(1000000, 1000000, 16, 1\)"),
    "config without task": (_edit_config(lambda c: c.pop("task")), r"task: expected one of"),
    "config with other pool": (
        _edit_config(lambda c: c.update(pool="mean")),
        r"pool: expected the model's 'last', received 'mean'",
    ),
    "class names too few": (
        _edit_config(lambda c: c.update(class_names=["a"])),
        r"class_names: expected a list of 3 names",
    ),
    "model d as a boolean": (
        _edit_config(lambda c: c["model"].update(d=True)),
        r"config\.json: 'model': d: expected a positive integer, received True",
    ),
    "model with an unknown argument": (
        _edit_config(lambda c: c["model"].update(width=3)),
        r"'model': .*unexpected keyword argument 'width'",
    ),
}


@pytest.mark.parametrize("case", BROKEN)
def test_a_broken_run_folder_is_one_clear_error(run: Path, case: str) -> None:
    edit, match = BROKEN[case]
    edit(run)
    with pytest.raises(RunFolderError, match=match):
        load(run)
    with pytest.raises(RunFolderError, match=match):
        plot_run(run, run / "figures")


def test_the_untouched_run_loads(run: Path) -> None:
    saved = load(run)
    assert saved.snapshots["S"].shape == (3, 6, 16, 1)
    assert saved.model.predict(saved.snapshots["X"]).shape == (6,)


@pytest.mark.parametrize(
    ("option", "value", "match"),
    [
        ("lr", True, "lr: expected a positive finite number, received True"),
        ("features", 4.0, "features: expected 2 or 4, received 4.0"),
        ("task", {}, "task: expected one of"),
        ("steps", [4], r"steps: expected a positive integer, received \[4\]"),
    ],
)
def test_resume_refuses_a_config_with_a_bad_option(
    run: Path, option: str, value: object, match: str
) -> None:
    _edit_config(lambda c: c.update({option: value}))(run)
    with pytest.raises(RunFolderError, match=rf"resume: {run / 'config.json'}: {match}"):
        resume_experiment(run)
