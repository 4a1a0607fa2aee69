"""How jscale's scripts end: a refused input is one line `error: ...` on stderr and exit status 2.

jscale validates every input before any compute and raises ValueError (TypeError for a wrong type) with
a message naming the parameter, the value and what is allowed; a script's user should see that message,
not a Python traceback. `JSCALE_TRACEBACK=1` shows the traceback too (for debugging jscale itself).
"""
from __future__ import annotations

import os
import sys
from typing import Callable

USAGE_ERROR = 2


def run(main: Callable[[], int | None]) -> None:
  """`sys.exit(main())`, turning jscale's validation errors into `error: ...` and exit status 2."""
  try:
    code = main()
  except (ValueError, TypeError, FileNotFoundError) as e:
    if os.environ.get("JSCALE_TRACEBACK"):
      raise
    print(f"error: {e}", file=sys.stderr)
    sys.exit(USAGE_ERROR)
  sys.exit(code or 0)
