"""The hessian section's headline (what README's Reproductions table and docs/sources.md quote)."""
from jscale.experiments.hessian import section


def _cfg(**extra):
  entry = {"median_nr": 1.01, "p5_nr": 0.9, "p95_nr": 1.2, "blocks": 10, "tautological_blocks": 2,
           "leading": {"median_nr": 0.3}}
  return {"setups": 5, "lenet_setups": 3, "draws": 64, "target_rel_se": 0.05,
          "full_order": {"family": "mlp", "seed": 0, "batch_sizes": {"1": entry, "1024": entry}}, **extra}


def test_figure2_evenness_is_quoted_most_even_first_with_its_numbers():
  h = section._headline(_cfg(fig2_widths=[24, 96, 8], lenet_varied=True, fig2_diag_max_over_min={
      "1": {"fan_in": 47.6, "geometric": 1.84, "xavier": 2.41},
      "128": {"fan_in": 1335.0, "geometric": 55.6, "xavier": 72.7}}))
  assert "Figure 2 (net 24-96-8, exact `jax.hessian`) diagonal max/min, most even first: batch 1 geometric 1.84, " \
         "xavier 2.41, fan_in 47.6; batch 128 geometric 55.6, xavier 72.7, fan_in 1335" in h.measured
  assert h.numbers["fig2_b128_fan_in_diag_max_over_min"] == 1335.0
  assert h.numbers["mlp_b1024_median_nr"] == 1.01
  assert "3 varied LeNet setups" in h.what


def test_no_figure2_no_figure2_text():
  h = section._headline(_cfg())
  assert "Figure 2" not in h.measured and "3 LeNet setups" in h.what
