"""Issue 20's varied LeNet family: what `sample_varied` draws, and that every setup it can draw is computed in
one of four slot shapes (`varied_slot_shapes`), so the exact side compiles a constant number of programs."""
import collections

import chex
import numpy as np

from jscale.experiments.hessian import lenet_family as lf
from jscale.initializers import SCHEMES
from jscale.theory import inputs, lenet_slots, losses


class VariedFamilyTest(chex.TestCase):

  def test_setups_span_the_family_and_fit_the_slot_shapes(self):
    fam = lf.LeNetFamily(varied=True)
    self.assertEqual((fam.channels, fam.hidden), (lf.VARIED_CHANNELS, lf.VARIED_HIDDEN))
    setups = [s for seed in range(4) for s in fam.sample_setups(500, seed)]
    shapes = lf.varied_slot_shapes()
    self.assertEqual(len(shapes), 4)  # (one conv, 2-3 convs) x (VARIED_NORMALS kernel entries, every one)
    self.assertEqual([s.normals for s in shapes], [lf.VARIED_NORMALS] * 2 + [None] * 2)
    seen = collections.defaultdict(set)
    budgeted = 0
    for s in setups:
      cfg = s.config()  # checks that every kernel divides its grid
      self.assertTrue(all(kh == kw for kh, kw in s.kernels))
      for key, value in (("convs", len(s.channels)), ("hidden layers", len(s.hidden)), ("scheme", s.scheme),
                         ("loss", s.loss), ("input", s.input_kind)):
        seen[key].add(value)
      seen["kernel"].update(k for k, _ in s.kernels)
      self.assertTrue(all(4 <= c <= 32 for c in s.channels) and all(16 <= h <= 128 for h in s.hidden), s)
      grid = s.image[0] // s.kernels[0][0]
      self.assertTrue(2 <= grid <= 4, s)  # the first conv's grid: at most 16 positions
      self.assertTrue(any(lenet_slots.fits(x, cfg) for x in shapes[2:]), s)
      got = fam.slot_shapes(s)
      budgeted += got.normals is not None
      self.assertEqual(got, next(x for x in shapes if lenet_slots.fits(x, cfg)))
    self.assertEqual(dict(seen), {"convs": {1, 2, 3}, "hidden layers": {0, 1, 2}, "scheme": set(SCHEMES),
                                  "loss": set(losses.KINDS), "input": set(inputs.KINDS), "kernel": {2, 3, 4}})
    self.assertGreater(budgeted / len(setups), 0.9)  # most setups draw VARIED_NORMALS normals, not every padded entry
    self.assertIsNone(lf.LeNetFamily().slot_shapes(lf.LeNetFamily().sample_setups(1, 0)[0]))

  def test_ranges_follow_the_family_and_the_first_setups_stay_put(self):
    self.assertEqual((lf.LeNetFamily().channels, lf.LeNetFamily().hidden), ((4, 16), (16, 128)))
    narrow = lf.LeNetFamily((2, 4), (4, 8), varied=True)
    for s in narrow.sample_setups(50, 0):
      self.assertTrue(all(2 <= c <= 4 for c in s.channels) and all(4 <= h <= 8 for h in s.hidden), s)
    self.assertEqual(narrow.resume_fields(), {"channels": (2, 4), "hidden": (4, 8), "varied": True})
    # seed 0's first setup as `scripts/hessian_check.py --family lenet` has drawn it since the sampler was added
    self.assertEqual(lf.LeNetFamily(varied=True).sample_setups(1, 0)[0][:3], ((29,), (), "fan_in"))
    with self.assertRaisesRegex(ValueError, "channels high"):
      lf.LeNetFamily((8, 4), varied=True)
    slots = lf.varied_slot_shapes(4, 8)
    self.assertEqual(len(slots), 2)  # narrow nets: every padded entry is fewer than VARIED_NORMALS
    self.assertTrue(all(x.weight_normals <= lf.VARIED_NORMALS for x in slots))
    self.assertTrue(np.all([any(lenet_slots.fits(x, s.config()) for x in slots) for s in narrow.sample_setups(200, 1)]))
