"""Every relative link in README.md and docs/*.md points at a file that exists and, where it names a section
(`#anchor`), at a heading that file has, with GitHub's rule for heading anchors (lower case, punctuation but `-`
and `_` dropped, spaces to `-`, a repeated heading numbered `-1`, `-2`, ...). The docs are long and cross-linked;
a renamed heading silently breaks a newcomer's way in, so the links are checked rather than trusted."""
import glob
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGES = ["README.md"] + sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "docs", "*.md")))
LINK = re.compile(r"\]\(([^)\s#]*)(?:#([^)\s]+))?\)")


def heading_anchors(text: str) -> set[str]:
  """GitHub's anchors for a Markdown page's headings (fenced code skipped: a `# comment` there is no heading)."""
  anchors, seen, fenced = set(), {}, False
  for line in text.splitlines():
    if line.startswith("```"):
      fenced = not fenced
    m = None if fenced else re.match(r"^#{1,6} (.*)", line)
    if m:
      slug = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-")
      n = seen.get(slug, 0)
      seen[slug] = n + 1
      anchors.add(slug if n == 0 else f"{slug}-{n}")
  return anchors


def test_heading_anchors_follow_githubs_rule():
  text = "# A `code` title: (x, y)\n```\n# not a heading\n```\n## Same\n## Same\n"
  assert heading_anchors(text) == {"a-code-title-x-y", "same", "same-1"}


@pytest.mark.parametrize("page", PAGES)
def test_relative_links_resolve(page):
  text = open(os.path.join(ROOT, page), encoding="utf-8").read()
  broken = []
  for target, anchor in LINK.findall(text):
    if re.match(r"[a-z]+:", target):   # http:, https:, mailto:
      continue
    path = os.path.normpath(os.path.join(ROOT, os.path.dirname(page), target)) if target else os.path.join(ROOT, page)
    if not os.path.exists(path):
      broken.append(f"{target} (no such file)")
    elif anchor and path.endswith(".md") and anchor not in heading_anchors(open(path, encoding="utf-8").read()):
      broken.append(f"{target}#{anchor} (no such heading)")
  assert not broken, f"{page}: " + "; ".join(broken)
