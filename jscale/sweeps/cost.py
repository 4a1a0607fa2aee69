"""The cost model of one configuration of a sweep: its FLOPs (for throughput figures) and a generous estimate of
its device memory (what the planner cuts a group into chunks by). Everything comes from the network
(`TrainSpec.network`: its parameters, activations per example and per-example FLOPs) and the schedule."""
from __future__ import annotations

from jscale.train import Metrics, TrainSpec


def flops_per_config(spec: TrainSpec, n_train: int, n_test: int) -> float:
  """Model FLOPs of one configuration's whole run: per training example the network's forward and backward
  FLOPs (`Model.forward_flops` / `backward_flops`: the MLP counts its matmuls analytically, 2 per multiply-add;
  another model's forward pass is XLA's cost analysis and its backward twice that), plus a test-set forward
  pass every epoch, the train-pass forward (every epoch in minibatch mode; full batch: once, after the last
  epoch) and, with `output_std`, the calibration forward pass on the first minibatch."""
  net = spec.network
  fwd, bwd = net.forward_flops(), net.backward_flops()
  rows = spec.steps_per_epoch(n_train) * (spec.batch_size or n_train)
  train_pass = 0 if not spec.train_pass else n_train * fwd * (1 if spec.batch_size is None else spec.epochs)
  calibration = 0 if spec.output_std is None else (spec.batch_size or n_train) * fwd
  return float(spec.epochs * (rows * (fwd + bwd) + n_test * fwd) + train_pass + calibration)


def bytes_per_config(spec: TrainSpec, n_train: int, n_test: int, dtype_bytes: int = 4) -> int:
  """A deliberately generous estimate of one configuration's device memory in a vmapped run.

  Parameters with optimizer state, updates and the frozen copies (8 P); the step's activations forward
  and backward (4 per unit per row, + the input); the epoch's gathered minibatches; the test forward and,
  in minibatch mode, the train-pass forward over the training split; the metrics; all times 2 for XLA's
  temporaries. The data set itself is not included (the planner adds it).
  """
  net = spec.network
  n_in = spec.widths[0]
  P, units = net.num_params(), net.units()   # parameters; activations per example (hidden and logits)
  rows = spec.batch_size or n_train
  acts = rows * (n_in + 4 * units)
  gathered = 0 if spec.batch_size is None else n_train * (n_in + 1)
  test = 2 * n_test * (n_in + units)
  train_pass = 0 if spec.batch_size is None or not spec.train_pass else 2 * n_train * units
  metrics = spec.epochs * (len(Metrics._fields) + spec.n_layers)
  return int(2 * dtype_bytes * (8 * P + acts + gathered + test + train_pass + metrics))
