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

Where a (task, split, language) lives is said once, by the family module's path functions, which
return `HFData` / `FileData` records: the loader reads through them, and the module's `FILES`
table (task -> `Layout`) hands the same records to `raysweep data check` / `prepare`
(`raysweep.tasks.files`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Union

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


@dataclass(frozen=True)
class HFData:
    """One split of an HF-schema dataset: `<data_dir>/<dirname>/<config or 'default'>/`, a
    DatasetDict written by `save_to_disk`, or the hub's `hub_id` (config, split) with
    `allow_download`. `fields`: the columns the loader reads."""

    dirname: str
    config: str | None
    split: str  # the hub's split name
    hub_id: str
    fields: tuple[str, ...]

    @property
    def rel(self) -> str:
        return f"{self.dirname}/{self.config or 'default'}"

    def local(self, ctx: DataContext) -> Path | None:
        return None if ctx.data_dir is None else Path(ctx.data_dir) / self.rel


@dataclass(frozen=True)
class FileData:
    """A file of an original distribution: the first of `names` (paths under data_dir, in the
    loader's order of preference; a glob name stands for every file it matches) that exists.
    `format`: how `raysweep data check` parses its first rows (see `raysweep.tasks.files`).
    `url`: where `raysweep data prepare` fetches it to `names[0]`; None where there is no
    public download. `<archive url>#<member glob>`: a member of a zip or tar archive (for a
    glob name, every matching member, at its archive path under the name's first directory);
    `<url>.xz#documents=N`: the first N blank-line-separated documents, decompressed."""

    names: tuple[str, ...]
    format: str
    url: str | None = None

    def paths(self, data_dir: Path | str | None) -> list[Path]:
        """The files of the first name that has any (sorted), or []."""
        if data_dir is None:
            return []
        for name in self.names:
            if is_glob(name):
                found = sorted(Path(data_dir).glob(name))
            else:
                found = [Path(data_dir) / name] if (Path(data_dir) / name).exists() else []
            if found:
                return found
        return []

    def path(self, data_dir: Path | str | None) -> Path | None:
        found = self.paths(data_dir)
        return found[0] if found else None

    def expected(self, data_dir: Path | str | None) -> Path | None:
        """Where the loader looks first (for messages), existing or not."""
        return None if data_dir is None else Path(data_dir) / self.names[0]


def is_glob(name: str) -> bool:
    return any(c in name for c in "*?[")


Source = Union[HFData, FileData]
# Ways to satisfy one (task, split, language), in the loader's order of preference; each is a
# tuple of sources that must all be there.
Options = tuple[tuple[Source, ...], ...]
Layout = Callable[[Task, str, str], Options]


def all_of(*sources: Source) -> Options:
    """One way: every source is needed."""
    return (tuple(sources),)


def any_of(*sources: Source) -> Options:
    """Each source alone is a way (the original files, else a save_to_disk copy of the hub's)."""
    return tuple((s,) for s in sources)


def hf_rows(task: Task, split: str, language: str, ctx: DataContext,
            src: HFData) -> list[dict[str, Any]]:
    """The rows (dicts, only `src.fields`) of one split of an HF-schema dataset: from
    `<data_dir>/<dirname>/<config or 'default'>/` (save_to_disk), else from the hub when
    `ctx.allow_download`, else a TaskDataError."""
    import datasets

    local = src.local(ctx)
    hf_split = src.split
    hub = f"{src.hub_id!r} (config {src.config!r}, split {hf_split!r})"
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
        data = datasets.load_dataset(src.hub_id, src.config, split=hf_split)
    else:
        raise missing_data(task, split, language,
                           f"a DatasetDict saved with save_to_disk at {local} "
                           f"with split {hf_split!r}" if local else "DataContext.data_dir", hub)
    for name in src.fields:
        if name not in data.column_names:
            raise TaskDataError(f"{where(task, split, language)}: the dataset "
                                f"({local or src.hub_id}) lacks field {name!r}; "
                                f"it has {data.column_names}")
    columns = {name: data[name] for name in src.fields}
    columns = {k: list(v) for k, v in columns.items()}
    return [dict(zip(columns, values)) for values in zip(*columns.values())] if columns else []


def check_split(task: Task, split: str, mapping: Mapping[str, Any]) -> Any:
    try:
        return mapping[split]
    except KeyError:
        raise TaskDataError(f"{where(task, split)}: no such split; "
                            f"allowed: {', '.join(mapping)}") from None
