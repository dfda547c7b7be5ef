"""Run-folder helpers (``mlp.train.folders``): JSON and NPZ round trips, errors naming the
file, and a
model rebuilt from ``config.json`` + ``params.npz``."""

import json
import re
from pathlib import Path

import numpy as np
import pytest

from mlp.network import MLP
from mlp.train.folders import (
    RunFolderError,
    create_run_dir,
    load_arrays,
    load_model,
    read_json,
    save_arrays,
    to_jsonable,
    write_json,
)


def test_to_jsonable_converts_numpy_and_paths() -> None:
    obj = {
        "a": np.float64(0.5),
        "b": np.int64(3),
        "c": np.arange(3),
        "d": (1, Path("x/y")),
        "e": float("nan"),
        "f": np.bool_(True),
        "g": np.float64,
        1: None,
    }
    assert to_jsonable(obj) == {
        "a": 0.5,
        "b": 3,
        "c": [0, 1, 2],
        "d": [1, "x/y"],
        "e": None,
        "f": True,
        "g": "float64",
        "1": None,
    }
    assert type(to_jsonable(np.int64(3))) is int and type(to_jsonable(np.float32(2))) is float
    with pytest.raises(TypeError, match="cannot store a object in JSON"):
        to_jsonable(object())


def test_json_round_trip_and_errors(tmp_path: Path) -> None:
    path = write_json(tmp_path / "c.json", {"lr": np.float64(0.1), "steps": np.int32(7)})
    assert json.loads(path.read_text()) == {"lr": 0.1, "steps": 7}
    assert read_json(path) == {"lr": 0.1, "steps": 7}
    with pytest.raises(RunFolderError, match=r"no file .*missing\.json"):
        read_json(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(RunFolderError, match=r"bad\.json is not valid JSON"):
        read_json(tmp_path / "bad.json")
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(RunFolderError, match="expected a JSON object, received list"):
        read_json(tmp_path / "list.json")


def test_arrays_round_trip_and_garbled_file(tmp_path: Path) -> None:
    arrays = {"W": np.arange(6.0).reshape(2, 3), "k": np.array([1, 2], dtype=np.int32)}
    loaded = load_arrays(save_arrays(tmp_path / "a.npz", arrays))
    assert set(loaded) == {"W", "k"}
    assert np.array_equal(loaded["W"], arrays["W"]) and loaded["k"].dtype == np.int32
    (tmp_path / "g.npz").write_bytes(b"PK\x03\x04 garbage")
    with pytest.raises(RunFolderError, match=r"g\.npz: truncated, garbled or not an \.npz"):
        load_arrays(tmp_path / "g.npz")
    np.savez(tmp_path / "obj.npz", x=np.array([{"a": 1}], dtype=object))
    with pytest.raises(RunFolderError, match=r"entry 'x' holds Python objects"):
        load_arrays(tmp_path / "obj.npz")  # would need pickle: refused


def test_default_run_dir_is_timestamped_created_and_never_reused(tmp_path: Path) -> None:
    first = create_run_dir(None, "attention", root=tmp_path)
    assert first.parent == tmp_path
    assert re.fullmatch(r"attention-\d{8}-\d{6}-[0-9a-f]{4}", first.name), first.name
    assert first.is_dir() and not any(first.iterdir())
    second = create_run_dir(None, "attention", root=tmp_path)
    assert second != first and second.is_dir()
    with pytest.raises(ValueError, match="prefix: expected a non-empty name"):
        create_run_dir(None, "a/b")


def test_load_model_rebuilds_the_trained_model(tmp_path: Path) -> None:
    model = MLP(4, 5, 3, seed=1)
    model.params["W1"] += 0.25  # "trained": differs from a fresh model of the same seed
    write_json(tmp_path / "config.json", {"lr": 0.1, "model": model.config})
    save_arrays(tmp_path / "params.npz", model.params)
    again, config = load_model(tmp_path, lambda cfg: MLP(**cfg))
    assert config["lr"] == 0.1
    X = np.random.default_rng(0).standard_normal((7, 4))
    np.testing.assert_array_equal(again.forward(X), model.forward(X))


def test_load_model_names_what_does_not_fit(tmp_path: Path) -> None:
    model = MLP(4, 5, 3, seed=1)
    write_json(tmp_path / "config.json", {"model": model.config})
    save_arrays(tmp_path / "params.npz", MLP(4, 6, 3).params)
    with pytest.raises(RunFolderError, match=r"params\.npz: parameter 'W1' has shape \(4, 6\)"):
        load_model(tmp_path, lambda cfg: MLP(**cfg))
    write_json(tmp_path / "config.json", {"lr": 0.1})
    with pytest.raises(RunFolderError, match="has no 'model' object"):
        load_model(tmp_path, lambda cfg: MLP(**cfg))
    with pytest.raises(RunFolderError, match="is not a directory"):
        load_model(tmp_path / "nope", lambda cfg: MLP(**cfg))


def test_load_model_rebuilds_a_float32_mlp(tmp_path: Path) -> None:
    """``MLP.config`` lacked the dtype: a float32 model came back float64 and was refused."""
    model = MLP(4, 5, 3, seed=1, dtype=np.float32)
    write_json(tmp_path / "config.json", {"model": model.config})
    save_arrays(tmp_path / "params.npz", model.params)
    again, _ = load_model(tmp_path, lambda cfg: MLP(**cfg))
    assert all(v.dtype == np.float32 for v in again.params.values())
    X = np.random.default_rng(0).standard_normal((7, 4)).astype(np.float32)
    np.testing.assert_array_equal(again.forward(X), model.forward(X))
