"""Run folders as one run each (``mlp.train.folders``, through the MLP experiment): refused when
they hold a run, unique default names, atomic writes that replace links instead of writing
through them, a full disk and a read-only folder as one clear ``OSError`` (the folder checked
before training), reads that refuse links and bound every file, and ``metrics.json`` written last
with the reason the run ended. The file-system faults are simulated where a test running as root
cannot cause them (root writes into a chmod 0555 folder)."""

from __future__ import annotations

import errno
import json
import os
import re
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from mlp.experiment import FILES, finish, prepare, resume_experiment, run_experiment
from mlp.network import MLP
from mlp.train import files, folders
from mlp.train.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from mlp.train.cli import ScriptParser, exit_status, run_script
from mlp.train.folders import (
    RUN_FILES,
    RunFolderError,
    create_run_dir,
    load_arrays,
    load_model,
    read_json,
    save_arrays,
    save_figure,
    write_json,
)
from mlp.train.trainer import History, TrainingDiverged, TrainingInterrupted

FAST = {"epochs": 2, "checkpoint_every": 1}


# --- one run per folder ------------------------------------------------------------------------


@pytest.mark.parametrize("name", RUN_FILES)
def test_a_folder_that_holds_a_run_file_is_refused(tmp_path: Path, name: str) -> None:
    (tmp_path / name).write_text("{}")
    with pytest.raises(RunFolderError, match=rf"already holds a run \({re.escape(name)}\); "):
        create_run_dir(tmp_path, "mlp")


def test_a_dangling_link_named_like_a_run_file_counts_as_one(tmp_path: Path) -> None:
    (tmp_path / "params.npz").symlink_to(tmp_path / "nowhere")
    with pytest.raises(RunFolderError, match="resume it, or choose another folder"):
        create_run_dir(tmp_path, "mlp", files=["params.npz"])


def test_an_experiment_refuses_a_finished_run_folder_and_leaves_it_untouched(
    tmp_path: Path,
) -> None:
    out = tmp_path / "run"
    run_experiment(FAST, out, progress=False)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(RunFolderError, match=rf"run folder: {out} already holds a run"):
        run_experiment({**FAST, "lr": 0.5}, out, progress=False)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_an_empty_existing_folder_is_used(tmp_path: Path) -> None:
    m = run_experiment(FAST, tmp_path, progress=False)
    assert m["run_dir"] == tmp_path and m["stop_reason"] == "completed"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(FILES)


