"""`raysweep data prepare`: every dataset a sweep reads, fetched into the layout the loaders read,
with a `MANIFEST.json` of sha256 checksums.

Each read is satisfied the way its loader would read it (`raysweep.tasks.files`). From a mirror
(a directory in the same layout: another data_dir, the test fixtures) its files are copied byte
for byte. From the network: HF-schema datasets with `datasets.load_dataset(hub_id,
config).save_to_disk(...)`, original files from their distribution's URL (`FileData.url`; a
member of an archive, or the first documents of a compressed corpus). A read already there is
kept, so an interrupted prepare resumes. Every file lands under a `.partial` name first, then is
renamed: a half-written file is never mistaken for a dataset.

A gated dataset's token comes from `HF_TOKEN` in the environment, which `datasets` reads itself:
nothing here reads, logs or writes it.
"""

from __future__ import annotations

import hashlib
import json
import lzma
import os
import shutil
import tarfile
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass, field
from fnmatch import fnmatch
from functools import partial
from pathlib import Path, PurePosixPath
from typing import IO, Callable, Iterable, Iterator

from raysweep.tasks.files import Read, chosen, expected, options, present
from raysweep.tasks.sources import FileData, HFData, Options, Source, is_glob

MANIFEST = "MANIFEST.json"
PARTIAL = ".partial"


@dataclass
class Prepared:
    fetched: list[str] = field(default_factory=list)  # paths written now, under `to`
    kept: int = 0  # reads already there
    unavailable: list[tuple[Read, str]] = field(default_factory=list)  # (read, why)


def prepare(reads: Iterable[Read], to: Path | str, mirror: Path | str | None = None,
            log: Callable[[str], None] = lambda message: None) -> Prepared:
    to = Path(to)
    to.mkdir(parents=True, exist_ok=True)
    out = Prepared()
    with tempfile.TemporaryDirectory(prefix="raysweep-prepare-") as tmp:
        fetcher = Fetcher(to, Path(tmp), None if mirror is None else Path(mirror), log)
        for read in reads:
            ways = options(read)
            if ways is None:
                continue
            have = chosen(ways, to)
            if have is not None and all(present(s, to) for s in have):
                out.kept += 1
                continue
            way, why = fetcher.way(ways)
            if way is None:
                out.unavailable.append((read, why))
                continue
            try:
                for src in way:
                    out.fetched += fetcher.get(src)
            except OSError as err:  # a network error, a dataset or archive member not there
                out.unavailable.append((read, f"fetching failed: {type(err).__name__}: {err}"))
    write_manifest(to, fetcher.origins)
    return out


class Fetcher:
    """Brings sources into `to`, each once: from `mirror` when given, else from the network."""

    def __init__(self, to: Path, tmp: Path, mirror: Path | None, log: Callable[[str], None]):
        self.to, self.tmp, self.mirror, self.log = to, tmp, mirror, log
        self.done: set[Source] = set()
        self.archives: dict[str, Path] = {}
        self.origins: dict[str, str] = {}  # path under `to` -> where it came from

    def way(self, ways: Options) -> tuple[tuple[Source, ...] | None, str]:
        if self.mirror is not None:
            way = chosen(ways, self.mirror)
            if way is not None and all(present(s, self.mirror) for s in way):
                return way, ""
            return None, f"not in the mirror {self.mirror}: expected {expected(ways, self.mirror)}"
        for way in ways:
            if all(isinstance(s, HFData) or s.url for s in way):
                return way, ""
        return None, (f"no public download: place {expected(ways, self.to)} there by hand "
                      "(see the task's module in raysweep/tasks/)")

    def get(self, src: Source) -> list[str]:
        if src in self.done:
            return []
        self.done.add(src)
        if self.mirror is not None:
            written = self._copy(src)
        elif isinstance(src, HFData):
            written = self._hub(src)
        else:
            written = self._url(src)
        return written

    # --- from a mirror ------------------------------------------------------------------------

    def _copy(self, src: Source) -> list[str]:
        assert self.mirror is not None
        if isinstance(src, HFData):
            tops = [self.mirror / src.rel]
        else:
            tops = src.paths(self.mirror)
        written = []
        for top in tops:
            rel = top.relative_to(self.mirror).as_posix()
            dest = self.to / rel
            if dest.exists():
                continue
            _atomic(dest, partial(shutil.copytree, top, copy_function=shutil.copyfile)
                    if top.is_dir() else partial(shutil.copyfile, top))
            self.origins[rel] = f"mirror:{self.mirror}"
            self.log(f"copied {rel}")
            written.append(rel)
        return written

    # --- from the network ---------------------------------------------------------------------

    def _hub(self, src: HFData) -> list[str]:
        import datasets

        dest = self.to / src.rel
        if dest.exists():
            return []
        self.log(f"fetching {src.hub_id} ({src.config or 'default'}) -> {src.rel}")
        data = datasets.load_dataset(src.hub_id, src.config)
        _atomic(dest, lambda tmp: data.save_to_disk(str(tmp)))
        self.origins[src.rel] = f"hf:{src.hub_id}" + (f" {src.config}" if src.config else "")
        return [src.rel]

    def _url(self, src: FileData) -> list[str]:
        assert src.url is not None
        url, _, fragment = src.url.partition("#")
        if fragment.startswith("documents="):
            dest = src.names[0]
            self.log(f"fetching the first {fragment[10:]} documents of {url} -> {dest}")
            _atomic(self.to / dest, lambda tmp: _first_documents(url, tmp, int(fragment[10:])))
            self.origins[dest] = src.url
            return [dest]
        if not fragment:
            self.log(f"fetching {url} -> {src.names[0]}")
            _atomic(self.to / src.names[0], lambda tmp: _download(url, tmp))
            self.origins[src.names[0]] = url
            return [src.names[0]]
        written = []
        for member, data in _members(self._archive(url), fragment):
            dest = _member_dest(src.names[0], member)
            _atomic(self.to / dest, partial(_write, data))
            self.origins[dest] = f"{url}#{member}"
            written.append(dest)
            if not is_glob(src.names[0]):
                break
        if not written:
            raise FileNotFoundError(f"{url} has no member matching {fragment!r}")
        return written

    def _archive(self, url: str) -> Path:
        if url not in self.archives:
            path = self.tmp / f"{len(self.archives)}-{PurePosixPath(url).name}"
            self.log(f"fetching {url}")
            _download(url, path)
            self.archives[url] = path
        return self.archives[url]


