"""Checkpoints: exact round trip, clear refusal of truncated, garbled and pickle-bearing files,
checks against the model, and atomic writes (a failed save leaves the old file intact)."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

import mlp
from mlp import CheckpointError, load_checkpoint, save_checkpoint


def _state(seed: int = 0) -> tuple[dict, dict, dict, dict]:
    rng = np.random.default_rng(seed)
    params = {
        "W": rng.standard_normal((3, 4)),
        "v": rng.standard_normal((4, 1)).astype(np.float32),
    }
    opt = {"t": np.array(7, dtype=np.int64), "m/W": rng.standard_normal((3, 4))}
    meta = {"step": 7, "rows": [{"step": 0, "train_loss": 0.1 + seed}], "seed": seed}
    arrays = {"snapshots": rng.random((2, 5, 5))}
    return params, opt, meta, arrays


def _write(tmp_path: Path, name: str = "ckpt.npz", seed: int = 0) -> Path:
    return save_checkpoint(tmp_path / name, *_state(seed))


def test_round_trip_is_exact_and_keeps_dtypes(tmp_path: Path) -> None:
    params, opt, meta, arrays = _state()
    path = save_checkpoint(tmp_path / "sub" / "ckpt.npz", params, opt, meta, arrays)
    p2, o2, m2, a2 = load_checkpoint(path, expected_params=params)
    for ref, got in ((params, p2), (opt, o2), (arrays, a2)):
        assert set(ref) == set(got)
        for k in ref:
            assert got[k].dtype == np.asarray(ref[k]).dtype, k
            assert np.array_equal(got[k], ref[k]), k
    assert m2 == meta


# --- truncated and garbled files -------------------------------------------------------------


@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.5, 0.9, 0.99])
def test_truncated_file_is_reported(tmp_path: Path, fraction: float) -> None:
    path = _write(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(CheckpointError, match=rf"checkpoint {path}: truncated, garbled"):
        load_checkpoint(path)


def test_cut_to_half_its_bytes_is_reported(tmp_path: Path) -> None:
    path = _write(tmp_path)
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size // 2)
    with pytest.raises(CheckpointError, match=r"truncated, garbled or not an \.npz of arrays"):
        load_checkpoint(path)


@pytest.mark.parametrize("seed", range(5))
def test_random_bytes_are_reported(tmp_path: Path, seed: int) -> None:
    path = tmp_path / "random.npz"
    path.write_bytes(np.random.default_rng(seed).bytes(2000))
    with pytest.raises(CheckpointError, match=rf"checkpoint {path}: truncated, garbled"):
        load_checkpoint(path)


def test_flipped_bytes_inside_an_entry_are_reported(tmp_path: Path) -> None:
    """The zip's CRC of each entry catches a corrupted payload."""
    path = _write(tmp_path)
    data = bytearray(path.read_bytes())
    start = bytes(data).find(_state()[0]["W"].tobytes())  # W's float data, stored uncompressed
    assert start > 0
    data[start + 16 : start + 24] = b"\xff" * 8
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"truncated, garbled .*BadZipFile"):
        load_checkpoint(path)


def test_a_valid_zip_with_other_contents_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "other.npz"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("notes.txt", "hello")
    with pytest.raises(CheckpointError, match=r"entry 'notes.txt' is not an \.npy array"):
        load_checkpoint(path)


def test_an_npz_without_metadata_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "plain.npz"
    np.savez(path, W=np.zeros(3))
    with pytest.raises(CheckpointError, match=r"no 'meta' entry \(not a checkpoint of this"):
        load_checkpoint(path)


@pytest.mark.parametrize(
    ("meta", "match"),
    [
        (np.array("{not json"), r"the metadata is not valid JSON"),
        (np.array(json.dumps([1, 2])), r"the metadata: expected a JSON object, received list"),
        (np.array(3.0), r"entry 'meta' is not a string \(float64\)"),
    ],
)
def test_garbled_metadata_is_reported(tmp_path: Path, meta: np.ndarray, match: str) -> None:
    path = tmp_path / "meta.npz"
    np.savez(path, meta=meta, **{"param/W": np.zeros(3)})
    with pytest.raises(CheckpointError, match=match):
        load_checkpoint(path)


def test_a_bare_npy_array_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "array.npy"
    np.save(path, np.zeros(3))
    with pytest.raises(CheckpointError, match=r"expected an .npz archive, received a single array"):
        load_checkpoint(path)


# --- pickle: refused, never executed -----------------------------------------------------------


