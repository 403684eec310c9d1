"""`raysweep plan --space X [--json]`: what a space will cost, before launch, without data or
weights (`raysweep.plan.cost`): the stage DAG after sharing, per stage tokens, FLOPs,
device-hours and memory per rank, and the totals with and without sharing."""

from __future__ import annotations

import json

import typer

from raysweep.console import make_console


def plan_command(
    space: str = typer.Option(..., "--space", help="A name in search_spaces/ or a YAML path."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object, for tools."),
) -> None:
    """The stage DAG after sharing, with tokens, FLOPs, device-hours and memory per stage."""
    from raysweep.plan.cost import plan_cost
    from raysweep.plan.describe import dag_table, print_totals
    from raysweep.spec import SpaceError, load_space

    try:
        spec, _ = load_space(space)
    except SpaceError as e:
        make_console(stderr=True).print(f"[red]error:[/] {e}", highlight=False, soft_wrap=True)
        raise typer.Exit(2)
    cost = plan_cost(spec)
    if as_json:
        print(json.dumps(cost.to_dict(), default=str))
        return
    console = make_console()
    for model in cost.trials:
        console.print(dag_table(cost, model))
    print_totals(cost, console)
