"""What a sweep reads, and whether it is there: `raysweep data check`, and the same check
`raysweep launch` runs before Ray starts.

Where a (task, split, language) lives is each family module's knowledge, in its `FILES` table
(task -> `Layout`, built from the path functions its loader reads through; see
`raysweep.tasks.sources`). This module only walks those tables: which reads a sweep makes
(`plan_reads`), which of a read's ways the loader would take (`chosen`), and a cheap probe of
each file: its first rows, never a whole dataset. Synthetic tasks (`syn_*`) read no files.
"""

from __future__ import annotations

import functools
import json
import lzma
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from raysweep.tasks.base import TaskDataError
from raysweep.tasks.registry import TASK_MODULES, all_tasks, get_task
from raysweep.tasks.retrieval import fine_tuned
from raysweep.tasks.sources import HFData, Layout, Options, Source

SYNTHETIC = "synthetic:"


@dataclass(frozen=True)
class Read:
    task: str
    split: str
    language: str


@dataclass(frozen=True)
class Problem:
    """A read the loader would fail on: nothing there (`problem` = "missing"), or a file that
    does not parse."""

    read: Read
    expected: str  # where the loader looks (paths under the data directory)
    problem: str

    def line(self) -> str:
        r = self.read
        return f"{r.task} / {r.split} / {r.language}: {self.problem}; expected {self.expected}"


@functools.lru_cache(maxsize=None)
def layouts() -> dict[str, Layout]:
    """task -> its family's `Layout` (every family module that is written has a `FILES`)."""
    all_tasks()  # imports the family modules
    out: dict[str, Layout] = {}
    for name in TASK_MODULES:
        out.update(getattr(sys.modules.get(name), "FILES", {}))
    return out


def options(read: Read) -> Options | None:
    """The ways to satisfy a read, in the loader's order; None for a task that reads no files."""
    task = get_task(read.task)
    layout = layouts().get(task.name)
    if layout is None:
        if task.source.startswith(SYNTHETIC):
            return None
        raise TaskDataError(f"task {task.name!r} reads files, but its module has no FILES "
                            "entry saying where (raysweep.tasks.sources)")
    return layout(task, read.split, read.language)


def plan_reads(targets: Sequence[str], eval_languages: Mapping[str, Sequence[str]],
               intermediate: Iterable[str] = (), corpus: str | None = None) -> list[Read]:
    """Every (task, split, language) a sweep's trials read, as `raysweep.run.stages` reads
    them: the pretraining corpus's and the intermediate tasks' train splits (in each task's
    train languages); per target task, the train splits of its English training sources (XCOPA:
    SIQa, then COPA), the English dev set that selects models (the target's, else its training
    source's), and the test split of every evaluated language. Zero-shot retrieval targets
    (Tatoeba, BUCC: `retrieval.fine_tuned`) read test splits only."""
    out: dict[Read, None] = {}

    def train(name: str) -> None:
        for lang in get_task(name).train_languages:
            out[Read(name, "train", lang)] = None

    if corpus:
        train(corpus)
    for name in intermediate:
        train(name)
    for name in targets:
        task = get_task(name)
        if fine_tuned(task):
            for source in task.train_tasks or (task.train_task or name,):
                train(source)
            for dev in (task, get_task(task.train_task or name)):
                if "en" in dev.languages and "validation" in dev.splits:
                    out[Read(dev.name, "validation", "en")] = None
                    break
        for lang in eval_languages[name]:
            out[Read(name, "test", lang)] = None
    return list(out)


def with_files(reads: Iterable[Read]) -> list[Read]:
    """The reads that need files (synthetic tasks need none)."""
    return [r for r in reads if options(r) is not None]


# --- where the loader would look --------------------------------------------------------------


def present(src: Source, root: Path) -> bool:
    if isinstance(src, HFData):
        return (root / src.rel).is_dir()
    return bool(src.paths(root))


def chosen(ways: Options, root: Path) -> tuple[Source, ...] | None:
    """The way the loader takes: the first whose first source is there (the loader then needs
    all of that way's sources); None when no way has started."""
    return next((way for way in ways if present(way[0], root)), None)


def describe(src: Source, root: Path) -> str:
    if isinstance(src, HFData):
        return f"{root / src.rel}/ (save_to_disk of {src.hub_id}, split {src.split!r})"
    return str(root / src.names[0])


def expected(ways: Options, root: Path) -> str:
    return " or ".join(" + ".join(describe(s, root) for s in way) for way in ways)


# --- probes: the first rows of each file --------------------------------------------------------


