"""The `raysweep` command: launch, show, tasks, fit.

Bad input exits with status 2 and one message naming the file, the key path and what is
allowed, before Ray starts.
"""

from __future__ import annotations

import json
import sys
from typing import Optional

import typer
from rich.markup import escape
from rich.table import Table

from raysweep.cli.data import check_data, data_app
from raysweep.cli.export import export_command
from raysweep.cli.fit import fit_command
from raysweep.cli.plan import plan_command
from raysweep.cli.predict import predict_command
from raysweep.cli.resume import check_storage, failure_summary, resume_command
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
    json_out: bool = typer.Option(False, "--json", help="With --dry-run: the plan's cost "
                                  "(as `raysweep plan --json`) as one JSON object."),
    verbose: bool = typer.Option(False, help="Forward Ray worker logs to this terminal."),
    tracker: Optional[list[str]] = typer.Option(
        None, "--tracker", help="Also log every trial to mlflow, wandb or tensorboard "
        "(repeatable); see raysweep/run/trackers.py for where each goes."),
) -> None:
    """Run a sweep: one Tuner per model size, each trial a Ray Train FSDP2 job."""
    from raysweep.results.tables import is_uri
    from raysweep.run.store import StageRootError, stage_root
    from raysweep.run.trackers import TrackerError, check_trackers

    try:
        stage_root(storage, stages)  # leases need a shared POSIX directory: refuse s3:// here
        trackers = check_trackers(tracker or [], local=not is_uri(storage)
                                  or storage.startswith("file:"))
    except (StageRootError, TrackerError) as e:
        fail(escape(str(e)))  # plain text: "raysweep[mlflow]" is not rich markup
    try:
        spec, file = load_space(space)
        if not dry_run:  # every dataset the trials read is there, before Ray starts
            check_data(spec, file, space)
            check_storage(storage, stages)  # writable, before Ray starts
        if not dry_run and address is None:  # a local Ray: check against this machine now
            check_resources(spec, file, *local_resources(spec))
        from raysweep.plan.cost import check_fits, plan_cost

        cost = plan_cost(spec)
        check_fits(spec, file, cost)  # a stage that cannot fit its GPUs: refused before Ray
        if not dry_run:
            check_stored_outputs(cost, storage, stages, file)
    except SpaceError as e:
        fail(escape(str(e)))  # plain text: "{lora: ...}" in the remedy is not rich markup
    if dry_run and json_out:  # plain stdout: nothing a tool parses goes through rich
        print(json.dumps(cost.to_dict(), default=str))
        return
    if dry_run:
        from raysweep.plan.describe import print_memory, print_plan, print_totals

        print_plan(spec, console)
        print_memory(cost, console)
        print_totals(cost, console)
        return
    from raysweep.run.sweep import launch as run

    try:
        result = run(spec, file, storage, name=name, address=address, verbose=verbose,
                     console=console, stages=stages, trackers=trackers)
    except SpaceError as e:  # e.g. more workers than the cluster really has
        fail(str(e))
    console.print(f"results: {result.sweep_dir}  (raysweep show {result.sweep_dir})")
    show(result.sweep_dir, json_out=False)
    if result.errors:
        err.print(escape(failure_summary(result.sweep_dir, result.errors)))
        raise typer.Exit(1)


def check_stored_outputs(cost, storage: str, stages: str | None, file) -> None:
    """Every finished stage output the plan would load must match its own metadata (shards
    against meta.json): a damaged one is found now, not by a trial hours in. Raises
    SpaceError naming the stage directory."""
    from raysweep.run.store import StageStore, stage_root

    store = StageStore(stage_root(storage, stages))
    done = [store.path(c.kind, c.key) for c in cost.stages
            if c.stored and store.is_done(c.kind, c.key)]
    if not done:
        return
    from raysweep.model.checkpoint import StageCheckpointError, check_stage, is_sharded

    for path in done:
        try:
            if is_sharded(path):
                check_stage(path)
        except StageCheckpointError as e:
            raise SpaceError(file, "stages", f"{e}; allowed: a stage output whose shards match "
                             "its meta.json (delete the directory to compute it again)") from None


@app.command()
def show(sweep_dir: str = typer.Argument(..., help="A sweep directory, or its URI."),
         json_out: bool = typer.Option(False, "--json", help="Print the study's answer as "
                                       "JSON (for tools) instead of the tables.")) -> None:
    """Best result per model size, per target task and language; then the study's answer: the
    gain from each intermediate mixture per size with its interval, the languages that gain and
    lose most, and whether the gain grows or shrinks with size."""
    from raysweep.analysis.answer import answer_renderables, study_answer
    from raysweep.results.show import best_tables
    from raysweep.results.tables import location

    if not (location(sweep_dir) / "trials").is_dir():
        fail(f"{sweep_dir}: not a sweep directory (no trials/ table); run `raysweep launch` first")
    answer = study_answer(sweep_dir)
    if json_out:  # plain stdout: no rich wrapping or markup in what a tool parses
        print(answer.to_json())
        return
    for table in best_tables(sweep_dir):
        console.print(table)
    for renderable in answer_renderables(answer):
        console.print(renderable)


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
app.command("export")(export_command)
app.command("plan")(plan_command)
app.command("predict")(predict_command)
app.command("resume")(resume_command)
app.add_typer(data_app, name="data")


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
