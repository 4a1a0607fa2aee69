"""`jscale.checks`: each check returns the value in its canonical type or refuses it with one message shape,
`<what> must be <allowed><context>, got <value>`; bools are never counts or numbers."""
import math

import numpy as np
import pytest

from jscale import checks


@pytest.mark.parametrize("check, good, bad", [
    (lambda v: checks.positive_int(v, "epochs"), [1, np.int64(7)], [0, -1, 1.0, True, "2", None]),
    (lambda v: checks.int_at_least(v, "k", 2), [2, 10], [1, 2.5, False]),
    (lambda v: checks.int_in_range(v, "seed", 0, 2**32), [0, 2**32 - 1], [-1, 2**32, 1.5, True]),
    (lambda v: checks.finite_real(v, "lr", minimum=0), [0, 0.0, 1e-3, np.float32(2)], [-1e-9, math.nan, math.inf,
                                                                                       True, "0.1", None]),
    (lambda v: checks.finite_real(v, "scale", minimum=0, strict=True), [1e-30], [0, 0.0, -1]),
    (lambda v: checks.in_range(v, "momentum", 0, 1, hi_open=True), [0, 0.9], [1, 1.0, -0.1, math.nan, True]),
    (lambda v: checks.boolean(v, "train_pass"), [True, False], [0, 1, "True", None]),
    (lambda v: checks.one_of(v, "optimizer", ("sgd", "adam")), ["sgd"], ["SGD", None, ["sgd"]]),
    (lambda v: checks.optional(checks.positive_int)(v, "batch_size"), [None, 3], [0, 2.0]),
])
def test_accepts_and_refuses(check, good, bad):
  for v in good:
    assert check(v) == v
  for v in bad:
    with pytest.raises(ValueError):
      check(v)


def test_message_names_parameter_allowed_context_and_value():
  with pytest.raises(ValueError, match=r"^lr must be a finite number >= 0 \(experiment 'x'\), got -1$"):
    checks.finite_real(-1, "lr", minimum=0, context=" (experiment 'x')")
  with pytest.raises(ValueError, match=r"^seed must be an int in \[0, 2\*\*32\), got 5000000000$"):
    checks.int_in_range(5_000_000_000, "seed", 0, 2**32, hi_text="2**32")
  with pytest.raises(ValueError, match=r"^momentum must be a number in \[0, 1\), got 1$"):
    checks.in_range(1, "momentum", 0, 1, hi_open=True)


def test_canonical_types():
  assert type(checks.positive_int(np.int32(3), "n")) is int
  assert type(checks.finite_real(np.float32(0.5), "x")) is float