def _first_line(path: Path, skip_comments: bool = False) -> str:
    opener = lzma.open if path.suffix == ".xz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        for line in f:
            if line.strip() and not (skip_comments and line.startswith("#")):
                return line.rstrip("\n")
    return ""


def _probe_file(path: Path, fmt: str) -> str | None:
    """None when the file parses as `fmt` (its first rows), else what is wrong. A JSON document
    has no first rows: it is parsed whole (the largest, TyDiQA's train set, in about a second),
    which also catches a truncated download."""
    if fmt in ("json", "squad"):
        doc = json.loads(path.read_text(encoding="utf-8"))
        if fmt == "squad":
            paragraph = doc["data"][0]["paragraphs"][0]
            for key in ("context", "qas"):
                if key not in paragraph:
                    return f"{path}: the first paragraph lacks field {key!r}"
        return None
    line = _first_line(path, skip_comments=fmt == "conllu")
    if fmt == "text":
        return None if line else f"{path} is empty"
    if fmt == "jsonl":
        json.loads(line)
        return None
    want, got = {"tsv": 2, "conllu": 10}[fmt], len(line.split("\t"))
    if got < want:
        return f"{path}: the first row has {got} tab-separated fields, not {want}"
    return None


def _probe_hf(local: Path, src: HFData) -> str | None:
    """What `datasets.load_from_disk` needs of a save_to_disk directory, without its cost
    (~0.1 s a DatasetDict): every split's arrow files there (the loader opens them all), and
    the first record batch of the split read, with the loader's fields."""
    import pyarrow as pa

    not_saved = f"{local} is not a dataset saved with save_to_disk"
    if (local / "dataset_dict.json").is_file():
        splits = json.loads((local / "dataset_dict.json").read_text())["splits"]
        if src.split not in splits:
            return f"split {src.split!r} not in {local} (it has {sorted(splits)})"
        dirs = {name: local / name for name in splits}
    elif (local / "state.json").is_file():  # a single split, saved alone
        dirs = {src.split: local}
    else:
        return f"{not_saved}: no dataset_dict.json or state.json"
    files = {}
    for name, d in dirs.items():
        state = d / "state.json"
        if not state.is_file():
            return f"{not_saved}: {state} is missing"
        files[name] = [d / f["filename"] for f in json.loads(state.read_text())["_data_files"]]
        lost = [str(f) for f in files[name] if not f.is_file()]
        if lost:
            return f"{not_saved}: {', '.join(lost)} missing"
    with pa.memory_map(str(files[src.split][0])) as stream:
        reader = pa.ipc.open_stream(stream)
        columns = reader.schema.names
        lacking = [f for f in src.fields if f not in columns]
        if lacking:
            return f"{local} (split {src.split!r}) lacks fields {lacking}; it has {columns}"
        for _ in reader:  # the first record batch
            break
    return None


class Prober:
    """Probes each file or dataset once per check (many reads share them: LAReQA's eleven
    files, a DatasetDict's splits)."""

    def __init__(self, root: Path):
        self.root = root
        self.seen: dict[Any, str | None] = {}

    def source(self, src: Source) -> str | None:
        if isinstance(src, HFData):
            return self._once(("hf", src.rel, src.split, src.fields), _probe_hf,
                              self.root / src.rel, src)
        paths = src.paths(self.root)
        if not paths:
            return "missing"
        for path in paths:
            problem = self._once(("file", path, src.format), _probe_file, path, src.format)
            if problem:
                return problem
        return None

    def _once(self, key, probe, *args) -> str | None:
        if key not in self.seen:
            try:
                self.seen[key] = probe(*args)
            # (pyarrow's errors are ValueErrors and OSErrors)
            except (OSError, UnicodeDecodeError, ValueError, KeyError, IndexError,
                    TypeError, EOFError, lzma.LZMAError) as err:
                self.seen[key] = f"{args[0]} does not parse: {type(err).__name__}: {err}"
        return self.seen[key]

    def read(self, read: Read) -> Problem | None:
        ways = options(read)
        if ways is None:
            return None
        way = chosen(ways, self.root)
        if way is None:
            return Problem(read, expected(ways, self.root), "missing")
        for src in way:
            problem = self.source(src)
            if problem:
                return Problem(read, expected((way,), self.root), problem)
        return None


def check_reads(reads: Iterable[Read], data_dir: Path | str) -> list[Problem]:
    """Every read the loader would fail on under `data_dir`, in the order given."""
    prober = Prober(Path(data_dir))
    return [p for p in map(prober.read, reads) if p is not None]
