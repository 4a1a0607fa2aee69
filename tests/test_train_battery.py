"""A battery of bad inputs to `TrainSpec`, `hparams`, `make_train`'s `train` and `Model`: each refused before
any compute by jscale's own check, with an error whose message names the input (a data error is never dressed
as a divergence). Every case fails if its error disappears, changes type or stops naming the input.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

from jscale import datasets, models, train as train_lib
from jscale.train import TrainSpec, hparams, make_train

NAN = float("nan")
X = jax.random.normal(jax.random.PRNGKey(0), (16, 2))
Y = jnp.asarray([0, 1] * 8, jnp.int32)
DATA = datasets.Data(X, Y, X[:4], Y[:4])


def _linear_model():
  """A user's Model (TrainSpec(model=...)): one dense layer, 2 inputs, 2 classes."""
  return models.Model.from_functions(lambda k: {"w": jax.random.normal(k, (2, 2))},
                                     lambda p, x: x @ p["w"], (2,), name="lin")


MLP_SPEC = dict(widths=(2, 4, 2), epochs=1, optimizer="sgd")
MODEL_SPEC = dict(model=_linear_model(), epochs=1, optimizer="sgd")

SPEC_CASES = [
    # (id, TrainSpec kwargs, error, regex)
    ("momentum -1", dict(MLP_SPEC, momentum=-1.0), ValueError, r"momentum must be a number in \[0, 1\).*-1"),
    ("momentum nan", dict(MLP_SPEC, momentum=NAN), ValueError, r"momentum.*nan"),
    ("momentum 1", dict(MLP_SPEC, momentum=1.0), ValueError, r"momentum.*1"),
    ("saturation_threshold -1", dict(MLP_SPEC, saturation_threshold=-1.0), ValueError, r"saturation_threshold.*-1"),
    ("saturation_threshold inf", dict(MLP_SPEC, saturation_threshold=float("inf")), ValueError,
     r"saturation_threshold.*inf"),
    ("epochs 0", dict(MLP_SPEC, epochs=0), ValueError, r"epochs must be an int >= 1.*0"),
    ("epochs True", dict(MLP_SPEC, epochs=True), ValueError, r"epochs.*True"),
    ("batch_size 0", dict(MLP_SPEC, batch_size=0), ValueError, r"batch_size.*0"),
    ("output_std 0", dict(MLP_SPEC, output_std=0.0), ValueError, r"output_std.*0"),
    ("optimizer", dict(MLP_SPEC, optimizer="rmsprop"), ValueError, r"optimizer 'rmsprop'"),
    ("activation", dict(MLP_SPEC, activation="swish"), ValueError, r"swish"),
    ("kernel_inits empty", dict(MLP_SPEC, kernel_inits=()), ValueError, r"kernel_inits"),
    ("kernel_inits unknown", dict(MLP_SPEC, kernel_inits=("gauss",)), ValueError, r"gauss"),
    ("train_pass 1", dict(MLP_SPEC, train_pass=1), ValueError, r"train_pass must be True or False"),
    ("widths with a 0", dict(MLP_SPEC, widths=(2, 0, 2)), ValueError, r"widths"),
    ("model not a Model", dict(MODEL_SPEC, model="lenet"), ValueError, r"model must be None .* got str"),
    ("model with MLP activation", dict(MODEL_SPEC, activation="tanh"), ValueError, r"activation 'tanh'.*'lin'"),
    ("model widths mismatch", dict(MODEL_SPEC, widths=(3, 2)), ValueError, r"widths \(3, 2\) do not fit model 'lin'"),
    ("model momentum nan", dict(MODEL_SPEC, momentum=NAN), ValueError, r"momentum.*nan"),
]


@pytest.mark.parametrize("kwargs,err,msg", [c[1:] for c in SPEC_CASES], ids=[c[0] for c in SPEC_CASES])
def test_train_spec_refuses(kwargs, err, msg):
  with pytest.raises(err, match=msg):
    TrainSpec(**kwargs)


