"""The paper's Section 9 summary, by hand: each data set's losses divided by its worst scheme's, averaged."""
import numpy as np

from jscale.experiments.init_schemes import section as init_schemes_section


def test_init_scheme_summary_by_hand():
  loss = np.array([[1.0, 2.0, 4.0], [3.0, 3.0, 1.5], [2.0, 1.0, 2.0]])
  s = init_schemes_section.init_scheme_summary(loss, ["a", "b", "c"])
  # Row-wise divided by the row max (4, 3, 2), then averaged over rows.
  np.testing.assert_allclose(s.avg, [(0.25 + 1 + 1) / 3, (0.5 + 1 + 0.5) / 3, (1 + 0.5 + 1) / 3])
  np.testing.assert_array_equal(s.worst_count, [2, 1, 2])  # ties count for every tied scheme
  np.testing.assert_array_equal(s.best_count, [1, 1, 1])
