"""The `raysweep` command: one module per command group, no logic of its own."""

from raysweep.cli.app import app, main

__all__ = ["app", "main"]