def _atomic(dest: Path, write: Callable[[Path], object]) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + PARTIAL)
    if tmp.is_dir():
        shutil.rmtree(tmp)
    tmp.unlink(missing_ok=True)
    write(tmp)
    os.replace(tmp, dest)


def _download(url: str, path: Path) -> None:
    with urllib.request.urlopen(url, timeout=120) as response, open(path, "wb") as f:
        shutil.copyfileobj(response, f, 1 << 20)


def _write(data: IO[bytes], path: Path) -> None:
    with open(path, "wb") as f:
        shutil.copyfileobj(data, f, 1 << 20)


def _first_documents(url: str, path: Path, n: int) -> None:
    """The first `n` blank-line-separated documents of an .xz text file, decompressed (what the
    corpus loader reads; the rest of CC-100 is never read)."""
    with urllib.request.urlopen(url, timeout=120) as response, \
            lzma.open(response, "rt", encoding="utf-8") as src, \
            open(path, "w", encoding="utf-8") as out:
        docs, in_doc = 0, False
        for line in src:
            if line.strip():
                in_doc = True
            elif in_doc:
                docs, in_doc = docs + 1, False
                if docs == n:
                    break
            out.write(line)


def _members(archive: Path, pattern: str) -> Iterator[tuple[str, IO[bytes]]]:
    """(name, contents) of the archive's files whose name matches `pattern`."""
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as z:
            for name in z.namelist():
                if not name.endswith("/") and fnmatch(name, pattern):
                    with z.open(name) as f:
                        yield name, f
        return
    with tarfile.open(archive) as t:
        for member in t:
            if member.isfile() and fnmatch(member.name, pattern):
                f = t.extractfile(member)
                if f is not None:
                    yield member.name, f


def _member_dest(name: str, member: str) -> str:
    """Where an archive member lands: at `name`, or for a glob name at its archive path under
    the name's first directory (UD: udpos/ud-treebanks-v2.7/UD_English-EWT/...)."""
    if not is_glob(name):
        return name
    parts = PurePosixPath(member).parts
    if PurePosixPath(member).is_absolute() or ".." in parts:
        raise ValueError(f"unsafe archive member {member!r}")
    return "/".join((PurePosixPath(name).parts[0],) + parts)


# --- the manifest ------------------------------------------------------------------------------


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def checksums(root: Path | str) -> dict[str, dict[str, object]]:
    """path under `root` -> {sha256, bytes}, for every file but the manifest itself."""
    root = Path(root)
    return {p.relative_to(root).as_posix(): {"sha256": sha256(p), "bytes": p.stat().st_size}
            for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != MANIFEST and PARTIAL not in p.as_posix()}


def write_manifest(to: Path, origins: dict[str, str]) -> Path:
    """MANIFEST.json: the checksum of every file under `to`, and where each fetched file or
    dataset came from (kept from earlier runs)."""
    path = to / MANIFEST
    old = json.loads(path.read_text()) if path.exists() else {}
    manifest = {"format": 1, "files": checksums(to),
                "sources": dict(sorted({**old.get("sources", {}), **origins}.items()))}
    path.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return path
