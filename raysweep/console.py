"""The terminal: rich consoles that stay wide when piped (CI logs, files), where rich would
otherwise fall back to 80 columns and fold every table."""

from __future__ import annotations

import sys

from rich.console import Console


def make_console(stderr: bool = False) -> Console:
    stream = sys.stderr if stderr else sys.stdout
    return Console(stderr=stderr, width=None if stream.isatty() else 160)