class _Trap:
    """Unpickling this object creates ``marker``: evidence that the loader ran pickle."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        code = f"import pathlib; pathlib.Path({str(self.marker)!r}).touch()"
        return (exec, (code,))


@pytest.mark.parametrize("where", ["param/W", "opt/t", "meta"])
def test_pickle_bearing_file_is_refused_without_unpickling(tmp_path: Path, where: str) -> None:
    marker = tmp_path / "unpickled"
    params, opt, meta, _ = _state()
    payload = {f"param/{k}": v for k, v in params.items()}
    payload.update({f"opt/{k}": v for k, v in opt.items()})
    payload["meta"] = np.array(json.dumps(meta))
    payload[where] = np.array([_Trap(marker)], dtype=object)
    path = tmp_path / "pickled.npz"
    np.savez(path, allow_pickle=True, **payload)
    # the file really holds a pickle: numpy would run it if asked to
    with np.load(path, allow_pickle=True) as f:
        f[where]
    assert marker.exists()
    marker.unlink()
    with pytest.raises(CheckpointError, match=r"entry '.*' holds Python objects .*pickle"):
        load_checkpoint(path)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("where", "key"), [("params", "param/w"), ("opt_state", "opt/m"), ("arrays", "extra/s")]
)
def test_save_refuses_object_arrays_and_writes_nothing(
    tmp_path: Path, where: str, key: str
) -> None:
    parts = {"params": {"w": np.zeros(2)}, "opt_state": {}, "meta": {}, "arrays": {}}
    parts[where] = {key.split("/")[1]: np.array([None, 1], dtype=object)}
    path = tmp_path / "new-dir" / "c.npz"
    match = rf"save_checkpoint: '{key}': expected a real numeric array, received dtype object"
    with pytest.raises(TypeError, match=match):
        save_checkpoint(path, **parts)
    assert not path.parent.exists()


def test_save_refuses_metadata_that_is_not_json(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="not JSON serializable"):
        save_checkpoint(tmp_path / "d" / "c.npz", {"w": np.zeros(2)}, {}, {"x": object()})
    assert not (tmp_path / "d").exists()


# --- checks against the model ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"W": None}, r"parameter keys \['v'\] do not match the model's \['W', 'v'\]"),
        ({"extra": np.zeros(2)}, r"parameter keys \['W', 'extra', 'v'\] do not match"),
        (
            {"W": np.zeros((4, 3))},
            r"parameter 'W' has shape \(4, 3\) float64, the model expects "
            r"\(3, 4\) float64",
        ),
        (
            {"v": np.zeros((4, 1))},
            r"parameter 'v' has shape \(4, 1\) float64, the model expects "
            r"\(4, 1\) float32",
        ),
        ({"W": np.zeros((3, 4), dtype=np.int64)}, r"parameter 'W' has shape \(3, 4\) int64"),
    ],
)
def test_keys_shapes_and_dtypes_must_match_the_model(
    tmp_path: Path, change: dict, match: str
) -> None:
    params, opt, meta, arrays = _state()
    model_params = {k: v.copy() for k, v in params.items()}
    for k, v in change.items():
        if v is None:
            del params[k]
        else:
            params[k] = v
    path = save_checkpoint(tmp_path / "c.npz", params, opt, meta, arrays)
    load_checkpoint(path)  # readable on its own
    with pytest.raises(CheckpointError, match=match):
        load_checkpoint(path, expected_params=model_params)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_parameters_are_refused(tmp_path: Path, bad: float) -> None:
    params, opt, meta, arrays = _state()
    params["W"][1, 2] = bad
    path = save_checkpoint(tmp_path / "c.npz", params, opt, meta, arrays)
    with pytest.raises(CheckpointError, match=r"parameter 'W' holds NaN or inf"):
        load_checkpoint(path)


# --- atomic writes ---------------------------------------------------------------------------


def _failing_savez(exc: BaseException):
    real_savez = np.savez

    def savez(file: object, **arrays: np.ndarray) -> None:
        buf = io.BytesIO()
        real_savez(buf, **arrays)  # a real archive, half of it written, then the failure
        data = buf.getvalue()
        file.write(data[: len(data) // 2])
        raise exc

    return savez


@pytest.mark.parametrize("exc", [OSError("disk full"), KeyboardInterrupt()])
def test_a_save_that_fails_midway_leaves_the_old_file_and_no_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, exc: BaseException
) -> None:
    path = _write(tmp_path, seed=0)
    before = path.read_bytes()
    monkeypatch.setattr(np, "savez", _failing_savez(exc))
    with pytest.raises(type(exc)):
        save_checkpoint(path, *_state(seed=1))
    monkeypatch.undo()
    assert path.read_bytes() == before
    params, _, meta, _ = load_checkpoint(path)
    assert meta["seed"] == 0 and np.array_equal(params["W"], _state(0)[0]["W"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.npz"]


def test_a_save_replaces_the_old_file_and_leaves_no_temp_file(tmp_path: Path) -> None:
    path = _write(tmp_path, seed=0)
    save_checkpoint(path, *_state(seed=1))
    assert load_checkpoint(path)[2]["seed"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.npz"]


def test_trainer_checkpoint_holds_params_optimizer_state_step_and_history(tmp_path: Path) -> None:
    split = mlp.load_iris_split(features=2, seed=0)
    model = mlp.MLP(2, 6, 3, seed=0)
    path = tmp_path / "run.npz"
    trainer = mlp.Trainer(
        model, mlp.Adam(), mlp.Dataset(split.X_train, split.y_train), steps=12, lr=0.01,
        batch_size=40, eval_every=4, checkpoint=path, progress=False,
    )  # fmt: skip
    trainer.run()
    params, opt, meta, _ = load_checkpoint(path, expected_params=model.params)
    for k in model.params:
        assert np.array_equal(params[k], model.params[k]), k
    assert int(opt["t"]) == 12 and set(opt) == {"t"} | {f"{m}/{k}" for m in "mv" for k in params}
    assert meta["step"] == 12 and meta["seed"] == 0 and meta["optimizer"] == "adam"
    assert [r["step"] for r in meta["rows"]] == [0, 4, 8, 12]
    assert meta["rows"] == trainer.history.rows


# --- metadata the trainer resumes from: every key and type checked ----------------------------


def _sgd_trainer(steps: int, checkpoint: Path | None = None) -> mlp.Trainer:
    split = mlp.load_iris_split(features=2, seed=0)
    return mlp.Trainer(
        mlp.MLP(2, 4, 3, seed=0), mlp.SGD(), mlp.Dataset(split.X_train, split.y_train),
        steps=steps, lr=0.1, batch_size=40, eval_every=2, checkpoint=checkpoint, progress=False,
    )  # fmt: skip


@pytest.fixture()
def saved_trainer(tmp_path: Path) -> tuple[Path, dict]:
    """A trainer's checkpoint, and its metadata to tamper with."""
    path = tmp_path / "run.npz"
    _sgd_trainer(4, path).run()
    return path, load_checkpoint(path)[2]


