"""README's `scripts/calculus.py` output ("Use the calculus before you train") is what the command prints today.

The README shows the command's full output as an example; a change to the calculus, the measurement or the
table's format that is not carried into the README fails here. Numbers are compared at 2e-3 relative (the
table prints 4 significant digits; one unit in the 4th digit is up to 1e-3, and float32 sums may round either
way on another CPU), everything else character for character."""
import contextlib
import io
import os
import re

from jscale.cli import calculus as calculus_cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMAND = "python scripts/calculus.py --widths 784,300,100,10 --init geometric"
NUMBER = re.compile(r"[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?")


def _readme_output():
  text = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
  after = text[text.index(f"`{COMMAND}`"):]
  return after[after.index("```\n") + 4:].split("```")[0]


def _split(text):
  return NUMBER.sub("#", text), [float(v) for v in NUMBER.findall(text)]


def _same(quoted, printed, rtol=2e-3):
  (shape_q, nums_q), (shape_p, nums_p) = _split(quoted), _split(printed)
  if shape_q != shape_p or len(nums_q) != len(nums_p):
    return False
  return all(abs(a - b) <= rtol * max(abs(a), abs(b)) + 1e-12 for a, b in zip(nums_q, nums_p))


def test_readme_shows_what_the_command_prints():
  out = io.StringIO()
  with contextlib.redirect_stdout(out):
    assert calculus_cli.main(COMMAND.split()[2:]) in (0, None)
  quoted = _readme_output()
  assert quoted.strip(), "README lost the example output: this test would check nothing"
  assert _same(quoted.strip(), out.getvalue().strip()), f"README's example differs from:\n{out.getvalue()}"


def test_comparison_sees_a_changed_number_and_a_changed_word():
  base = "nu pred 177.4 meas 185.7\ncheck: ok"
  assert _same(base, "nu pred 177.4 meas 185.75\ncheck: ok")
  assert not _same(base, "nu pred 177.4 meas 186.7\ncheck: ok")
  assert not _same(base, "nu pred 177.4 meas 185.7\ncheck: OUTSIDE")
