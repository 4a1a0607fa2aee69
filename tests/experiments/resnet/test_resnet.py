"""The `resnet` experiment: its 3x3 convolution against lax's, the geometric rows against the paper's block in
`jscale.models.resnet`, the schemes' forward moments at initialisation, the section's statistics, and a tiny run."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jscale import experiments, sweeps  # noqa: F401  (registers the built-ins)
from jscale.experiments.resnet import run, section
from jscale.models import resnet as resnet_lib


def test_conv3x3_same_equals_lax_conv():
  x = jax.random.normal(jax.random.key(0), (2, 4, 4, 3))
  w = jax.random.normal(jax.random.key(1), (3, 3, 3, 5))
  ref = jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                     precision="highest")
  with jax.default_matmul_precision("highest"):
    got = run.conv3x3_same(x, w.reshape(27, 5))
  np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)   # float32 sums in another order


def test_geometric_row_is_the_papers_block():
  """The geometric row (depth 3, dropout off) computes jscale.models.resnet.apply_resnet on the same draws."""
  cfg = run.resnet_config(3)
  net = run.make_net(cfg)
  # init and both forwards jitted: run eagerly, every op compiled on its own (the test's cost, not its check)
  params = jax.jit(net.init)(jax.random.key(0), run.row("geometric", 3, 1.0, cfg))
  tree = {"stem": params["stem"], "head": params["head"]}
  for i in range(3):
    blk = jax.tree.map(lambda a: a[i], params["blocks"])
    tree[f"block{i}"] = {n: {"kernel": blk[n].reshape(s)} for n, s in
                         cfg.block_configs()[0].kernel_shapes(cfg.stem_channels).items()}
    tree[f"block{i}"]["alpha"] = blk["alpha"]
  x = jax.random.normal(jax.random.key(1), (5, 8, 8, 1))
  with jax.default_matmul_precision("highest"):
    got = jax.jit(lambda p, r, x_: net.apply(p, r, x_, None, False))(params, run.row("geometric", 3, 1.0, cfg), x)
    ref = jax.jit(lambda t, x_: resnet_lib.apply_resnet(t, x_, cfg, "geometric:c=2"))(tree, x)
  np.testing.assert_allclose(got, ref, rtol=2e-4, atol=1e-5)


def _block_output_moment(scheme, depth):
  cfg = run.resnet_config(16)
  net = run.make_net(cfg)
  r = run.row(scheme, depth, 1.0, cfg)
  params = net.init(jax.random.key(2), r)
  x = jax.random.normal(jax.random.key(3), (256, 8, 8, 1))
  logits = net.apply(params, r, x, None, False)
  return float(jnp.mean(logits ** 2))


@pytest.mark.slow
def test_forward_moment_with_depth():
  """He without scalars grows the forward second moment with depth (about doubling per block: x + F(x) with
  E[F^2] ~ E[x^2]); the geometric block and fixed residual scaling keep it within a small factor. The factor of 8
  between 1 and 16 blocks is far from both (2^15 vs ~1), so the test does not depend on the draw."""
  for scheme, grows in (("fan_in", True), ("geometric", False), ("rescale", False)):
    ratio = _block_output_moment(scheme, 16) / _block_output_moment(scheme, 1)
    assert (ratio > 8) == grows, (scheme, ratio)


def test_rows_and_bad_input():
  cfg = run.resnet_config(4)
  r = run.row("rescale", 2, 0.05, cfg)
  np.testing.assert_allclose(r.a, [np.sqrt(1 / 2), np.sqrt(2 / 3), 1, 1], rtol=1e-6)
  np.testing.assert_allclose(r.b, [np.sqrt(1 / 2), np.sqrt(1 / 3), 0, 0], rtol=1e-6)   # identities past depth 2
  with pytest.raises(ValueError, match="scheme must be one of"):
    run.row("batchnorm", 2, 1.0, cfg)
  with pytest.raises(ValueError, match="depth must be in"):
    run.row("fan_in", 5, 1.0, cfg)


def test_best_scale_interval_and_claims():
  rng = np.random.default_rng(0)
  acc = np.stack([0.5 + 0.01 * rng.standard_normal(8), 0.9 + 0.01 * rng.standard_normal(8),
                  0.6 + 0.01 * rng.standard_normal(8)])
  assert section.best_scale_interval(acc) == (1, 1, 1)            # a clear winner: an interval of one scale
  tie = np.stack([0.9 + 0.05 * rng.standard_normal(8), 0.9 + 0.05 * rng.standard_normal(8)])
  best, lo, hi = section.best_scale_interval(tie)
  assert (lo, hi) == (0, 1)                                       # a tie: both scales in the interval
  scales = [0.01, 0.05, 1.0]
  assert section.scale_claim(scales, 1, 1, 1, 8).verdict == "holds"
  assert section.scale_claim(scales, 2, 2, 2, 8).verdict == "does not hold"
  assert section.scale_claim(scales, 1, 1, 1, 3).verdict == "too few seeds"
  same = 0.9 + 0.01 * rng.standard_normal(8)
  assert section.match_claim(same + 0.001, same, 16).verdict == "holds"
  assert section.match_claim(same - 0.05, same, 16).verdict == "does not hold"


@pytest.mark.slow
def test_quick_grid_into_its_section(tmp_path):
  from jscale.report import document
  exp = sweeps.get("resnet")
  exp.execute("quick", str(tmp_path / "resnet"))
  s = section.build(sweeps.load(str(tmp_path / "resnet")))
  assert len(s.verdicts) == 2 and all(v.kind == "transfer" for v in s.verdicts)
  assert len([p for p in s.parts if isinstance(p, document.Figure)]) == 2


@pytest.mark.slow   # 14 s cold; the experiment's own tests run the one program
def test_one_program_for_every_depth_equals_a_network_of_that_depth():
  """A 4-block network running its first 2 blocks (`active`, the experiment's one program for every depth) trains
  as the 2-block network does: the same keys (threefry's split is counter-based, so a key's first two blocks'
  draws do not depend on how many blocks are drawn) and the same sums. Tolerance: float32 round-off of
  differently fused programs over 3 SGD steps (the curves agree to ~1e-6 in practice)."""
  data = jax.tree.map(lambda a: a[None], sweeps_data())
  n_train = data.x_train.shape[1]
  keys = jnp.stack([jax.random.key(5)])
  got, ref = {}, {}
  for scheme in ("geometric", "layernorm"):
    big, small = run.resnet_config(4, channels=8, width=4), run.resnet_config(2, channels=8, width=4)
    train_big = run.make_train(run.make_net(big), epochs=1, batch_size=64, n_train=n_train)
    train_small = run.make_train(run.make_net(small), epochs=1, batch_size=64, n_train=n_train)
    got[scheme] = jax.jit(jax.vmap(train_big, in_axes=(0, None, 0, None)))(
        keys, run.row(scheme, 2, 0.5, big), data, jnp.int32(2))
    ref[scheme] = jax.jit(jax.vmap(train_small, in_axes=(0, None, 0)))(keys, run.row(scheme, 2, 0.5, small), data)
    np.testing.assert_allclose(got[scheme].train_loss, ref[scheme].train_loss, rtol=1e-5)
    np.testing.assert_allclose(got[scheme].test_acc, ref[scheme].test_acc, atol=1e-6)
  # and the blocks past `active` do matter when run: 4 active blocks is another network
  four = jax.jit(jax.vmap(train_big, in_axes=(0, None, 0, None)))(keys, run.row("layernorm", 4, 0.5, big), data,
                                                                   jnp.int32(4))
  assert not np.allclose(four.train_loss, ref["layernorm"].train_loss, rtol=1e-5)


def test_rows_by_depth_fills_chunks():
  cells = [("a", 2, 1.0), ("b", 4, 1.0), ("c", 2, 1.0), ("d", 2, 1.0)]
  assert run.rows_by_depth(cells, 2) == [(2, [0, 2]), (2, [3, 3]), (4, [1, 1])]


def sweeps_data():
  from jscale import datasets
  d = datasets.to_device(datasets.get("digits_raw", standardize=True, seed=0))
  return datasets.Data(d.x_train[:200], d.y_train[:200], d.x_test[:50], d.y_test[:50])
