"""The README's Python code runs as written: every ```python block, in order, in one fresh interpreter."""
import os
import re
import subprocess
import sys

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")


def python_blocks(text: str) -> list[str]:
  return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


def test_readme_has_python_blocks_and_they_run(tmp_path):
  with open(README) as f:
    blocks = python_blocks(f.read())
  assert blocks, "the README has no python block: this test would check nothing"
  code = "\n\n".join(blocks)
  env = dict(os.environ, JAX_PLATFORMS="cpu", MPLBACKEND="Agg")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env,
                       timeout=300)
  assert out.returncode == 0, f"README python blocks failed:\n{out.stderr[-3000:]}"


def test_block_extraction_finds_a_failing_block():
  # The extractor must see a block's body, or a broken README would pass the test above.
  blocks = python_blocks("text\n```python\nraise SystemExit(3)\n```\nmore\n")
  assert blocks == ["raise SystemExit(3)\n"]
  assert subprocess.run([sys.executable, "-c", blocks[0]]).returncode == 3
