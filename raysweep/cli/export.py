"""`raysweep export <stage dir> --hf OUT`: a stage output as a `from_pretrained` directory.

Registered by the main app as `app.command("export")(export_command)`. OUT gets config.json and
model.safetensors (a `transformers.LlamaModel`: `LlamaModel.from_pretrained(OUT)` or
`AutoModel.from_pretrained(OUT)`), and the stage's task heads in heads.safetensors beside them
(from_pretrained ignores that file). A LoRA stage is exported merged: its base with the adapters
added in (W + alpha/r * B A, peft's `merge_and_unload`), a plain model that gives the adapted
model's outputs; its heads are exported as trained.

It runs in one process and holds the whole backbone (what an HF directory is), unlike training,
which never does. A stage output whose shards do not match its meta.json exits 2.
"""

from __future__ import annotations

from pathlib import Path

import typer

STAGE_DIR = typer.Argument(..., help="A stage output: <stages>/<kind>-<key> (meta.json + dcp/ "
                                     "or the older backbone/).", show_default=False)
HF_OUT = typer.Option(..., "--hf", help="The directory to write (config.json, "
                                       "model.safetensors, heads.safetensors).")


def export_command(stage_dir: Path = STAGE_DIR, hf: Path = HF_OUT) -> None:
    """Write a stage output as a from_pretrained directory (LoRA stages merged)."""
    from safetensors.torch import load_file

    from raysweep.model.checkpoint import (
        StageCheckpointError,
        is_sharded,
        is_stage_output,
        read_full,
        read_meta,
        save_hf,
    )
    from raysweep.model.load import build_task_model

    if not is_stage_output(stage_dir):
        typer.echo(f"error: {stage_dir}: not a stage output (a directory with meta.json and "
                   "dcp/ or backbone/, under the sweep's stage store)", err=True)
        raise typer.Exit(2)
    try:
        model = build_task_model(stage_dir, [], seed=0, mesh=None)
        if is_sharded(stage_dir):
            heads = read_full(stage_dir, [k for k in read_meta(stage_dir)["tensors"]
                                          if k.startswith("heads.")])
        else:
            old = stage_dir / "heads.safetensors"
            heads = load_file(old) if old.is_file() else {}
    except StageCheckpointError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2)
    save_hf(hf, model.backbone.state_dict(), heads, model.config)
    typer.echo(f"wrote {hf} (LlamaModel.from_pretrained; heads in heads.safetensors)")
