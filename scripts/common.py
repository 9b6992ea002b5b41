"""What the scripts share: markdown tables and the one-line-error entry point.

Scripts run as ``python scripts/NAME.py``, so this folder is on ``sys.path`` and they import this
module as ``common``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from imagegen.errors import ImagegenError


def markdown_table(headers: list[str], rows: list[list[str]]) -> str:
    """A markdown table of string cells."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def exit_code(work: Callable[[], object]) -> int:
    """Run ``work()``: 0 on success, 2 (with one ``error:`` line on stderr) for bad input."""
    try:
        work()
    except ImagegenError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