def _resume_with(path: Path, meta: dict) -> None:
    params, opt, _, arrays = load_checkpoint(path)
    save_checkpoint(path, params, opt, meta, arrays)
    _sgd_trainer(8).resume(path)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"step": True}, r"'step': expected an integer >= 0, received True"),
        ({"step": 2.0}, r"'step': expected an integer >= 0, received 2\.0"),
        ({"seed": True}, r"'seed': expected an integer >= 0, received True"),
        ({"rows": ["x"]}, r"'rows': expected a list of objects of finite numbers"),
        ({"rows": [{"step": True}]}, r"'rows': expected a list of objects"),
        ({"rows": {"step": 0}}, r"'rows': expected a list"),
        ({"batch_losses": [None]}, r"'batch_losses': expected a list of finite numbers"),
        ({"snapshot_steps": [-1]}, r"'snapshot_steps': expected a list of integers >= 0"),
        ({"snapshot_steps": [0]}, r"snapshots None at 1 steps do not fit this trainer's \(None"),
        ({"optimizer": 3}, r"'optimizer': expected a name, received 3"),
        ({"step": None}, r"'step': expected an integer"),
        ({"rows": None, "step": None}, r"'step'"),
    ],
)
def test_tampered_metadata_is_refused_with_one_clear_error(
    saved_trainer: tuple[Path, dict], change: dict, match: str
) -> None:
    path, meta = saved_trainer
    with pytest.raises(CheckpointError, match=match):
        _resume_with(path, {**meta, **change})


@pytest.mark.parametrize("key", ["step", "rows", "seed", "batch_size", "optimizer"])
def test_metadata_missing_a_key_is_refused(saved_trainer: tuple[Path, dict], key: str) -> None:
    path, meta = saved_trainer
    with pytest.raises(CheckpointError, match=rf"metadata lacks '{key}'"):
        _resume_with(path, {k: v for k, v in meta.items() if k != key})


def test_deeply_nested_metadata_is_refused(saved_trainer: tuple[Path, dict]) -> None:
    path, _ = saved_trainer
    params = load_checkpoint(path)[0]
    payload = {f"param/{k}": v for k, v in params.items()}
    payload["meta"] = np.array('{"rows": ' + "[" * 100_000 + "]" * 100_000 + "}")
    np.savez(path, **payload)
    with pytest.raises(CheckpointError, match="the metadata is nested too deeply"):
        load_checkpoint(path)
