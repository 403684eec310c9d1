"""`raysweep resume <sweep dir>`: finish what a sweep left when its driver died.

Everything it needs is in the sweep directory: the space (`space.json`, recorded by launch) and
where the stage store is (`launch.json`). It launches that space again on the same storage and
name, which restores each size's Tuner (`Tuner.restore(resume_errored=True)`): finished trials
are not rerun, interrupted and errored ones run again (their rows replace the earlier attempt's,
`raysweep.results.tables`), and the stage leases of dead holders are taken over
(`raysweep.run.store`). A directory that is missing, or not a raysweep sweep, exits 2 before
Ray starts, and nothing in it is written.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Optional

import typer
from pydantic import ValidationError

from raysweep.spec import SpaceError, SweepSpec, check, check_resources, local_resources


def check_storage(storage: str, stages: str | None) -> None:
    """Refuse, before Ray starts, a local --storage or --stages that cannot be written (a path
    under a file, a read-only mount, no permission). It writes a nameless temporary file in the
    nearest directory that exists (root passes every permission check, so only a real write
    tells), and creates nothing: a refused launch leaves no trace. URIs are left to their
    store."""
    from raysweep.results.tables import is_uri
    from raysweep.run.store import stage_root

    for flag, where in (("--storage", storage), ("--stages", stage_root(storage, stages))):
        if is_uri(os.fspath(where)):
            continue
        existing = Path(where).absolute()
        while not existing.exists():
            existing = existing.parent
        try:
            if not existing.is_dir():
                raise NotADirectoryError(20, f"{existing} is a file")
            with tempfile.TemporaryFile(dir=existing) as f:
                f.write(b"x")
        except OSError as e:
            raise SpaceError(flag, os.fspath(where), f"not writable ({e.strerror or e}); "
                             "allowed: a directory this user can create and write") from None


def sweep_space(sweep_dir: str) -> tuple[SweepSpec, Path, str | None]:
    """The space a sweep directory was launched with, its file, and its stage store (None:
    the default under the storage). SpaceError where the directory is missing or foreign."""
    from raysweep.results.best import SPACE_FILE
    from raysweep.run.sweep import LAUNCH_FILE

    root = Path(sweep_dir)
    file = root / SPACE_FILE
    if not root.is_dir():
        raise SpaceError(root, "<dir>", "no such sweep directory; allowed: a directory that "
                         "`raysweep launch` wrote (STORAGE/NAME)")
    if not file.is_file():
        raise SpaceError(file, "<file>", "not a raysweep sweep directory (it has no space.json); "
                         "allowed: a directory that `raysweep launch` wrote")
    try:
        spec = SweepSpec.model_validate(json.loads(file.read_text()))
    except (ValueError, ValidationError) as e:
        raise SpaceError(file, "<file>", f"not a raysweep space ({str(e).splitlines()[0]}); "
                         "allowed: the space.json that `raysweep launch` wrote") from None
    check(spec, file)  # the task registry may have changed since
    launched = root / LAUNCH_FILE
    stages = json.loads(launched.read_text()).get("stages") if launched.is_file() else None
    return spec, file, stages


def failure_summary(sweep_dir, errors: int) -> str:
    """One line: how many trials failed, and why (the trials table's failure column)."""
    from collections import Counter

    from raysweep.results.tables import load

    reasons = Counter(r["failure"] or "error" for r in load(sweep_dir, "trials").to_pylist()
                      if r["status"] == "error")
    why = ", ".join(f"{k}: {n}" for k, n in sorted(reasons.items()))
    return f"{errors} trial(s) failed ({why or 'see the trials table'}); their reasons, stages " \
           "and steps are in the trials table (failure, failed_stage, failed_step, error)"


def resume_command(
    sweep_dir: str = typer.Argument(..., help="The sweep directory (STORAGE/NAME) to finish."),
    address: Optional[str] = typer.Option(None, help="'auto' joins a running cluster; "
                                          "none starts a local Ray."),
    verbose: bool = typer.Option(False, help="Forward Ray worker logs to this terminal."),
) -> None:
    """Finish a sweep whose driver died: finished trials stay, the rest run."""
    from rich.markup import escape

    from raysweep.console import make_console

    console, err = make_console(), make_console(stderr=True)

    def fail(message: str) -> None:  # as `raysweep launch` fails: one line, exit 2
        err.print(f"[red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
        raise typer.Exit(2)

    root = Path(sweep_dir).resolve()
    try:
        spec, file, stages = sweep_space(str(root))
        check_storage(str(root.parent), stages)
        if address is None:
            check_resources(spec, file, *local_resources(spec))
    except SpaceError as e:
        fail(str(e))
    from raysweep.run.sweep import launch

    console.print(f"resuming {root}")
    try:
        result = launch(spec, file, root.parent, name=root.name, address=address,
                        verbose=verbose, console=console, stages=stages)
    except SpaceError as e:
        fail(str(e))
    console.print(f"results: {result.sweep_dir}  (raysweep show {result.sweep_dir})")
    if result.errors:
        err.print(escape(failure_summary(result.sweep_dir, result.errors)))
        raise typer.Exit(1)
