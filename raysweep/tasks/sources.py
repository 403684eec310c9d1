"""Shared plumbing for the real task loaders: where local data lives, the one door to the HF hub,
and errors that name the task, split and field.

Layout under `DataContext.data_dir` (one directory per task, named like the task unless a family
shares one, e.g. `xnli_translate_train` reads `xnli/`):

- HF-schema tasks: `<data_dir>/<dir>/<config>/` is a `datasets.DatasetDict` written by
  `save_to_disk`, with the hub dataset's own split names and features (config "default" for
  datasets without configs).
- File-format tasks (SQuAD-style JSON, CoNLL-U, Tatoeba/BUCC text, Mewsli-X JSONL, ...): the
  files as the original distribution ships them, under `<data_dir>/<dir>/`; each module documents
  its paths.

Nothing downloads unless `ctx.allow_download` is set; then only `datasets.load_dataset(hub_id,
config, split=...)` is called.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Sequence

from raysweep.tasks.base import DataContext, Task, TaskDataError


def where(task: Task | str, split: str, language: str | None = None) -> str:
    name = task.name if isinstance(task, Task) else task
    lang = f", language {language!r}" if language is not None else ""
    return f"task {name!r}, split {split!r}{lang}"


def local_dir(ctx: DataContext, dirname: str) -> Path | None:
    return None if ctx.data_dir is None else Path(ctx.data_dir) / dirname


def missing_data(task: Task | str, split: str, language: str, expected: str,
                 hub: str | None = None) -> TaskDataError:
    msg = f"{where(task, split, language)}: dataset not found: expected {expected}"
    if hub:
        msg += f" (or set DataContext.allow_download to load {hub} from the HF hub)"
    else:
        msg += " (no HF hub source in this schema: place the original files there)"
    return TaskDataError(msg)


def field(record: Any, name: str, task: Task | str, split: str, what: str) -> Any:
    """`record[name]`, or a TaskDataError naming the task, split, record and field."""
    try:
        return record[name]
    except (KeyError, TypeError, IndexError):
        raise TaskDataError(f"{where(task, split)}: {what} lacks field {name!r}") from None


def require_file(path: Path | None, task: Task | str, split: str, language: str,
                 hub: str | None = None) -> Path:
    if path is None or not path.exists():
        raise missing_data(task, split, language, f"the file {path}" if path else
                           "DataContext.data_dir to be set", hub)
    return path


def read_json(path: Path, task: Task | str, split: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise TaskDataError(f"{where(task, split)}: {path} is not valid JSON: {err}") from None


def read_jsonl(path: Path, task: Task | str, split: str) -> list[Any]:
    out = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if line.strip():
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise TaskDataError(f"{where(task, split)}: {path} line {n} is not JSON: "
                                        f"{err}") from None
    return out


def hf_rows(task: Task, split: str, language: str, ctx: DataContext, *, dirname: str,
            config: str | None, hf_split: str, hub_id: str, fields: Sequence[str],
            hub_config: str | None = None) -> list[dict[str, Any]]:
    """The rows (dicts, only `fields`) of one split of an HF-schema dataset: from
    `<data_dir>/<dirname>/<config or 'default'>/` (save_to_disk), else from the hub when
    `ctx.allow_download`, else a TaskDataError."""
    import datasets

    local = local_dir(ctx, dirname)
    local = None if local is None else local / (config or "default")
    hub = f"{hub_id!r} (config {hub_config or config!r}, split {hf_split!r})"
    if local is not None and local.exists():
        try:
            data = datasets.load_from_disk(str(local))
        except (FileNotFoundError, ValueError) as err:
            raise TaskDataError(f"{where(task, split, language)}: {local} is not a dataset "
                                f"saved with save_to_disk: {err}") from None
        if isinstance(data, datasets.DatasetDict):
            if hf_split not in data:
                raise missing_data(task, split, language,
                                   f"split {hf_split!r} in {local} (it has {sorted(data)})", hub)
            data = data[hf_split]
    elif ctx.allow_download:
        data = datasets.load_dataset(hub_id, hub_config or config, split=hf_split)
    else:
        raise missing_data(task, split, language,
                           f"a DatasetDict saved with save_to_disk at {local} "
                           f"with split {hf_split!r}" if local else "DataContext.data_dir", hub)
    for name in fields:
        if name not in data.column_names:
            raise TaskDataError(f"{where(task, split, language)}: the dataset "
                                f"({local or hub_id}) lacks field {name!r}; "
                                f"it has {data.column_names}")
    columns = {name: data[name] for name in fields}
    columns = {k: list(v) for k, v in columns.items()}
    return [dict(zip(columns, values)) for values in zip(*columns.values())] if columns else []


def check_split(task: Task, split: str, mapping: Mapping[str, Any]) -> Any:
    try:
        return mapping[split]
    except KeyError:
        raise TaskDataError(f"{where(task, split)}: no such split; "
                            f"allowed: {', '.join(mapping)}") from None
