"""The calculus's layer-1 G over the question's grid, against its closed form."""
import numpy as np

from jscale.experiments.feature_weight import section as feature_weight_section


def test_feature_weight_G1_closed_form():
  widths, x0 = (784, 300, 100, 10), 7000.0
  g = feature_weight_section.feature_weight_G1(widths, [1.0, 255.0], [1.0, 255.0], x0)
  w = [2.0 / (a + b) for a, b in zip(widths[:-1], widths[1:])]  # Glorot E[W^2]
  # Backward from a unit logit gradient: dy_0 = (1/2) n_2 W_1 (1/2) n_3 W_2; G_1 = E[x_0^2] dy_0 / E[W_0^2].
  dy0 = 0.5 * 100 * w[1] * 0.5 * 10 * w[2]
  for i, ws in enumerate([1.0, 255.0]):
    for j, fs in enumerate([1.0, 255.0]):
      np.testing.assert_allclose(g[i, j], (x0 / fs ** 2) * dy0 / (w[0] / ws ** 2), rtol=1e-5)
  # The question's two configurations (x/255, W) and (x, W/255): G_1 differs by 255^4.
  np.testing.assert_allclose(g[1, 0] / g[0, 1], 255.0 ** 4, rtol=1e-5)