HP_CASES = [
    # (id, hparams kwargs, error, regex)
    ("lr -1", dict(lr=-1.0), ValueError, r"lr must be a finite number >= 0.*-1"),
    ("lr nan", dict(lr=NAN), ValueError, r"lr.*nan"),
    ("lr inf", dict(lr=float("inf")), ValueError, r"lr.*inf"),
    ("lr array -1", dict(lr=jnp.asarray(-1.0)), ValueError, r"lr.*-1"),
    ("lr array with nan", dict(lr=jnp.asarray([0.1, NAN])), ValueError, r"lr.*nan"),
    ("init_scale -1", dict(init_scale=-1.0), ValueError, r"init_scale.*-1"),
    ("input_scale 0", dict(input_scale=0.0), ValueError, r"input_scale.*> 0"),
    ("output_scale nan", dict(output_scale=NAN), ValueError, r"output_scale.*nan"),
    ("weight_decay -0.1", dict(weight_decay=-0.1), ValueError, r"weight_decay.*-0.1"),
    ("unknown name", dict(learning_rate=0.1), ValueError, r"unknown hyperparameters \['learning_rate'\]"),
    ("layer_scale length", dict(layer_scale=(1.0,)), ValueError, r"layer_scale needs 2 entries"),
    ("init_index out of range", dict(init_index=3), ValueError, r"init_index 3 out of range"),
]


@pytest.mark.parametrize("kwargs,err,msg", [c[1:] for c in HP_CASES], ids=[c[0] for c in HP_CASES])
def test_hparams_refuse(kwargs, err, msg):
  with pytest.raises(err, match=msg):
    hparams(TrainSpec(**MLP_SPEC), **kwargs)


def _data(**change):
  return DATA._replace(**change)


DATA_CASES = [
    # (id, data, error, regex): for the MLP and for TrainSpec(model=...) alike
    ("label = outputs", _data(y_train=Y.at[3].set(2)), ValueError, r"y_train labels must be in \[0, 2\).*0 to 2"),
    ("label -1", _data(y_train=Y.at[0].set(-1)), ValueError, r"y_train labels must be in \[0, 2\).*-1"),
    ("3-class held-out set", _data(y_test=jnp.asarray([0, 1, 2, 1], jnp.int32)), ValueError,
     r"y_test labels.*more classes than the network has outputs"),
    ("float labels", _data(y_train=Y.astype(jnp.float32)), ValueError, r"y_train must hold integer class labels"),
    ("nan in x_train", _data(x_train=X.at[2, 1].set(jnp.nan)), ValueError,
     r"x_train must be finite.*1 NaN/inf.*not a divergence"),
    ("inf in x_test", _data(x_test=X[:4].at[0, 0].set(jnp.inf)), ValueError, r"x_test must be finite"),
    ("rows of the wrong width", _data(x_train=jnp.ones((16, 3))), ValueError, r"x_train has shape \(16, 3\)"),
    ("labels of shape (N, 1)", _data(y_train=Y[:, None]), ValueError, r"y_train must hold one label per row.*\(16, 1\)"),
    ("fewer labels than rows", _data(y_test=Y[:3]), ValueError, r"y_test must hold one label per row.*\(3,\)"),
    ("a tuple, not Data", (X, Y, X, Y), TypeError, r"data must be a jscale.datasets.Data.*tuple"),
]


@pytest.mark.parametrize("which", ["mlp", "model"])
@pytest.mark.parametrize("data,err,msg", [c[1:] for c in DATA_CASES], ids=[c[0] for c in DATA_CASES])
def test_train_refuses_bad_data_before_compute(which, data, err, msg):
  spec = TrainSpec(**(MLP_SPEC if which == "mlp" else MODEL_SPEC))
  train = make_train(spec)
  with pytest.raises(err, match=msg) as e:
    train(jax.random.PRNGKey(0), hparams(spec), data)
  if "labels must be in" in str(e.value):   # a label out of range names the network whose outputs it exceeds
    assert ("widths (2, 4, 2)" if which == "mlp" else "model 'lin'") in str(e.value)


