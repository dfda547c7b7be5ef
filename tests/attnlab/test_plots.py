"""The figures the tutorial notebook draws: the animated attention maps of a run folder, the
backward error against the score scale, and the max-margin correlation per seed."""

import itertools
import shutil
from pathlib import Path
from types import SimpleNamespace

import matplotlib.image
import numpy as np
import pytest
from PIL import Image

from attnlab.plots import plot_backward_error, plot_max_margin_seeds
from attnlab.studies.attention import animate_run, plot_run, prepare
from mlp.train.folders import RunFolderError


def _assert_png(path: Path) -> None:
    img = matplotlib.image.imread(path)
    assert img.ndim == 3 and min(img.shape[:2]) >= 300, img.shape
    assert img[..., :3].std() > 0.05, f"{path.name} is (almost) blank"


def _frames(path: Path) -> list[np.ndarray]:
    with Image.open(path) as gif:
        assert gif.format == "GIF"
        frames = []
        for k in range(gif.n_frames):
            gif.seek(k)
            frames.append(np.asarray(gif.convert("RGB"), dtype=np.float64))
    return frames


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two short saved runs (self and prompt attention), 3 snapshot prompts at steps 0, 10, 20."""
    folders = {}
    for attention in ("self", "prompt"):
        experiment = prepare(
            {"attention": attention, "steps": 20, "eval_every": 10, "snapshots": 3}, progress=False
        )
        experiment.trainer.run()
        folders[attention] = tmp_path_factory.mktemp(attention)
        experiment.save(folders[attention])
    return folders


@pytest.mark.parametrize("attention", ["self", "prompt"])
def test_animation_has_one_frame_per_recorded_step(runs: dict, attention: str) -> None:
    path = animate_run(runs[attention], dpi=50)
    assert path == runs[attention] / "attention_over_training.gif"
    with np.load(runs[attention] / "snapshots.npz") as snap:
        assert snap["steps"].tolist() == [0, 10, 20]
    frames = _frames(path)
    assert len(frames) == 3
    assert all(f.shape == frames[0].shape for f in frames)
    assert frames[0].std() > 10, "the first frame is (almost) blank"
    # the weights change during training: below the title (the step and the mean weight),
    # every frame differs from the one before
    top = frames[0].shape[0] // 5
    assert all(np.abs(a[top:] - b[top:]).mean() > 0.05 for a, b in itertools.pairwise(frames))


def test_animation_keeps_the_layout_of_the_attention_map(runs: dict, tmp_path: Path) -> None:
    """The same figure size as attention_map.png (at the animation's dpi against 120)."""
    paths = plot_run(runs["self"], tmp_path, animate=True)
    assert set(paths) == {"attention_map", "attention_over_training", "attention_animation"}
    png = matplotlib.image.imread(paths["attention_map"])
    gif = _frames(paths["attention_animation"])[0]
    assert gif.shape[0] / png.shape[0] == pytest.approx(80 / 120, abs=0.01)
    assert gif.shape[1] / png.shape[1] == pytest.approx(80 / 120, abs=0.01)


def _copy(run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(run, tmp_path / "run", ignore=shutil.ignore_patterns("*.gif")))


def test_animation_refuses_a_run_without_snapshots(runs: dict, tmp_path: Path) -> None:
    run = _copy(runs["self"], tmp_path)
    with np.load(run / "snapshots.npz") as f:
        snap = {k: f[k] for k in f.files}
    np.savez(run / "snapshots.npz", **{**snap, "S": snap["S"][:0], "steps": snap["steps"][:0]})
    with pytest.raises(RunFolderError, match=r"snapshots\.npz holds no attention snapshots"):
        animate_run(run)
    np.savez(run / "snapshots.npz", **{k: v for k, v in snap.items() if k != "S"})
    with pytest.raises(RunFolderError, match=r"snapshots\.npz lacks the arrays \['S'\]"):
        animate_run(run)
    np.savez(run / "snapshots.npz", **{**snap, "steps": snap["steps"][:1]})
    with pytest.raises(RunFolderError, match=r"'S' has shape .*, expected \(t, p, c, j\) with"):
        animate_run(run)
    (run / "snapshots.npz").write_bytes(b"PK\x03\x04 not a zip archive")
    with pytest.raises(RunFolderError, match=r"snapshots\.npz: truncated, garbled or not an"):
        animate_run(run)
    (run / "snapshots.npz").unlink()
    with pytest.raises(RunFolderError, match=r"no file .*snapshots\.npz"):
        animate_run(run)
    assert not (run / "attention_over_training.gif").exists()


def test_animation_refuses_bad_options(runs: dict) -> None:
    with pytest.raises(ValueError, match="fps"):
        animate_run(runs["self"], fps=0)
    with pytest.raises(ValueError, match="dpi"):
        animate_run(runs["self"], dpi=-1)


def test_backward_error_plot(tmp_path: Path) -> None:
    scales = np.array([1.0, 10.0, 40.0, 80.0])
    errors = {"exact": np.array([1e-16, 2e-16, 0.0, 3e-15]), "textbook": np.logspace(-16, 0, 4)}
    _assert_png(plot_backward_error(scales, errors, tmp_path / "err.png"))
    with pytest.raises(ValueError, match=r"errors\['exact'\]: expected shape \(4,\)"):
        plot_backward_error(scales, {"exact": np.ones(3)}, tmp_path / "bad.png")
    with pytest.raises(ValueError, match="errors: expected at least one"):
        plot_backward_error(scales, {}, tmp_path / "bad.png")
    with pytest.raises(ValueError, match=r"scales: expected shape \(k,\)"):
        plot_backward_error(np.ones((2, 2)), errors, tmp_path / "bad.png")


def test_max_margin_seeds_plot(tmp_path: Path) -> None:
    steps = np.arange(101)
    runs = [
        SimpleNamespace(seed=s, correlation=np.r_[np.nan, 1.0 - 0.5 / (1 + steps[1:] / (10 + s))])
        for s in range(3)
    ]
    _assert_png(plot_max_margin_seeds(runs, tmp_path / "mm.png"))
    with pytest.raises(ValueError, match="runs: expected at least one"):
        plot_max_margin_seeds([], tmp_path / "bad.png")
    short = SimpleNamespace(seed=9, correlation=runs[0].correlation[:50])
    with pytest.raises(ValueError, match=r"runs: expected runs of the same number of iterations"):
        plot_max_margin_seeds([*runs, short], tmp_path / "bad.png")
