"""The figures: every plot writes a PNG, curves stay drawn while any seed is finite, shapes are checked first."""
import os
import tempfile

import matplotlib.figure
import numpy as np
from absl.testing import absltest, parameterized

from jscale.report import plots

PNG = b"\x89PNG\r\n\x1a\n"


def _is_png(path):
  with open(path, "rb") as f:
    return f.read(8) == PNG and os.path.getsize(path) > 1000


class PlotsTest(parameterized.TestCase):

  def setUp(self):
    super().setUp()
    self.dir = tempfile.mkdtemp()
    self.rng = np.random.default_rng(0)

  def test_every_plot_writes_a_png(self):
    d, rng = self.dir, self.rng
    paths = [
        plots.curves(os.path.join(d, "c.png"), {"a": rng.random((3, 5)), "b": rng.random(5)}, ylabel="loss",
                     title="t", logy=True),
        plots.metric_vs_param(os.path.join(d, "m.png"), [0.01, 0.1, 1.0], rng.random((3, 4)), xlabel="sigma",
                              ylabel="acc", title="t", markers={"He": 0.2}, reference={0.1: 0.9}),
        plots.heatmap_pair(os.path.join(d, "h.png"), [1, 16, 255], [1, 255], rng.random((2, 3)),
                           10.0 ** rng.normal(size=(2, 3)), xlabel="f", ylabel="w", measured_label="acc",
                           predicted_label="G", title="t"),
        plots.histogram_grid(os.path.join(d, "g.png"), np.linspace(-1, 1, 5), rng.integers(0, 9, (2, 3, 4)),
                             row_labels=["x", "y"], col_labels=["1", "2", "3"], xlabel="v", title="t",
                             extra=rng.random((2, 3)), extra_label="sat "),
        plots.std_vs_depth(os.path.join(d, "s.png"), {"He": [1.0, 1.1]}, {"He": [1.0, 1.0]}, title="t"),
        plots.scheme_bars(os.path.join(d, "b.png"), ["a", "b"], [0.8, 0.9], errors=[0.01, 0.02], ylabel="l",
                          title="t", reference={"a": 0.9}),
    ]
    for p in paths:
      self.assertTrue(_is_png(p), p)

  def test_curve_stays_drawn_with_the_seeds_left_and_says_n(self):
    fig = matplotlib.figure.Figure()
    ax = fig.subplots()
    one_diverges = np.array([[1.0, 2.0, 3.0, 4.0], [1.0, 2.0, np.nan, np.nan], [1.0, 2.0, 3.0, 4.0]])
    plots.draw_curves(ax, {"a": one_diverges, "b": np.zeros((3, 4)), "c": np.zeros((3, 4))}, epochs=None,
                       seed_axis=0)
    a, b, c = ax.get_lines()
    np.testing.assert_allclose(a.get_ydata(), [1.0, 2.0, 3.0, 4.0])   # mean over the finite seeds
    self.assertEqual([l.get_label() for l in (a, b, c)], ["a (n=2-3)", "b (n=3)", "c (n=3)"])
    # b and c lie on top of each other: each has its own line style and marker.
    self.assertEqual(len({(l.get_linestyle(), l.get_marker()) for l in (a, b, c)}), 3)

  def test_named_kernels_get_a_categorical_axis(self):
    seen = {}

    def keep(fig, path, tight=True):
      seen["ticks"] = [t.get_text() for t in fig.axes[0].get_xticklabels()]
      return path

    orig, plots._save = plots._save, keep
    try:
      plots.std_vs_depth(os.path.join(self.dir, "g.png"), {"geometric": [1.0, 2.0, 3.0]}, title="t",
                         categories=["conv0", "conv1", "dense0"])
    finally:
      plots._save = orig
    self.assertEqual(seen["ticks"], ["conv0", "conv1", "dense0"])

  def test_shape_errors(self):
    with self.assertRaisesRegex(ValueError, "5 points but 4 epochs"):
      plots.curves(os.path.join(self.dir, "x.png"), {"a": np.ones((2, 5))}, ylabel="y", title="t",
                   epochs=[1, 2, 3, 4])
    with self.assertRaisesRegex(ValueError, "shape"):
      plots.heatmap_pair(os.path.join(self.dir, "x.png"), [1, 2], [1, 2, 3], np.ones((2, 2)), np.ones((3, 2)),
                         xlabel="", ylabel="", measured_label="", predicted_label="", title="")
    with self.assertRaisesRegex(ValueError, "log"):
      plots.metric_vs_param(os.path.join(self.dir, "x.png"), [0.0, 1.0], np.ones((2, 2)), xlabel="",
                            ylabel="", title="")
    self.assertFalse(os.path.exists(os.path.join(self.dir, "x.png")))  # checked before drawing


if __name__ == "__main__":
  absltest.main()