def test_train_under_vmap_with_shared_data_is_checked_too():
  spec = TrainSpec(**MLP_SPEC)
  train = jax.vmap(make_train(spec), in_axes=(0, 0, None))
  hp = train_lib.stack_hparams([hparams(spec)] * 2)
  with pytest.raises(ValueError, match=r"y_train labels"):
    train(jax.random.split(jax.random.PRNGKey(0), 2), hp, _data(y_train=Y.at[0].set(5)))
  # Valid data trains (the check refuses nothing it should not).
  m = train(jax.random.split(jax.random.PRNGKey(0), 2), hp, DATA)
  assert not bool(m.diverged.any())


def test_to_device_checks_labels_against_the_data_sets_classes():
  ds = datasets.get("two_moons", seed=0)
  with pytest.raises(ValueError, match=r"data set 'two_moons'.*y_train labels must be in \[0, 2\).*num_classes is 2"):
    datasets.to_device(ds._replace(y_train=ds.y_train.copy() + 1))
  with pytest.raises(ValueError, match=r"data set 'two_moons'.*x_test must be finite"):
    x = ds.x_test.copy()
    x[0, 0] = float("nan")
    datasets.to_device(ds._replace(x_test=x))


class _NoParams(nn.Module):
  @nn.compact
  def __call__(self, x):
    return x * 2.0


class _WithBatchStats(nn.Module):
  @nn.compact
  def __call__(self, x):
    return nn.Dense(2)(nn.BatchNorm(use_running_average=False)(x))


MODEL_CASES = [
    # (id, thunk, error, regex)
    ("from_flax without params", lambda: models.Model.from_flax(_NoParams(), (2,)), ValueError,
     r"model '_NoParams': the module has no parameters"),
    ("from_flax with batch_stats", lambda: models.Model.from_flax(_WithBatchStats(), (2,)), ValueError,
     r"'_WithBatchStats'.*collections \['batch_stats'\]"),
    ("from_flax of a function", lambda: models.Model.from_flax(lambda x: x, (2,)), ValueError,
     r"from_flax expects a flax.linen Module"),
    ("init raises", lambda: models.Model.from_functions(lambda k: 1 / 0, lambda p, x: x, (2,), name="z"),
     ValueError, r"model 'z': init\(key\) failed: ZeroDivisionError"),
    ("apply raises", lambda: models.Model.from_functions(lambda k: {"w": jnp.ones((2, 2))}, lambda p, x: p["v"],
                                                         (2,), name="a"), ValueError, r"model 'a': apply.*failed"),
    ("no kernel", lambda: models.Model.from_functions(lambda k: {"b": jnp.ones(2)}, lambda p, x: x + p["b"], (2,),
                                                      name="nok"), ValueError, r"model 'nok'.*no kernel"),
    ("logits not 2-d", lambda: models.Model.from_functions(lambda k: {"w": jnp.ones((2, 2))},
                                                           lambda p, x: (x @ p["w"])[:, 0], (2,), name="v"),
     ValueError, r"model 'v': apply must return logits of shape \(batch, classes\)"),
    ("empty name", lambda: models.Model.from_functions(lambda k: {"w": jnp.ones((2, 2))}, lambda p, x: x @ p["w"],
                                                       (2,), name=""), ValueError, r"model name must be a non-empty"),
    ("bad input_shape", lambda: models.Model.from_functions(lambda k: {"w": jnp.ones((2, 2))},
                                                            lambda p, x: x @ p["w"], (0,), name="s"),
     ValueError, r"input_shape"),
]


@pytest.mark.parametrize("thunk,err,msg", [c[1:] for c in MODEL_CASES], ids=[c[0] for c in MODEL_CASES])
def test_model_refuses(thunk, err, msg):
  with pytest.raises(err, match=msg):
    thunk()