@pytest.mark.parametrize(
    ("where", "match"),
    [
        ("", "expected a folder path, received an empty one"),
        ("file", "exists and is not a folder"),
        ("file/run", "a part of this path is a file"),
    ],
)
def test_a_path_that_cannot_be_a_folder_is_refused(
    tmp_path: Path, where: str, match: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # '' taken as '.' would write a run here, not into the repository
    (tmp_path / "file").write_text("in the way")
    path = str(tmp_path / where) if where else ""
    with pytest.raises(ValueError, match=match):
        create_run_dir(path, "mlp")


def test_a_read_only_parent_folder_is_one_line_naming_the_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    parent = tmp_path / "ro"
    parent.mkdir()
    if os.geteuid() == 0:  # root ignores a 0555 folder: refuse the creation instead
        real_mkdir = os.mkdir

        def read_only(path: str | Path, *args: object, **kwargs: object) -> None:
            if Path(path).parent == parent:
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
            real_mkdir(path, *args, **kwargs)

        monkeypatch.setattr(folders.os, "mkdir", read_only)
    else:
        parent.chmod(0o555)
    with pytest.raises(SystemExit) as exit_:
        run_script(ScriptParser(prog="x"), lambda: run_experiment(FAST, parent / "run"))
    parent.chmod(0o755)
    assert exit_.value.code == 2
    assert capsys.readouterr().err == f"x: error: {parent / 'run'}: Permission denied\n"


def test_default_folders_are_created_exclusively(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two runs that draw the same suffix in the same second still get two folders."""
    suffixes = iter(["abcd", "abcd", "abcd", "ef01"])
    monkeypatch.setattr(folders, "_suffix", lambda: next(suffixes))
    monkeypatch.setattr(folders.time, "strftime", lambda fmt: "20250101-120000")
    first = create_run_dir(None, "mlp", root=tmp_path)
    second = create_run_dir(None, "mlp", root=tmp_path)
    assert first.name == "mlp-20250101-120000-abcd"
    assert second.name == "mlp-20250101-120000-ef01"


def test_many_default_folders_in_the_same_second_are_distinct(tmp_path: Path) -> None:
    made = [create_run_dir(None, "mlp", root=tmp_path) for _ in range(50)]
    assert len(set(made)) == 50 and all(p.is_dir() for p in made)


def test_config_claims_the_folder_exclusively(tmp_path: Path) -> None:
    create_run_dir(tmp_path, "mlp", config={"lr": 0.1})
    # a second run that got past the check before the first wrote config.json
    with pytest.raises(FileExistsError):
        write_json(tmp_path / "config.json", {"lr": 0.5}, exclusive=True)
    assert read_json(tmp_path / "config.json") == {"lr": 0.1}
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"]  # no temp file left


def test_options_are_checked_before_the_folder_is_created(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="batch_size: expected at most the 120"):
        run_experiment({**FAST, "batch_size": 1000}, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


# --- writing: temporary file, then rename -------------------------------------------------------


def _figure() -> object:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(2, 2))
    fig.subplots().plot([0, 1], [1, 0])
    return fig


WRITERS: dict[str, Callable[[Path], object]] = {
    "json": lambda p: write_json(p, {"a": 1}),
    "npz": lambda p: save_arrays(p, {"W": np.ones(3)}),
    "csv": lambda p: History(rows=[{"step": 0, "loss": 1.0}]).to_csv(p),
    "png": lambda p: save_figure(_figure(), p),
    "checkpoint": lambda p: save_checkpoint(p, {"W": np.ones(3)}, {}, {"step": 0}),
}
SUFFIX = {"json": ".json", "npz": ".npz", "csv": ".csv", "png": ".png", "checkpoint": ".npz"}


@pytest.mark.parametrize("kind", WRITERS)
def test_a_link_at_the_target_is_replaced_not_written_through(tmp_path: Path, kind: str) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text("precious")
    run = tmp_path / "run"
    run.mkdir()
    target = run / f"file{SUFFIX[kind]}"
    target.symlink_to(outside)
    WRITERS[kind](target)
    assert outside.read_text() == "precious"
    assert not target.is_symlink() and target.stat().st_size > 0
    assert [p.name for p in run.iterdir()] == [target.name]


@pytest.mark.parametrize("kind", WRITERS)
def test_a_full_disk_leaves_the_old_file_and_no_temp_file(
    tmp_path: Path, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / f"file{SUFFIX[kind]}"
    target.write_bytes(b"old")

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(folders.os, "fsync", full)  # where a full disk shows up at the latest
    with pytest.raises(OSError, match="No space left on device") as err:
        WRITERS[kind](target)
    assert err.value.errno == errno.ENOSPC and err.value.filename == str(target)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == [target.name]


@pytest.mark.parametrize("kind", WRITERS)
def test_new_files_get_the_usual_permissions(tmp_path: Path, kind: str) -> None:
    """``mkstemp`` made the checkpoint 0600 while the other files were 0644."""
    plain = tmp_path / "plain"
    plain.write_text("")
    target = tmp_path / f"file{SUFFIX[kind]}"
    WRITERS[kind](target)
    assert target.stat().st_mode & 0o777 == plain.stat().st_mode & 0o777


# --- reading: no links, bounded, typed ----------------------------------------------------------


def test_reads_refuse_links(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    write_json(real / "config.json", {"a": 1})
    save_arrays(real / "a.npz", {"W": np.ones(2)})
    save_checkpoint(real / "checkpoint.npz", {"W": np.ones(2)}, {}, {"step": 0})
    for name in ("config.json", "a.npz", "checkpoint.npz"):
        (tmp_path / name).symlink_to(real / name)
    with pytest.raises(RunFolderError, match=r"config\.json is a link"):
        read_json(tmp_path / "config.json")
    with pytest.raises(RunFolderError, match=r"a\.npz is a link"):
        load_arrays(tmp_path / "a.npz")
    with pytest.raises(CheckpointError, match=r"checkpoint\.npz is a link"):
        load_checkpoint(tmp_path / "checkpoint.npz")


def test_reads_refuse_what_is_not_a_regular_file(tmp_path: Path) -> None:
    (tmp_path / "config.json").mkdir()
    with pytest.raises(RunFolderError, match="is not a regular file"):
        read_json(tmp_path / "config.json")
    os.mkfifo(tmp_path / "fifo.npz")  # would block a plain open()
    with pytest.raises(RunFolderError, match="is not a regular file"):
        load_arrays(tmp_path / "fifo.npz")


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ('{"lr": NaN}', "not valid JSON"),
        ('{"lr": Infinity}', "not valid JSON"),
        ('{"rows": ' + "[" * 100_000 + "]" * 100_000 + "}", "nested too deeply"),
        ("[1]", "expected a JSON object, received list"),
    ],
    ids=["nan", "infinity", "deep", "list"],
)
def test_json_that_is_not_a_plain_object_is_refused(tmp_path: Path, text: str, match: str) -> None:
    (tmp_path / "config.json").write_text(text)
    with pytest.raises(RunFolderError, match=match):
        read_json(tmp_path / "config.json")


def test_json_larger_than_the_bound_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(files, "MAX_JSON_BYTES", 100)
    (tmp_path / "config.json").write_text(json.dumps({"a": "x" * 200}))
    with pytest.raises(RunFolderError, match="larger than 100 bytes"):
        read_json(tmp_path / "config.json")


def _bomb(path: Path, key: str, shape: tuple[int, ...], extra: dict | None = None) -> Path:
    """An .npz whose member ``key`` declares ``shape`` float64 in its header but holds 8 bytes."""
    with zipfile.ZipFile(path, "w") as z:
        for k, v in (extra or {}).items():
            with z.open(f"{k}.npy", "w") as m:
                np.lib.format.write_array(m, np.asarray(v))
        with z.open(f"{key}.npy", "w") as m:
            header = {"descr": "<f8", "fortran_order": False, "shape": shape}
            np.lib.format.write_array_header_1_0(m, header)
            m.write(b"\0" * 8)
    return path


def test_a_member_whose_header_claims_a_terabyte_is_refused_before_allocation(
    tmp_path: Path,
) -> None:
    path = _bomb(tmp_path / "bomb.npz", "W", (10**6, 10**6))
    with pytest.raises(RunFolderError, match=r"declares shape \(1000000, 1000000\) float64"):
        load_arrays(path)
    meta = {"meta": np.array(json.dumps({"step": 0}))}
    path = _bomb(tmp_path / "checkpoint.npz", "extra/snapshots", (10**12,), meta)
    with pytest.raises(CheckpointError, match=r"declares shape \(1000000000000,\)"):
        load_checkpoint(path)


def test_params_are_matched_on_their_headers_before_their_data_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = MLP(2, 3, 3)
    write_json(tmp_path / "config.json", {"model": model.config})
    save_arrays(tmp_path / "params.npz", MLP(2, 4, 3).params)

    def no_load(*args: object, **kwargs: object) -> None:
        raise AssertionError("the data was read before the headers were checked")

    monkeypatch.setattr(folders.np, "load", no_load)
    with pytest.raises(RunFolderError, match=r"parameter 'W1' has shape \(2, 4\)"):
        load_model(tmp_path, lambda cfg: MLP(**cfg))


def test_model_arguments_the_model_refuses_are_one_run_folder_error(tmp_path: Path) -> None:
    config = MLP(2, 3, 3).config
    for bad in ({**config, "hidden_dim": True}, {**config, "extra": 1}):
        write_json(tmp_path / "config.json", {"model": bad})
        with pytest.raises(RunFolderError, match=r"config\.json: 'model': "):
            load_model(tmp_path, lambda cfg: MLP(**cfg))


# --- the run's end: metrics.json last, with the reason -----------------------------------------


def test_metrics_json_is_written_after_every_other_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    order: list[str] = []
    replace = os.replace

    def recording(src: str, dst: str) -> None:
        order.append(Path(dst).name)
        replace(src, dst)

    monkeypatch.setattr(folders.os, "replace", recording)
    run_experiment(FAST, tmp_path / "run", progress=False)
    assert order[-1] == "metrics.json" and order.count("metrics.json") == 1
    assert set(order) == set(FILES)


def test_a_divergence_is_recorded_and_the_last_good_checkpoint_kept(tmp_path: Path) -> None:
    out = tmp_path / "run"
    experiment = prepare({"lr": 1e300, "schedule": "constant", "epochs": 3, "batch_size": 120})
    create_run_dir(out, "mlp", config=experiment.config())
    experiment.trainer.checkpoint = out / "checkpoint.npz"
    with pytest.raises(TrainingDiverged, match="diverged"):
        finish(experiment, out)
    metrics = read_json(out / "metrics.json")
    assert metrics["stop_reason"] == "diverged" and "diverged" in metrics["message"]
    assert metrics["test_accuracy"] is not None  # the last good evaluation
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "metrics.json"]


def test_ctrl_c_while_drawing_is_recorded_and_resume_finishes_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlp.plots

    out = tmp_path / "run"
    draw = mlp.plots.plot_decision_regions

    def ctrl_c(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(mlp.plots, "plot_decision_regions", ctrl_c)
    try:  # a bare KeyboardInterrupt (the regression) must fail this test, not stop pytest
        run_experiment(FAST, out, progress=False)
    except KeyboardInterrupt as err:
        caught = err
    assert isinstance(caught, TrainingInterrupted), repr(caught)
    assert "interrupted after training" in str(caught)
    assert caught.checkpoint == out / "checkpoint.npz"
    metrics = read_json(out / "metrics.json")
    assert metrics["stop_reason"] == "interrupted" and not (out / "decision_regions.png").exists()

    monkeypatch.setattr(mlp.plots, "plot_decision_regions", draw)
    experiment = resume_experiment(out)
    assert experiment.trainer.step == experiment.trainer.steps  # nothing left to train
    assert finish(experiment, out)["stop_reason"] == "completed"
    assert sorted(p.name for p in out.iterdir()) == sorted(FILES)


def test_a_missing_file_makes_the_run_incomplete(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlp.plots

    monkeypatch.setattr(mlp.plots, "plot_decision_regions", lambda *a, **k: None)
    metrics = run_experiment(FAST, tmp_path / "run", progress=False)
    assert metrics["stop_reason"] == "incomplete"
    assert metrics["message"] == "missing decision_regions.png"
    assert exit_status(ScriptParser(prog="x"), metrics) == 2


def test_a_read_only_run_folder_is_refused_before_training(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "run"
    run_experiment(FAST, out, progress=False)
    experiment = resume_experiment(out, epochs=4)
    checkpoint = (out / "checkpoint.npz").read_bytes()
    if os.geteuid() == 0:  # root writes into a 0555 folder: refuse creations in it instead
        real_open = os.open

        def read_only(path: str | Path, flags: int, *args: object, **kwargs: object) -> int:
            if flags & os.O_CREAT and Path(path).parent == out:
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
            return real_open(path, flags, *args, **kwargs)

        monkeypatch.setattr(folders.os, "open", read_only)
    else:
        out.chmod(0o555)
    try:
        with pytest.raises(PermissionError) as err:
            finish(experiment, out)
    finally:
        out.chmod(0o755)
    assert err.value.filename == str(out)
    assert experiment.trainer.step == 2 * 8  # not one update made
    assert (out / "checkpoint.npz").read_bytes() == checkpoint


# --- the command-line ending --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "status", "line"),
    [
        (OSError(errno.ENOSPC, "No space left on device", "run/params.npz"), 2,
         "x: error: run/params.npz: No space left on device"),
        (OSError(errno.EROFS, "Read-only file system"), 2, "x: error: Read-only file system"),
        (FloatingPointError("softmax: scores overflow"), 2, "x: error: softmax: scores overflow"),
        (TrainingDiverged("training diverged at step 3"), 1, "x: training diverged at step 3."),
        (KeyboardInterrupt(), 130, "x: interrupted"),
        (TrainingInterrupted("interrupted at step 4", Path("run/checkpoint.npz")), 130,
         "x: interrupted at step 4; continue with --resume run"),
    ],
    ids=["enospc", "erofs", "overflow", "diverged", "ctrl-c", "interrupted"],
)  # fmt: skip
def test_every_failure_ends_in_one_line_and_its_status(
    error: BaseException, status: int, line: str, capsys: pytest.CaptureFixture
) -> None:
    def work() -> None:
        raise error

    with pytest.raises(SystemExit) as exit_:
        run_script(ScriptParser(prog="x"), work, diverged_hint=".")
    assert exit_.value.code == status
    assert capsys.readouterr().err == line + "\n"


def test_a_run_that_stops_early_says_why_with_status_3(capsys: pytest.CaptureFixture) -> None:
    parser = ScriptParser(prog="x")
    assert exit_status(parser, {"stop_reason": "completed"}) == 0
    assert capsys.readouterr().err == ""
    metrics = {"stop_reason": "stopped_early", "message": "stopped at step 1: zero gradient"}
    assert exit_status(parser, metrics) == 3
    assert capsys.readouterr().err == "x: stopped_early: stopped at step 1: zero gradient\n"


def test_a_ctrl_c_turned_into_an_import_error_is_an_interrupt(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """numpy's C extensions turn a Ctrl-C during their import into an ImportError that has the
    KeyboardInterrupt among its causes: the script still ends with status 130 and one line."""

    def work() -> None:
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt as err:
            raise ImportError("PyCapsule_Import could not import module 'datetime'") from err

    with pytest.raises(SystemExit) as stop:
        run_script(ScriptParser(prog="x"), work)
    assert stop.value.code == 130
    assert capsys.readouterr().err == "x: interrupted\n"

    def broken() -> None:
        raise ImportError("no module named nothing")

    with pytest.raises(ImportError):  # a real ImportError is not swallowed
        run_script(ScriptParser(prog="x"), broken)
