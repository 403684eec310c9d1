"""The `raysweep` command: launch, show, tasks, fit.

Bad input exits with status 2 and one message naming the file, the key path and what is
allowed, before Ray starts.
"""

from __future__ import annotations

import sys
from typing import Optional

import typer
from rich.table import Table

from raysweep.cli.data import check_data, data_app
from raysweep.cli.fit import fit_command
from raysweep.cli.predict import predict_command
from raysweep.console import make_console
from raysweep.spec import SpaceError, check_resources, load_space, local_resources

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Ray-distributed hyperparameter and scaling sweeps.")
console = make_console()
err = make_console(stderr=True)


def fail(message: str) -> None:
    err.print(f"[red]error:[/] {message}", highlight=False, markup=True, soft_wrap=True)
    raise typer.Exit(2)


@app.command()
def launch(
    space: str = typer.Option(..., "--space", help="A name in search_spaces/ or a YAML path."),
    address: Optional[str] = typer.Option(None, help="'auto' joins a running cluster; "
                                          "none starts a local Ray."),
    storage: str = typer.Option("runs", help="Where sweeps, stages and Ray runs go: a directory, "
                                "or a URI (s3://, gs://, file://) for results and Ray's state."),
    stages: Optional[str] = typer.Option(None, help="The stage store, a POSIX directory every "
                                         "node shares (default: STORAGE/stages); needed when "
                                         "--storage is s3:// or gs://."),
    name: Optional[str] = typer.Option(None, help="Sweep name (default: the space's name)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan and exit."),
    verbose: bool = typer.Option(False, help="Forward Ray worker logs to this terminal."),
) -> None:
    """Run a sweep: one Tuner per model size, each trial a Ray Train FSDP2 job."""
    from raysweep.run.store import StageRootError, stage_root

    try:
        stage_root(storage, stages)  # leases need a shared POSIX directory: refuse s3:// here
    except StageRootError as e:
        fail(str(e))
    try:
        spec, file = load_space(space)
        if not dry_run:  # every dataset the trials read is there, before Ray starts
            check_data(spec, file, space)
        if not dry_run and address is None:  # a local Ray: check against this machine now
            check_resources(spec, file, *local_resources(spec))
    except SpaceError as e:
        fail(str(e))
    if dry_run:
        from raysweep.plan.describe import print_plan

        print_plan(spec, console)
        return
    from raysweep.run.sweep import launch as run

    try:
        result = run(spec, file, storage, name=name, address=address, verbose=verbose,
                     console=console, stages=stages)
    except SpaceError as e:  # e.g. more workers than the cluster really has
        fail(str(e))
    console.print(f"results: {result.sweep_dir}  (raysweep show {result.sweep_dir})")
    show(result.sweep_dir)
    if result.errors:
        err.print(f"[red]{result.errors} trial(s) failed[/]; see the trials table's error column")
        raise typer.Exit(1)


@app.command()
def show(sweep_dir: str = typer.Argument(..., help="A sweep directory, or its URI.")) -> None:
    """Best result per model size, and per target task and language."""
    from raysweep.results.show import best_tables
    from raysweep.results.tables import location

    if not (location(sweep_dir) / "trials").is_dir():
        fail(f"{sweep_dir}: not a sweep directory (no trials/ table); run `raysweep launch` first")
    for table in best_tables(sweep_dir):
        console.print(table)


@app.command()
def tasks() -> None:
    """Every registered task: category, role, languages, metric, source."""
    from raysweep.tasks import all_tasks

    table = Table(title="registered tasks")
    for col in ("task", "category", "role", "head", "metric", "languages", "source"):
        table.add_column(col)
    for t in all_tasks().values():
        langs = ",".join(t.languages) if len(t.languages) <= 6 else \
            f"{len(t.languages)}: {','.join(t.languages[:5])},..."
        table.add_row(t.name, t.category, ",".join(sorted(t.roles)), t.head, t.metric, langs,
                      t.source)
    console.print(table)


app.command("fit")(fit_command)
app.command("predict")(predict_command)
app.add_typer(data_app, name="data")


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
