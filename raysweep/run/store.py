"""The stage store: stage outputs keyed by a hash of their config, shared between trials.

As in marin, each output directory `<storage>/stages/<stage>-<key>/` has a status file beside
the data, written last by atomic rename: an output without `STATUS` = done is not an output.

A lease file says who computes the key now. It is created whole, by `link(2)` of a private file
onto the name `LEASE` (atomic, and failing when the name exists, on local disks and NFS alike, so
it also holds across the nodes of a cluster sharing the storage), and it carries a token unique
to the claim. The holder keeps the file open and refreshes its mtime through that descriptor
(`futimens`), so a heartbeat can only ever touch its own lease, whatever now has the name. A
lease is dead when it was not refreshed for `ttl` seconds, or at once when its holder ran on this
host (same pid namespace) and its process is gone.

Taking over a dead lease is atomic: a waiter that judges lease `T` dead must first create
`.LEASE.break-T` with O_EXCL, so exactly one waiter breaks any one lease; it then re-reads the
lease, and renames it away only if it still says `T` and is still dead. (Without that, two
waiters that both judged the old lease dead could each rename away whatever lease was there,
including the fresh one the other had just taken, and both compute: issue 11.) The winner then
claims like anyone else, with O_EXCL. A holder checks by content that the lease is still its own
before it marks the output done and before it unlinks the lease; one that lost its lease (it was
paused past `ttl` and broken) raises `LeaseLost` and leaves the new holder's lease alone.

Fencing: the holder never writes in the output directory itself. It computes into a private
directory beside it (`.<stage>-<key>.<token>`), and only at commit, once it has checked that the
lease is still its own, moves what it wrote into the output directory and then writes `STATUS`.
So a holder that lost its lease (or died) leaves no partial file in the final directory; the
next holder that commits removes such private directories.

So the store needs a POSIX file system (link, O_EXCL, rename, mtime) that every node mounts at
the same path: a local disk on one machine, NFS/EFS/Filestore on a cluster; never an object
store, where none of those exist. `stage_root` is where a sweep puts it, and refuses a root that
is not one.
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
from typing import Any, Callable, Iterator
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


class LeaseLost(RuntimeError):
    """Our lease was broken while we held it (we stopped beating for `ttl` seconds): another
    trial computes the key now, so we must not mark it done."""


def _host() -> str:
    """This host, as a lease names it: the host name and the pid namespace, so that a pid in a
    lease is judged only where it means the same process."""
    try:
        ns = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        ns = 0
    return f"{socket.gethostname()}/{ns}"


def _read_lease(path: Path) -> tuple[dict[str, Any], os.stat_result] | None:
    """A lease's content and stat, or None where there is none. A lease from before tokens (or
    written by hand) has no token: its inode stands in for one."""
    try:
        st = path.stat()
        content = json.loads(path.read_text() or "{}")
    except FileNotFoundError:
        return None
    except ValueError:
        content = {}
    content.setdefault("token", f"ino{st.st_ino}-{st.st_mtime_ns}")
    return content, st


def _pid_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, someone else's
        return False
    return False


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

    # --- leases -------------------------------------------------------------------------------

    def _acquire(self, lease: Path, token: str) -> int | None:
        """Take the lease if nobody holds it: a descriptor on our lease file, else None."""
        tmp = lease.parent / f".{LEASE}.new-{token}"
        fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o644)
        try:
            os.write(fd, json.dumps({"token": token, "host": _host(), "pid": os.getpid(),
                                     "t": time.time()}).encode())
            os.fsync(fd)
            os.link(tmp, lease)  # atomic; fails where a lease exists
        except FileExistsError:
            os.close(fd)
            return None
        finally:
            tmp.unlink(missing_ok=True)
        return fd

    def _dead(self, lease: Path) -> str | None:
        """The token of the lease at `lease` if its holder is dead, else None."""
        got = _read_lease(lease)
        if got is None:
            return None
        content, st = got
        if time.time() - st.st_mtime > self.ttl:
            return content["token"]
        if content.get("host") == _host() and isinstance(content.get("pid"), int) \
                and _pid_gone(content["pid"]):
            return content["token"]
        return None

    def _break(self, lease: Path, token: str) -> bool:
        """Remove the dead lease `token`, if we are the one waiter allowed to (see the module
        docstring); True when we removed it."""
        try:
            os.close(os.open(lease.parent / f".{LEASE}.break-{token}",
                             os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
        except FileExistsError:
            return False  # another waiter is taking this very lease over
        if self._dead(lease) != token:  # released, or already replaced by a live one
            return False
        moved = lease.parent / f".{LEASE}.dead-{token}"
        try:
            os.rename(lease, moved)
        except FileNotFoundError:
            return False
        got = _read_lease(moved)
        if got is not None and got[0]["token"] != token:
            # The 'dead' holder was only slow: it released in the instant between our check and
            # the rename, and a fresh lease took the name. Give it back (same inode: its
            # holder's heartbeat and ownership checks carry on), unless yet another is there.
            try:
                os.link(moved, lease)
            except FileExistsError:
                pass
            moved.unlink(missing_ok=True)
            return False
        return True

    def _owns(self, lease: Path, token: str) -> bool:
        got = _read_lease(lease)
        return got is not None and got[0]["token"] == token

    def _release(self, lease: Path, token: str) -> None:
        if self._owns(lease, token):
            lease.unlink(missing_ok=True)

    @contextmanager
    def claim(self, stage: str, key: str, wait_s: float = 0.5, timeout_s: float = 6 * 3600,
              on_wait: Callable[[], None] | None = None) -> Iterator[Path | None]:
        """Yield a private directory to compute into (the lease is ours), or None when the
        output is already done (possibly after waiting for another holder). On a clean exit of
        the block, what was written there moves into the output directory, which is marked
        done; on an exception the lease is dropped, nothing is marked and nothing moves.
        `on_wait()` runs at each poll while another holder has the key."""
        out = self.path(stage, key)
        out.mkdir(parents=True, exist_ok=True)
        lease = out / LEASE
        token = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:10]}"
        deadline = time.monotonic() + timeout_s
        while True:
            if self.is_done(stage, key):
                yield None
                return
            fd = self._acquire(lease, token)
            if fd is not None:
                break
            dead = self._dead(lease)
            if dead is not None and self._break(lease, dead):
                continue  # claim at once, with O_EXCL like any other waiter
            if time.monotonic() > deadline:
                raise TimeoutError(f"{out}: still leased by another trial after {timeout_s} s")
            if on_wait is not None:
                on_wait()
            time.sleep(wait_s)
        try:
            if self.is_done(stage, key):  # finished between our check and our lease
                self._release(lease, token)
                yield None
                return
            stop, lost = threading.Event(), threading.Event()
            beat = threading.Thread(target=self._beat, args=(fd, lease, token, stop, lost),
                                    daemon=True)
            beat.start()
            private = out.parent / f".{out.name}.{token}"
            try:
                private.mkdir()
                yield private
                if lost.is_set() or not self._owns(lease, token):
                    raise LeaseLost(f"{out}: our lease was broken while we computed (no "
                                    f"heartbeat for {self.ttl} s); another trial computes it")
                self._commit(private, out)
                _write_json_atomic(out / STATUS, {"status": "done", "holder": token,
                                                  "finished": time.time()})
                for trace in (*out.glob(f".{LEASE}.break-*"), *out.glob(f".{LEASE}.dead-*")):
                    trace.unlink(missing_ok=True)  # takeover traces: the key needs no more
            finally:
                stop.set()
                beat.join()
                shutil.rmtree(private, ignore_errors=True)
                self._release(lease, token)
        finally:
            os.close(fd)

    @staticmethod
    def _commit(private: Path, out: Path) -> None:
        """Move what the holder wrote into the output directory (replacing what a crashed
        earlier commit left there), and remove other holders' private directories."""
        for entry in sorted(private.iterdir()):
            dest = out / entry.name
            if dest.is_dir() and not dest.is_symlink():
                shutil.rmtree(dest)
            else:
                dest.unlink(missing_ok=True)
            os.rename(entry, dest)
        for other in out.parent.glob(f".{out.name}.*"):
            if other != private:
                shutil.rmtree(other, ignore_errors=True)

    def _beat(self, fd: int, lease: Path, token: str, stop: threading.Event,
              lost: threading.Event) -> None:
        """Refresh our lease through its descriptor (never whatever else has the name now);
        stop, and say so, once the name is no longer ours."""
        while not stop.wait(self.heartbeat):
            if not self._owns(lease, token):
                lost.set()
                return
            os.utime(fd)

    def clear(self, stage: str, key: str) -> None:
        shutil.rmtree(self.path(stage, key), ignore_errors=True)
