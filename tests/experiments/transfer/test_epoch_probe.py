"""Adam's one-epoch pilot at the probe inits (epoch_probe.py): the optimum's
refinement and censoring, the paired drift and its SE, the summary reading it for Adam (and only Adam), and the
probe runs themselves against a plain optax loop."""
import numpy as np
import pytest

from jscale.experiments.transfer import epoch_probe


def test_optima_refine_a_parabola_and_censor_the_ladders_ends():
  L = epoch_probe.LADDER
  f = np.stack([0.2 * (L - 1.3) ** 2 + 0.1, 0.2 * (L - 9.0) ** 2, 0.2 * (L + 0.4) ** 2])
  bad = np.zeros(f.shape, bool)
  bad[2, L > 3] = True    # diverged runs above 2^3 do not move an optimum below them
  t = epoch_probe.optima(f, bad)
  np.testing.assert_allclose(t[[0, 2]], [1.3, -0.4], atol=1e-9)   # a parabola through 3 points is exact
  assert np.isnan(t[1])   # the minimum at the ladder's top: censored


def test_drift_is_the_mean_paired_shift_with_its_se():
  rng = np.random.default_rng(0)
  small = rng.normal(0.0, 1.0, 16)
  large = small - 2.0 + rng.normal(0.0, 0.1, 16)   # shared draw effects cancel in the pairs
  d, se = epoch_probe.drift(small, large)
  assert d == pytest.approx(np.mean(large - small))
  assert se == pytest.approx(np.std(large - small, ddof=1) / 4.0)
  assert se < 0.05    # the pairs' 0.1 spread, not the draws' 1.0
  assert epoch_probe.drift(small, np.where(np.arange(16) == 3, np.nan, large)) == (None, None)


def _results(with_epoch: bool):
  from jscale.sweeps.results import Results
  W, O, R, K, S, L, D = 2, 2, 3, 5, 2, 3, 4
  k = np.arange(K)
  loss = np.broadcast_to((0.1 * (k - 2.0) ** 2 + 0.3)[None, None, None, None, :, None], (1, W, O, R, K, S)).copy()
  resp = np.ones((W, R, O, L))
  resp[1] = 2.0          # every response doubles from width 32 to 512: the response predicts -1 octave
  arrays = {"loss": loss, "lr": np.broadcast_to(2.0 ** (k - 2.0), (O, R, K)).copy(),
            "step_size": np.ones((1, W, O, R)), "mlp_resp_meas": resp, "mlp_resp_rse": np.full((W, R, O, L), 0.01),
            "mlp_resp_calc": resp}
  metrics = {"loss": ("model", "width", "optimizer", "param", "lr_octave", "seed"),
             "lr": ("optimizer", "param", "lr_octave"), "step_size": ("model", "width", "optimizer", "param"),
             **{f"mlp_resp_{n}": ("width", "param", "optimizer", "mlp_kernel") for n in ("meas", "rse", "calc")}}
  if with_epoch:
    ep = np.zeros((W, R, D))
    ep[1] = np.array([[-3.0, -3.2, -2.8, -3.0], [0.5, 0.4, 0.6, 0.5], [0.1, 0.0, 0.2, 0.1]])
    arrays["mlp_epoch_opt"], metrics["mlp_epoch_opt"] = ep, ("width", "param", "epoch_draw")
  axes = {"model": ["mlp"], "width": [32, 512], "optimizer": ["sgd", "adam"], "param": ["standard", "mup", "equal_G"],
          "lr_octave": list(range(K)), "seed": [0, 1], "mlp_kernel": [0, 1, 2], "epoch_draw": list(range(D))}
  return Results("/nonexistent", {"axes": axes, "metrics": metrics}, arrays)


def test_summary_reports_adams_pilot_beside_the_response_prediction(monkeypatch):
  from jscale.experiments.transfer import section
  monkeypatch.setattr(section, "coordinate_summary", lambda r: {})
  monkeypatch.setattr(section, "per_leaf", lambda r: {})
  out = {(e["optimizer"], e["param"]): e for e in section.summarize(_results(True))["results"]}
  ep = _results(True).arrays["mlp_epoch_opt"]
  ep_row = lambda p: ep[1, ["standard", "mup", "equal_G"].index(p)]   # noqa: E731
  for param, want in (("standard", -3.0), ("mup", 0.5), ("equal_G", 0.1)):
    adam = out["adam", param]
    assert adam["pilot_drift_octaves"] == pytest.approx(want)
    assert adam["pilot_drift_se"] == pytest.approx(np.std(ep_row(param), ddof=1) / 2)
    assert adam["pilot_minus_measured"] == pytest.approx(want - adam["measured_drift_octaves"])
    # the prediction stays the calculus's (the response), whatever the pilot says
    assert adam["predicted_drift_octaves"] == pytest.approx(-1.0)
    assert out["sgd", param]["pilot_drift_octaves"] is None                     # the pilot is Adam's only
    assert out["sgd", param]["predicted_drift_octaves"] == pytest.approx(-1.0)
  # a grid without the pilot stores no pilot fields
  old = {(e["optimizer"], e["param"]): e for e in section.summarize(_results(False))["results"]}
  assert "pilot_drift_octaves" not in old["adam", "mup"]
  assert old["adam", "mup"]["predicted_drift_octaves"] == pytest.approx(-1.0)


def test_final_losses_are_a_plain_adam_loop_over_the_epochs_minibatches():
  import jax
  import jax.numpy as jnp
  import optax
  from jscale import models
  from jscale.experiments.transfer import run
  net = models.mlp((6, 8, 8, 3))
  rng = np.random.default_rng(1)
  x = rng.standard_normal((40, 6)).astype(np.float32)
  y = rng.integers(0, 3, 40).astype(np.int32)
  p0s = run.probe_draws(net, 2)
  init_m, lr_m = np.array([1.0, 0.5, 2.0], np.float32), np.array([1.0, 0.25, 4.0], np.float32)
  pres = {("standard", "adam"): (None, init_m, lr_m, 1.0)}
  f, bad = epoch_probe.final_losses(net, pres, x, y, x[:8], y[:8], p0s, ("standard",), {"standard/adam": 0.01},
                                    batch_size=16)   # 2 steps of 16; the last 8 examples are not used
  assert f.shape == bad.shape == (1, 2, len(epoch_probe.LADDER)) and not bad.any()
  def loss(p, xs, ys):
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(net.forward(p, xs)[0], ys))
  @jax.jit   # one compiled reference for every draw and rate (eager optax compiled per op: ~10 s)
  def ref(p0, lr):
    p = net.map_kernels(lambda l, w: w * init_m[l], p0)
    # per-kernel rates lr * lr_m, biases lr: Adam at rate 1 scaled per leaf
    rates = net.map_kernels(lambda l, _: lr * lr_m[l], jax.tree.map(lambda _: lr, p))
    tx = optax.adam(1.0)
    s = tx.init(p)
    for b in range(2):
      u, s = tx.update(jax.grad(loss)(p, x[16 * b:16 * b + 16], y[16 * b:16 * b + 16]), s, p)
      p = jax.tree.map(lambda w, du, r: w + r * du, p, u, rates)
    return loss(p, x[:8], y[:8])

  for d in range(2):
    for k in (0, 16, 30):
      want = float(ref(jax.tree.map(lambda v: v[d], p0s), jnp.float32(0.01 * 2.0 ** epoch_probe.LADDER[k])))
      assert f[0, d, k] == pytest.approx(want, rel=1e-5)   # float32 in another order: 1e-5 relative
