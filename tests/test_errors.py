"""Every documented error of the public entry points, with its message.

Each message names the argument, what was expected and what was received. Table-driven: one row
per (call, exception type, message pattern). The attention model's own errors are tested in
``tests/attnlab``; here: the ``mlp`` functions, the contraction helper, optimizers, schedules,
``Dataset``, ``Trainer`` (arguments and ``resume``), checkpoints, the attention primitive and the
task generators.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

import mlp
from attnlab import tasks
from attnlab.blocks.attention import attend_backward, attend_forward
from attnlab.models.context_window import ContextWindowModel

RNG = np.random.default_rng(0)
X = RNG.standard_normal((5, 3))
Y = np.array([0, 1, 2, 0, 1])
THETA = mlp.init_params(3, 4, 3, seed=0)
PROMPTS = RNG.standard_normal((2, 3, 4))
T1 = {"t": np.array(1)}
NOWHERE = "/nonexistent-dir/x.npz"


def _with(key: str, value: object) -> dict:
    return {**THETA, key: value}


def _cache() -> object:
    return attend_forward(PROMPTS, np.zeros((3, 1)))[1]


def _on_target(target: list) -> float:
    return ContextWindowModel(3).attention_on_target(PROMPTS, np.array(target))


def _trainer(**kwargs: object) -> mlp.Trainer:
    options = {"steps": 10, "lr": 0.1, "progress": False, **kwargs}
    model = options.pop("model", mlp.MLP(3, 4, 3, seed=0))
    optimizer = options.pop("optimizer", mlp.SGD())
    train = options.pop("train", mlp.Dataset(X, Y))
    return mlp.Trainer(model, optimizer, train, **options)


# fmt: off
CASES: list[tuple[str, Callable[[], object], type, str]] = [
    # --- the MLP ---------------------------------------------------------------------------
    ("X complex", lambda: mlp.forward(X.astype(complex), THETA), TypeError,
     r"X: expected a real numeric array .*received dtype complex128"),
    ("X object", lambda: mlp.forward(np.array([[1, None, 2]]), THETA), TypeError,
     r"X: expected a real numeric array .*received dtype object"),
    ("X strings", lambda: mlp.forward(np.array([["a", "b", "c"]]), THETA), TypeError,
     r"X: expected a real numeric array .*received dtype <U1"),
    ("X ragged", lambda: mlp.forward([[1.0, 2.0], [3.0]], THETA), TypeError,
     r"X: expected a numeric array, could not convert"),
    ("X 1-d", lambda: mlp.forward(X[0], THETA), ValueError,
     r"X: expected a 2-d array, received shape \(3,\) \(1-d\)"),
    ("X empty", lambda: mlp.forward(X[:0], THETA), ValueError,
     r"X: expected at least one sample, received an empty batch \(0, 3\)"),
    ("X NaN", lambda: mlp.loss_and_grads(np.where(X > 1, np.nan, X), Y, THETA), ValueError,
     r"X: expected finite values, received \d+ NaN or inf entries"),
    ("X inf", lambda: mlp.predict(np.full((2, 3), -np.inf), THETA), ValueError,
     r"X: expected finite values, received 6 NaN or inf entries"),
    ("X wrong d", lambda: mlp.forward(X[:, :2], THETA), ValueError,
     r"X: expected d=3 features per sample \(theta\['W1'\] is \(3, 4\)\), received 2"),
    ("theta list", lambda: mlp.forward(X, [THETA]), TypeError,
     r"theta: expected a dict with keys .*received list"),
    ("theta missing key", lambda: mlp.forward(X, {"W1": THETA["W1"]}), ValueError,
     r"theta: expected keys .*missing \['b1', 'W2', 'b2'\]"),
    ("theta complex", lambda: mlp.forward(X, _with("W2", THETA["W2"] + 0j)), TypeError,
     r"theta\['W2'\]: expected a real array, received dtype complex128"),
    ("theta b1 shape", lambda: mlp.forward(X, _with("b1", np.zeros(5))), ValueError,
     r"theta\['b1'\]: expected shape \(m=4,\), received \(5,\)"),
    ("y non-integer", lambda: mlp.loss_and_grads(X, Y + 0.5, THETA), ValueError,
     r"y: expected integer class labels, received non-integer values"),
    ("y NaN", lambda: mlp.loss_and_grads(X, np.full(5, np.nan), THETA), ValueError,
     r"y: expected integer class labels, received non-integer values"),
    ("y out of range", lambda: mlp.loss_and_grads(X, Y + 1, THETA), ValueError,
     r"y: expected class labels in 0..2, received 3"),
    ("y negative", lambda: mlp.accuracy(X, -Y, THETA), ValueError,
     r"y: expected class labels in 0..2, received -1"),
    ("y strings", lambda: mlp.loss_and_grads(X, Y.astype(str), THETA), TypeError,
     r"y: expected integer class labels, received dtype <U"),
    ("y length", lambda: mlp.loss_and_grads(X, Y[:3], THETA), ValueError,
     r"y: expected shape \(n=5,\), received \(3,\)"),
    ("init hidden 0", lambda: mlp.init_params(3, 0, 3), ValueError,
     r"hidden_dim: expected a positive integer, received 0"),
    ("init d float", lambda: mlp.MLP(2.5, 4, 3), ValueError,
     r"input_dim: expected a positive integer, received 2.5"),
    ("init scale NaN", lambda: mlp.init_params(3, 4, 3, scale=float("nan")), ValueError,
     r"scale: expected a positive finite number, received nan"),
    ("init dtype int", lambda: mlp.init_params(3, 4, 3, dtype=np.int64), ValueError,
     r"dtype: expected float32 or float64, received int64"),
    # --- numerics --------------------------------------------------------------------------
    ("softmax complex", lambda: mlp.softmax(np.zeros(3, complex)), TypeError,
     r"z: expected a real numeric array .*received dtype complex128"),
    ("softmax empty", lambda: mlp.softmax(np.zeros((2, 0))), ValueError,
     r"z: expected at least one entry along axis -1, received \(2, 0\)"),
    ("softmax axis", lambda: mlp.softmax(np.zeros(3), axis=1), ValueError,
     r"axis: expected an axis of z \(ndim 1\), received 1"),
    ("logsumexp strings", lambda: mlp.logsumexp(np.array(["a"])), TypeError,
     r"z: expected a real numeric array .*received dtype <U1"),
    ("log_softmax empty", lambda: mlp.log_softmax(np.zeros((0, 3)), axis=0), ValueError,
     r"z: expected at least one entry along axis 0, received \(0, 3\)"),
    ("cross_entropy Z 1-d", lambda: mlp.cross_entropy(np.zeros(3), np.array([0])), ValueError,
     r"Z: expected a 2-d array, received shape \(3,\) \(1-d\)"),
    ("cross_entropy empty", lambda: mlp.cross_entropy(np.zeros((0, 3)), Y[:0]), ValueError,
     r"Z: expected at least one sample, received an empty batch \(0, 3\)"),
    ("cross_entropy y range", lambda: mlp.cross_entropy(np.zeros((2, 3)), [0, 3]), ValueError,
     r"y: expected class labels in 0..2, received 3"),
    ("cross_entropy y length", lambda: mlp.cross_entropy(np.zeros((2, 3)), [0]), ValueError,
     r"y: expected shape \(n=2,\), received \(1,\)"),
    ("logistic y 0", lambda: mlp.logistic_loss(np.zeros(2), np.array([0, 1])), ValueError,
     r"y: expected labels in \{-1, \+1\} for the logistic loss, received 0"),
    ("logistic y length", lambda: mlp.logistic_loss(np.zeros(2), np.ones(3)), ValueError,
     r"y: expected shape \(n=2,\), received \(3,\)"),
    ("logistic z 2 columns", lambda: mlp.logistic_loss(np.zeros((2, 2)), np.ones(2)), ValueError,
     r"z: expected shape \(n,\) or \(n, 1\), received \(2, 2\)"),
    ("logistic z complex", lambda: mlp.logistic_loss(np.zeros(2, complex), np.ones(2)), TypeError,
     r"z: expected a real numeric array .*received dtype complex128"),
    # --- contract --------------------------------------------------------------------------
    ("contract pattern type", lambda: mlp.contract(3, X, X), TypeError,
     r"contract: pattern: expected a str like .*received int"),
    ("contract no arrow", lambda: mlp.contract("n d, d m", X, THETA["W1"]), ValueError,
     r"contract: expected a pattern 'a-axes, b-axes -> out-axes', got 'n d, d m'"),
    ("contract operand complex", lambda: mlp.contract("n d, d m -> n m", X + 0j, THETA["W1"]),
     TypeError, r"contract: operand 1: expected a real numeric array .*complex128"),
    ("contract operand object", lambda: mlp.contract("n d, d m -> n m", X, [[None]]), TypeError,
     r"contract: operand 2: expected a real numeric array .*received dtype object"),
    ("contract ndim", lambda: mlp.contract("n d, d m -> n m", X[0], THETA["W1"]), ValueError,
     r"operand 1 needs 2 axes \(n d\), received shape \(3,\)"),
    ("contract size", lambda: mlp.contract("n d, d m -> n m", X, THETA["W2"]), ValueError,
     r"axis 'd' has size 3 in operand 1 and 4 in operand 2"),
    # --- optimizers and schedules ----------------------------------------------------------
    ("step lr 0", lambda: mlp.SGD().step({"w": np.zeros(2)}, {"w": np.ones(2)}, 0.0), ValueError,
     r"lr: expected a positive finite number, received 0.0"),
    ("step lr NaN", lambda: mlp.Adam().step({"w": np.zeros(2)}, {"w": np.ones(2)}, np.nan),
     ValueError, r"lr: expected a positive finite number, received nan"),
    ("step grad shape", lambda: mlp.NormalizedGD().step({"w": np.zeros(2)}, {"w": np.ones(3)}, 1),
     ValueError, r"grads\['w'\]: expected the parameter's shape \(2,\), received \(3,\)"),
    ("step grad key", lambda: mlp.SGD().step({"w": np.zeros(2)}, {"v": np.ones(2)}, 0.1),
     ValueError, r"grads: key 'v' is not a parameter; params has \['w'\]"),
    ("adam beta1 1", lambda: mlp.Adam(beta1=1.0), ValueError,
     r"beta1: expected a value in \[0, 1\), received 1.0"),
    ("adam beta2 str", lambda: mlp.Adam(beta2="0.9"), ValueError,
     r"beta2: expected a value in \[0, 1\), received '0.9'"),
    ("adam eps 0", lambda: mlp.Adam(eps=0.0), ValueError,
     r"eps: expected a positive finite number, received 0.0"),
    ("adam state no t", lambda: mlp.Adam().load_state_dict({"m/w": np.zeros(2)}), ValueError,
     r"Adam state: expected key 't', received keys \['m/w'\]"),
    ("adam state t float", lambda: mlp.Adam().load_state_dict({"t": np.array(1.5)}), ValueError,
     r"Adam state 't': expected a non-negative integer, received float64"),
    ("adam state m without v", lambda: mlp.Adam().load_state_dict({**T1, "m/w": np.zeros(2)}),
     ValueError, r"Adam state: expected 't' and matching 'm/<key>', 'v/<key>' entries"),
    ("adam state shapes",
     lambda: mlp.Adam().load_state_dict({**T1, "m/w": np.zeros(2), "v/w": np.zeros(3)}),
     ValueError, r"Adam state for 'w': expected float moments of one shape"),
    ("sgd state", lambda: mlp.SGD().load_state_dict({"t": np.array(1)}), ValueError,
     r"SGD has no state, received keys \['t'\]"),
    ("ngd per_param", lambda: mlp.NormalizedGD(per_param="yes"), TypeError,
     r"per_param: expected True or False, received 'yes'"),
    ("optimizer name", lambda: mlp.make_optimizer("rmsprop"), ValueError,
     r"optimizer: expected one of 'sgd', 'ngd', 'adam', 'adamw', received 'rmsprop'"),
    ("optimizer option", lambda: mlp.make_optimizer("adam", momentum=0.9), ValueError,
     r"optimizer 'adam': unknown option\(s\) \['momentum'\]; expected options \['beta1'"),
    ("schedule name", lambda: mlp.make_schedule("linear", 0.1), ValueError,
     r"schedule: expected one of 'constant', 'inverse', 'step', 'cosine', received 'linear'"),
    ("schedule lr", lambda: mlp.make_schedule("constant", -1.0), ValueError,
     r"lr: expected a positive finite number, received -1.0"),
    ("schedule decay", lambda: mlp.make_schedule("inverse", 0.1, decay_steps=0), ValueError,
     r"decay_steps: expected a positive finite number, received 0"),
    # --- Dataset ---------------------------------------------------------------------------
    ("Dataset y length", lambda: mlp.Dataset(X, Y[:3]), ValueError,
     r"Dataset.y: expected 5 rows \(as X\), received shape \(3,\)"),
    ("Dataset Z length", lambda: mlp.Dataset(PROMPTS, [1, -1], Z=np.zeros((3, 3, 1))), ValueError,
     r"Dataset.Z: expected 2 rows \(as X\), received shape \(3, 3, 1\)"),
    ("Dataset X complex", lambda: mlp.Dataset(X + 0j, Y), TypeError,
     r"Dataset.X: expected a real numeric array .*received dtype complex128"),
    ("Dataset X scalar", lambda: mlp.Dataset(1.0, Y), ValueError,
     r"Dataset.X: expected one row per sample, received a scalar 1.0"),
    ("Dataset y 2-d", lambda: mlp.Dataset(X, Y[:, None]), ValueError,
     r"Dataset.y: expected shape \(n,\), received \(5, 1\)"),
    ("Dataset y strings", lambda: mlp.Dataset(X, Y.astype(str)), TypeError,
     r"Dataset.y: expected numeric targets, received dtype <U"),
    ("metrics target range",
     lambda: ContextWindowModel(3).metrics(PROMPTS, [1, -1], target=np.array([0, 4])),
     ValueError, r"target: expected token indices in 0..3, received 4"),
    # --- Trainer arguments -----------------------------------------------------------------
    ("Trainer lr 0", lambda: _trainer(lr=0), ValueError,
     r"lr: expected a positive finite number, received 0"),
    ("Trainer lr negative", lambda: _trainer(lr=-0.5), ValueError,
     r"lr: expected a positive finite number, received -0.5"),
    ("Trainer batch > n", lambda: _trainer(batch_size=6), ValueError,
     r"batch_size: expected at most the number of training samples \(5\), received 6"),
    ("Trainer batch 0", lambda: _trainer(batch_size=0), ValueError,
     r"batch_size: expected a positive integer, received 0"),
    ("Trainer steps 0", lambda: _trainer(steps=0), ValueError,
     r"steps: expected a positive integer, received 0"),
    ("Trainer steps negative", lambda: _trainer(steps=-3), ValueError,
     r"steps: expected a positive integer, received -3"),
    ("Trainer steps float", lambda: _trainer(steps=2.5), ValueError,
     r"steps: expected a positive integer, received 2.5"),
    ("Trainer trainable unknown", lambda: _trainer(trainable=["W1", "W3"]), ValueError,
     r"trainable: unknown parameter\(s\) \['W3'\]; the model has \['W1', 'b1', 'W2', 'b2'\]"),
    ("Trainer trainable str", lambda: _trainer(trainable="W1"), TypeError,
     r"trainable: expected a list of parameter names, received the str 'W1'"),
    ("Trainer trainable empty", lambda: _trainer(trainable=[]), ValueError,
     r"trainable: expected at least one parameter name, received none"),
    ("Trainer eval_every 0", lambda: _trainer(eval_every=0), ValueError,
     r"eval_every: expected a positive integer, received 0"),
    ("Trainer checkpoint_every 0", lambda: _trainer(checkpoint_every=0), ValueError,
     r"checkpoint_every: expected a positive integer, received 0"),
    ("Trainer seed negative", lambda: _trainer(seed=-1), ValueError,
     r"seed: expected a non-negative integer, received -1"),
    ("Trainer empty train", lambda: _trainer(train=mlp.Dataset(X[:0], Y[:0])), ValueError,
     r"train.X: expected at least one sample, received an empty batch \(0, 3\)"),
    ("Trainer empty test", lambda: _trainer(test=mlp.Dataset(X[:0], Y[:0])), ValueError,
     r"test.X: expected at least one sample, received an empty batch \(0, 3\)"),
    ("Trainer NaN train", lambda: _trainer(train=mlp.Dataset(X * np.nan, Y)), ValueError,
     r"train.X: expected finite values, received 15 NaN or inf entries"),
    ("Trainer train tuple", lambda: _trainer(train=(X, Y)), TypeError,
     r"train: expected a Dataset or a Stream, received tuple"),
    ("Trainer test tuple", lambda: _trainer(test=(X, Y)), TypeError,
     r"test: expected a Dataset, received tuple"),
    ("Trainer model", lambda: _trainer(model=THETA), TypeError,
     r"model: expected an object with a params dict and loss_and_grads, received dict"),
    ("Trainer optimizer", lambda: _trainer(optimizer="sgd"), TypeError,
     r"optimizer: expected an object with step, state_dict and load_state_dict, received str"),
    ("Trainer save without path", lambda: _trainer().save(), ValueError,
     r"save: no checkpoint path given and none configured"),
    # --- checkpoints -----------------------------------------------------------------------
    ("load missing", lambda: mlp.load_checkpoint(NOWHERE), mlp.CheckpointError,
     r"checkpoint: no file at /nonexistent-dir/x.npz"),
    # --- the attention primitive -----------------------------------------------------------
    ("attend X complex", lambda: attend_forward(PROMPTS + 0j, np.zeros((3, 1))), TypeError,
     r"X: expected a real numeric array .*received dtype complex128"),
    ("attend X 2-d", lambda: attend_forward(PROMPTS[0], np.zeros((3, 1))), ValueError,
     r"X: expected a 3-d array, received shape \(3, 4\) \(2-d\)"),
    ("attend X empty", lambda: attend_forward(PROMPTS[:0], np.zeros((3, 1))), ValueError,
     r"X: expected at least one sample, received an empty batch \(0, 3, 4\)"),
    ("attend no tokens", lambda: attend_forward(PROMPTS[:, :, :0], np.zeros((3, 1))), ValueError,
     r"X: expected d >= 1 features and c >= 1 tokens, received \(2, 3, 0\)"),
    ("attend X inf", lambda: attend_forward(PROMPTS * np.inf, np.zeros((3, 1))), ValueError,
     r"X: expected finite values, received 24 NaN or inf entries"),
    ("attend Q shared d", lambda: attend_forward(PROMPTS, np.zeros((2, 1))), ValueError,
     r"Q: expected shape \(d=3, j\) to match X \(2, 3, 4\), received \(2, 1\)"),
    ("attend Q per prompt n", lambda: attend_forward(PROMPTS, np.zeros((3, 3, 1))), ValueError,
     r"Q: expected shape \(n=2, d=3, j\) to match X \(2, 3, 4\), received \(3, 3, 1\)"),
    ("attend Q NaN", lambda: attend_forward(PROMPTS, np.full((3, 1), np.nan)), ValueError,
     r"Q: expected finite values, received 3 NaN or inf entries"),
    ("attend Q no columns", lambda: attend_forward(PROMPTS, np.zeros((3, 0))), ValueError,
     r"Q: expected at least one query column, received \(3, 0\)"),
    ("attend_backward dOut shape", lambda: attend_backward(np.zeros((2, 3, 2)), _cache()),
     ValueError, r"dOut: expected shape \(n=2, d=3, j=1\), received \(2, 3, 2\)"),
    ("attend_backward dOut strings", lambda: attend_backward(np.full((2, 3, 1), "a"), _cache()),
     TypeError, r"dOut: expected a real numeric array .*received dtype <U1"),
    ("attend_backward cache", lambda: attend_backward(np.zeros((2, 3, 1)), {"S": 1}), TypeError,
     r"cache: expected the AttentionCache returned by attend_forward, received dict"),
    # --- tasks -----------------------------------------------------------------------------
    ("iris context 0", lambda: tasks.iris_in_context(context=0), ValueError,
     r"context: expected a positive integer, received 0"),
    ("iris features 3", lambda: tasks.iris_in_context(features=3), ValueError,
     r"features: expected 2 or 4, received 3"),
    ("iris n_train 0", lambda: tasks.iris_in_context(n_train=0), ValueError,
     r"n_train: expected a positive integer, received 0"),
    ("max-margin n 0", lambda: tasks.max_margin(n=0), ValueError,
     r"n: expected a positive integer, received 0"),
    ("max-margin context 0", lambda: tasks.max_margin(context=0), ValueError,
     r"context: expected a positive integer, received 0"),
    ("max-margin d 0", lambda: tasks.max_margin(d=0), ValueError,
     r"d: expected a positive integer, received 0"),
    ("prompt-norm context 0", lambda: tasks.prompt_norm(context=0), ValueError,
     r"context: expected a positive integer, received 0"),
    ("task name", lambda: tasks.make_task("iris"), ValueError,
     r"task: expected one of 'iris-in-context', 'max-margin', 'prompt-norm', "
     r"'linear-regression-in-context', 'markov-in-context', 'repeated-tokens', received 'iris'"),
    ("task option", lambda: tasks.make_task("max-margin", tokens=8), ValueError,
     r"task 'max-margin': unknown option\(s\) \['tokens'\]; expected options \['n', 'context'"),
    # --- the model's parameter and target checks added with this audit ---------------------
    ("model target range", lambda: _on_target([0, 4]),
     ValueError, r"target: expected token indices in 0..3, received 4"),
    ("model target negative", lambda: _on_target([-1, 0]),
     ValueError, r"target: expected token indices in 0..3, received -1"),
]
# fmt: on


@pytest.mark.parametrize(
    ("call", "exc", "match"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_error_names_argument_expected_and_received(
    call: Callable[[], object], exc: type, match: str
) -> None:
    with pytest.raises(exc, match=match):
        call()


@pytest.mark.parametrize(
    ("key", "value", "match"),
    [
        (
            "W",
            np.zeros((4, 4)),
            r"params\['W'\]: expected a float array of shape \(3, 3\), "
            r"received ndarray \(4, 4\) float64",
        ),
        (
            "v",
            np.zeros((3, 1), dtype=complex),
            r"params\['v'\]: expected a float array of shape "
            r"\(3, 1\), received ndarray \(3, 1\) complex128",
        ),
        (
            "W",
            [[0.0] * 3] * 3,
            r"params\['W'\]: expected a float array of shape \(3, 3\), "
            r"received list \(3, 3\)",
        ),
    ],
)
def test_model_refuses_a_replaced_parameter_of_the_wrong_shape_or_kind(
    key: str, value: object, match: str
) -> None:
    model = ContextWindowModel(3)
    model.params[key] = value
    with pytest.raises(ValueError, match=match):
        model.forward(PROMPTS)


def test_a_schedule_that_returns_a_bad_lr_is_refused_at_the_step() -> None:
    trainer = _trainer(lr=lambda t: 0.1 if t < 3 else 0.0)
    with pytest.raises(ValueError, match=r"lr: expected a positive finite number, received 0.0"):
        trainer.run()
    assert trainer.step == 3


def test_adam_refuses_moments_that_do_not_fit_the_gradient() -> None:
    opt = mlp.Adam()
    opt.load_state_dict({"t": np.array(1), "m/w": np.zeros(3), "v/w": np.zeros(3)})
    with pytest.raises(
        ValueError,
        match=r"Adam state for 'w': expected moments of the "
        r"gradient's shape \(2,\), received m \(3,\) and v \(3,\)",
    ):
        opt.step({"w": np.zeros(2)}, {"w": np.ones(2)}, 0.1)


# --- resume: the checkpoint must belong to this run ------------------------------------------


@pytest.fixture
def checkpoint_at_step_4(tmp_path) -> object:
    path = tmp_path / "ckpt.npz"
    _trainer(steps=4, batch_size=2, seed=3, checkpoint=path).run()
    return path


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        (
            {"steps": 3},
            ValueError,
            r"steps: expected at least the checkpoint's step 4 \(steps is the total number of "
            r"updates\), received 3",
        ),
        (
            {"optimizer": mlp.Adam()},
            ValueError,
            r"optimizer: checkpoint .* was written by 'sgd', this trainer has 'adam'",
        ),
        (
            {"seed": 4},
            ValueError,
            r"resume: checkpoint .* was written with seed=3, batch_size=2; "
            r"this trainer has seed=4, batch_size=2",
        ),
        ({"batch_size": 1}, ValueError, r"this trainer has seed=3, batch_size=1"),
        (
            {"model": mlp.MLP(3, 5, 3)},
            mlp.CheckpointError,
            r"parameter 'W1' has shape \(3, 4\) float64, the model expects \(3, 5\) float64",
        ),
        (
            {"model": mlp.MLP(3, 4, 3, dtype=np.float32)},
            mlp.CheckpointError,
            r"parameter 'W1' has shape \(3, 4\) float64, the model expects \(3, 4\) float32",
        ),
        (
            {"model": ContextWindowModel(3)},
            mlp.CheckpointError,
            r"parameter keys \['W1', 'W2', 'b1', 'b2'\] do not match the model's \['W', 'v'\]",
        ),
    ],
)
def test_resume_refuses_a_checkpoint_of_another_run(
    checkpoint_at_step_4, kwargs: dict, exc: type, match: str
) -> None:
    options = {"steps": 10, "batch_size": 2, "seed": 3, **kwargs}
    trainer = _trainer(**options)
    with pytest.raises(exc, match=match):
        trainer.resume(checkpoint_at_step_4)
