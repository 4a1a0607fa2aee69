"""The sigma an init rule amounts to: the geometric mean of its per-kernel stds, by hand."""
import math

import numpy as np

from jscale.report import sigma_markers


def test_equivalent_sigma():
  sigma, per = sigma_markers.equivalent_sigma((2, 64, 64, 2), "he_normal")
  np.testing.assert_allclose(per, [1.0, math.sqrt(2 / 64), math.sqrt(2 / 64)])
  np.testing.assert_allclose(sigma, (1.0 * (2 / 64)) ** (1 / 3))


def test_rule_markers_are_each_rules_equivalent_sigma():
  shapes = [(2, 2, 1, 6), (2, 2, 6, 16), (64, 120), (120, 10)]
  markers = sigma_markers.rule_markers(shapes)
  assert list(markers) == [name for name, _ in sigma_markers.MARKER_RULES]
  for name, spec in sigma_markers.MARKER_RULES:
    assert markers[name] == sigma_markers.equivalent_sigma_of_shapes(shapes, spec)[0]
  # He on dense kernels: sqrt(2 / fan_in) each, so the marker is their geometric mean.
  he = sigma_markers.rule_markers([(64, 120), (120, 10)])["He"]
  np.testing.assert_allclose(he, math.sqrt(math.sqrt(2 / 64) * math.sqrt(2 / 120)))
