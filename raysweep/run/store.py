"""The stage store: stage outputs keyed by a hash of their config, shared between trials.

As in marin, each output directory `<storage>/stages/<stage>-<key>/` has a status file beside
the data, written last by atomic rename: an output without `STATUS` = done is not an output.
A lease file, created with O_CREAT|O_EXCL (atomic on local disks and NFS alike, so it also holds
across the nodes of a cluster sharing the storage), says who computes the key now; the holder
refreshes it from a heartbeat thread, and a lease not refreshed for `ttl` seconds belongs to a
dead holder and may be broken. So concurrent trials never compute the same key twice, and a
crashed trial does not block the key forever.

So the store needs a POSIX file system (O_EXCL, rename, mtime) that every node mounts at the same
path: a local disk on one machine, NFS/EFS/Filestore on a cluster; never an object store, where
none of those exist. `stage_root` is where a sweep puts it, and refuses a root that is not one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import unquote, urlsplit

from raysweep.results.tables import is_uri

STATUS, LEASE = "STATUS", "LEASE"
STAGES_DIR = "stages"  # the stage root under a local --storage when no --stages is given


class StageRootError(ValueError):
    """The stage outputs were sent where leases cannot work (an object store)."""


def stage_root(storage: str | os.PathLike, stages: str | os.PathLike | None = None) -> Path:
    """The stage store's root: `stages`, else `<storage>/stages`. A `file://` URI is its local
    path; any other URI (s3://, gs://) is refused, since the leases need a shared POSIX file
    system (see the module docstring)."""
    root, flag = (stages, "--stages") if stages is not None else (storage, "--storage")
    root = os.fspath(root)
    if is_uri(root):
        url = urlsplit(root)
        if url.scheme != "file":
            raise StageRootError(
                f"{flag} {root}: stage outputs need a POSIX file system shared by every node "
                "(their leases are O_EXCL files), not an object store; pass --stages DIR, a "
                "directory on the cluster's shared file system (e.g. /mnt/shared/stages), and "
                "keep --storage for the result tables and Ray's state")
        root = unquote(url.path)
    return Path(root) if stages is not None else Path(root) / STAGES_DIR


def stage_key(config: dict[str, Any]) -> str:
    """Hash of the whole normalized config (sorted keys, JSON): what determines the output."""
    blob = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def _write_json_atomic(path: Path, obj: dict[str, Any]) -> None:
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex}"
    tmp.write_text(json.dumps(obj, sort_keys=True))
    os.replace(tmp, path)


@dataclass(frozen=True)
class StageStore:
    root: Path
    ttl: float = 120.0  # seconds without a heartbeat before a lease counts as dead
    heartbeat: float = 10.0

    def path(self, stage: str, key: str) -> Path:
        return Path(self.root) / f"{stage}-{key}"

    def status(self, stage: str, key: str) -> dict[str, Any] | None:
        f = self.path(stage, key) / STATUS
        try:
            return json.loads(f.read_text())
        except FileNotFoundError:
            return None

    def is_done(self, stage: str, key: str) -> bool:
        s = self.status(stage, key)
        return bool(s and s.get("status") == "done")

    def _try_lease(self, lease: Path, holder: str) -> bool:
        try:
            fd = os.open(lease, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            json.dump({"holder": holder, "host": socket.gethostname(), "t": time.time()}, f)
        return True

    def _lease_dead(self, lease: Path) -> bool:
        try:
            return time.time() - lease.stat().st_mtime > self.ttl
        except FileNotFoundError:
            return False

    @contextmanager
    def claim(self, stage: str, key: str, wait_s: float = 0.5,
              timeout_s: float = 6 * 3600) -> Iterator[Path | None]:
        """Yield the output dir to compute into (the lease is ours), or None when the output is
        already done (possibly after waiting for another holder). On a clean exit of the block,
        the output is marked done; on an exception the lease is dropped and nothing is marked."""
        out = self.path(stage, key)
        out.mkdir(parents=True, exist_ok=True)
        lease = out / LEASE
        holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        deadline = time.monotonic() + timeout_s
        while True:
            if self.is_done(stage, key):
                yield None
                return
            if self._try_lease(lease, holder):
                break
            if self._lease_dead(lease):  # a holder that stopped beating: take its place
                try:
                    os.replace(lease, out / f".{LEASE}.dead-{uuid.uuid4().hex[:6]}")
                except FileNotFoundError:
                    pass
                continue
            if time.monotonic() > deadline:
                raise TimeoutError(f"{out}: still leased by another trial after {timeout_s} s")
            time.sleep(wait_s)
        if self.is_done(stage, key):  # finished between our check and our lease
            lease.unlink(missing_ok=True)
            yield None
            return
        stop = threading.Event()
        beat = threading.Thread(target=self._beat, args=(lease, stop), daemon=True)
        beat.start()
        try:
            yield out
            _write_json_atomic(out / STATUS, {"status": "done", "holder": holder,
                                              "finished": time.time()})
        finally:
            stop.set()
            beat.join()
            lease.unlink(missing_ok=True)

    def _beat(self, lease: Path, stop: threading.Event) -> None:
        while not stop.wait(self.heartbeat):
            try:
                os.utime(lease)
            except FileNotFoundError:
                return

    def clear(self, stage: str, key: str) -> None:
        shutil.rmtree(self.path(stage, key), ignore_errors=True)
