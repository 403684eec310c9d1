"""`raysweep data check` and `raysweep data prepare`: the datasets a space's trials read, checked
in seconds (present, and their first rows parse) or fetched into the loaders' layout; and
`check_data`, the same check `raysweep launch` runs before Ray starts.

Bad input (an unknown space, no data directory) and missing data exit with status 2.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import NoReturn, Optional

import typer

from raysweep.console import make_console
from raysweep.spec import NO_MIXTURE, SpaceError, SweepSpec, load_space
from raysweep.tasks.files import Problem, Read, check_reads, plan_reads, with_files

data_app = typer.Typer(add_completion=False, no_args_is_help=True,
                       help="The datasets a space reads: fetch them (prepare), check them (check).")
console = make_console()
err = make_console(stderr=True)

SPACE = typer.Option(..., "--space", help="A name in search_spaces/ or a YAML path.")


def space_reads(spec: SweepSpec) -> list[Read]:
    """Every (task, split, language) a trial of the space may read: each mixture the search may
    pick (none unless `mixture` is searched), every target task and evaluated language, and the
    pretraining corpus where a from-scratch model needs it."""
    # (imported here: raysweep.plan.build pulls in the tokenizer stack, seconds at startup)
    from raysweep.plan.build import eval_languages

    searched = spec.search.params.get("mixture")
    mixtures = searched.values if searched and searched.values else [NO_MIXTURE]
    intermediate = [t for m in mixtures if m in spec.mixtures for t in spec.mixtures[m].tasks]
    pretrain = spec.stages.pretrain
    corpus = pretrain.corpus if pretrain and any(m.tiny for m in spec.models) else None
    return plan_reads(spec.stages.target.tasks, eval_languages(spec), intermediate, corpus)


def data_problem(spec: SweepSpec, space: str, data_dir: Path | str | None) -> str | None:
    """None when everything the space reads is under `data_dir` and parses; else the message
    (what is missing, where the loaders look, and the command that fetches it)."""
    reads = with_files(space_reads(spec))
    if not reads:
        return None
    fetch = f"raysweep data prepare --space {space} --to {data_dir or 'DIR'}"
    if data_dir is None:
        tasks = sorted({r.task for r in reads})
        return (f"not set, but the sweep reads the files of {', '.join(tasks)}; allowed: a "
                f"directory holding them (fetch them with: {fetch}, then set data_dir)")
    if not Path(data_dir).is_dir():
        return f"{data_dir} is not a directory; fetch the datasets there with: {fetch}"
    problems = check_reads(reads, data_dir)
    return None if not problems else _message(problems, len(reads), data_dir, fetch)


def _message(problems: list[Problem], n: int, data_dir: Path | str, fetch: str) -> str:
    head = (f"{len(problems)} of the {n} (task, split, language) the sweep reads are missing "
            f"or do not parse under {data_dir}:")
    lines = [head]
    lines += [f"  {p.line()}" for p in problems]
    lines.append(f"fetch them with: {fetch}")
    return "\n".join(lines)


def check_data(spec: SweepSpec, file: Path, space: str) -> None:
    """`launch`'s check, before Ray starts: a SpaceError (exit 2) naming what is missing."""
    problem = data_problem(spec, space, spec.data_dir)
    if problem:
        raise SpaceError(file, "data_dir", problem)


def _load(space: str) -> tuple[SweepSpec, Path]:
    try:
        return load_space(space)
    except SpaceError as e:
        _fail(str(e))


def _fail(message: str) -> NoReturn:
    err.print(f"[red]error:[/] {message}", highlight=False, markup=True, soft_wrap=True)
    raise typer.Exit(2)


@data_app.command("check")
def check_command(
    space: str = SPACE,
    data_dir: Optional[Path] = typer.Option(None, "--data-dir",
                                            help="Where the datasets are (default: the "
                                                 "space's data_dir)."),
) -> None:
    """Check that every (task, split, language) the space reads is there and parses."""
    start = time.perf_counter()
    spec, file = _load(space)
    where = data_dir if data_dir is not None else spec.data_dir
    problem = data_problem(spec, space, where)
    if problem:
        _fail(str(SpaceError(file, "--data-dir" if data_dir is not None else "data_dir",
                             problem)))
    n = len(with_files(space_reads(spec)))
    console.print(f"ok: the {n} (task, split, language) {spec.name} reads are present and parse"
                  f"{f' under {where}' if n else ''} ({time.perf_counter() - start:.1f} s)",
                  highlight=False)


@data_app.command("prepare")
def prepare_command(
    space: str = SPACE,
    to: Path = typer.Option(..., "--to", help="The data directory to fill (the space's "
                                              "data_dir on the cluster)."),
    mirror: Optional[Path] = typer.Option(None, "--mirror",
                                          help="Copy from this directory (same layout) instead "
                                               "of the network."),
) -> None:
    """Fetch every dataset the space reads into the loaders' layout, with MANIFEST.json."""
    from raysweep.tasks.prepare import MANIFEST, prepare

    spec, _ = _load(space)
    if mirror is not None and not mirror.is_dir():
        _fail(f"--mirror: {mirror} is not a directory; allowed: a directory in the loaders' "
              "layout (see raysweep/tasks/sources.py)")
    result = prepare(with_files(space_reads(spec)), to, mirror,
                     log=lambda message: console.print(message, highlight=False))
    console.print(f"{len(result.fetched)} fetched, {result.kept} (task, split, language) "
                  f"already there; checksums in {to / MANIFEST}", highlight=False)
    if result.unavailable:
        lines = [f"  {r.task} / {r.split} / {r.language}: {why}"
                 for r, why in result.unavailable]
        _fail(f"{len(result.unavailable)} (task, split, language) could not be fetched:\n"
              + "\n".join(lines))
    problem = data_problem(spec, space, to)
    if problem:
        _fail(problem)
