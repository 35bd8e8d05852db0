"""Files on disk: atomic writes, orphan clean-up, corrupt files set aside, a folder lock.

Every file fmbench writes (results, case files, run.json, cached models, checkpoints, features,
samples, reports) goes through :func:`atomic_write`: the bytes go to a temporary file beside the
target, named ``.<name>.<host>.<pid>.<random>.tmp``, which is fsync'ed, given the permissions
the umask allows (``mkstemp`` would leave 0600, unreadable to collaborators) and renamed over the
target. Readers see the old file or the new one, never half of one; on any exception the temporary
file is removed. A process killed with ``kill -9`` cannot remove it: :func:`remove_orphans` does,
at the start of the next run, for temporary files whose writer (same host, that pid) is gone.

A write that fails — disk full, quota, read-only file system, no permission, a folder where a
file should be — raises :class:`StorageError`: a failure of the run, not of a case (the runner
stops with one message naming the path, exit code 2, and ``--resume`` continues once it is
fixed). fmbench's own file names are bounded and sanitised, so no case can fail every write.

:func:`set_aside` renames a corrupt file to ``<name>.corrupt-<UTC time>`` so that it is kept for
inspection and recomputed, never fatal. :class:`FolderLock` is an exclusive ``flock`` on
``<folder>/.fmbench.lock``, held by a live run; the kernel drops it when the process dies, so a
killed run never leaves a folder stuck.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import logging
import os
import re
import secrets
import socket
import stat
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

LOCK_NAME = ".fmbench.lock"
log = logging.getLogger("fmbench")
ORPHAN_AGE_S = 24 * 3600  # temporary files of other hosts (shared file systems) older than this


class StorageError(RuntimeError):
    """The run cannot write its files (disk full, read-only, permission, lock held)."""


class LockHeld(StorageError):
    """Another live fmbench process holds the folder's lock."""


def canonical_json(obj: object) -> str:
    """The package's one JSON form of a record: sorted keys, ASCII, ``str`` for the rest (what
    :func:`digest` hashes, so ``digest(canonical_json(x)) == digest(x)``)."""
    return json.dumps(obj, sort_keys=True, default=str)


def digest(obj: object, n: int = 16) -> str:
    """The package's one content hash: the first ``n`` hex digits of sha256 — of the bytes, of the
    text (UTF-8), or of anything else as canonical JSON (:func:`canonical_json`)."""
    if isinstance(obj, bytes):
        data = obj
    elif isinstance(obj, str):
        data = obj.encode("utf-8", "surrogatepass")
    else:
        data = canonical_json(obj).encode()
    return hashlib.sha256(data).hexdigest()[:n]


def file_digest(path: Path | str, n: int = 16) -> str:
    """:func:`digest` of a file's bytes, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:n]


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname()) or "host"


def file_mode() -> int:
    """The permissions a new file gets under the current umask (0o644 under 022)."""
    try:  # Linux: read it without changing it (os.umask would, for a moment, for every thread)
        with open("/proc/self/status") as f:
            mask = next(int(line.split()[1], 8) for line in f if line.startswith("Umask:"))
    except (OSError, StopIteration, ValueError, IndexError):
        mask = os.umask(0)
        os.umask(mask)
    return 0o666 & ~mask


def storage_error(path: Path | str, e: OSError) -> StorageError:
    """The run cannot write ``path``: one message saying what to fix (the OSError as cause)."""
    name = errno.errorcode.get(e.errno, str(e.errno)) if e.errno else type(e).__name__
    hint = {errno.ENOSPC: "free some space", errno.EDQUOT: "free some space",
            errno.EROFS: "choose a writable folder", errno.EACCES: "check the permissions",
            errno.EPERM: "check the permissions"}.get(e.errno, "check that path")
    return StorageError(f"cannot write {path}: {e.strerror or e} ({name}); {hint}, then "
                        "rerun with --resume: finished cases are kept")


def temp_name(target: Path) -> Path:
    return target.with_name(f".{target.name}.{_host()}.{os.getpid()}."
                            f"{secrets.token_hex(4)}.tmp")


def atomic_write(path: Path | str, write: Callable[[IO[bytes]], object]) -> Path:
    """Write ``path`` atomically: ``write(f)`` fills a binary temporary file beside it."""
    path = Path(path)
    tmp = temp_name(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    except OSError as e:
        _discard(tmp)
        raise storage_error(path, e) from e
    except BaseException:
        _discard(tmp)
        raise
    return path


def atomic_write_text(path: Path | str, text: str) -> Path:
    return atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def _discard(tmp: Path) -> None:
    try:
        tmp.unlink(missing_ok=True)
    except OSError:
        pass


_TEMP = re.compile(r"^\.(?P<name>.+)\.(?P<host>[A-Za-z0-9_-]+)\.(?P<pid>\d{1,10})\.[0-9a-f]{8}\.tmp$")
# names of the temporary files earlier fmbench versions wrote (no host in them)
_LEGACY_TEMP = re.compile(r"^\..+(\.\d+\.tmp(\.npz|\.png)?|\.[A-Za-z0-9_]{8}\.tmp)$")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError, ValueError):
        return False
    except PermissionError:
        return True
    return True


def is_temp_name(name: str) -> bool:
    """A temporary file name of fmbench's (this version's or an older one's)."""
    return bool(_TEMP.match(name) or _LEGACY_TEMP.match(name))


def is_orphan(file: Path, legacy: bool, min_age: float = 0.0) -> bool:
    """A temporary file whose writer is gone: same host and a dead pid, or another host's file
    older than ORPHAN_AGE_S. ``legacy`` also counts the older fmbench temp names (safe only where
    no other live writer can be: inside a locked folder, or with a ``min_age``). Files younger
    than ``min_age`` seconds are kept (a shared cache: processes in other pid namespaces may
    share the host name)."""
    try:
        age = time.time() - file.stat().st_mtime
    except OSError:
        return False
    if age < min_age:
        return False
    m = _TEMP.match(file.name)
    if m is None:
        return legacy and bool(_LEGACY_TEMP.match(file.name))
    if m["host"] == _host():
        return int(m["pid"]) != os.getpid() and not _pid_alive(int(m["pid"]))
    return age > ORPHAN_AGE_S


def remove_orphans(folder: Path | str, legacy: bool = False, min_age: float = 0.0) -> list[Path]:
    """Remove orphan temporary files anywhere under ``folder``; returns what was removed."""
    folder = Path(folder)
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    for root, _, names in os.walk(folder):  # never follows symlinked folders
        for name in names:
            file = Path(root) / name
            if not name.startswith(".") or "tmp" not in name or file.is_symlink() \
                    or not is_orphan(file, legacy, min_age):
                continue
            try:
                file.unlink()
                removed.append(file)
            except FileNotFoundError:
                pass
            except OSError as e:
                raise storage_error(file, e) from e
    return removed


def set_aside(file: Path | str, reason: str) -> Path:
    """Rename a corrupt file to ``<name>.corrupt-<UTC time>`` (kept for inspection) and log it."""
    file = Path(file)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    dest = file.with_name(f"{file.name}.corrupt-{stamp}")
    n = 1
    while dest.exists():
        dest = file.with_name(f"{file.name}.corrupt-{stamp}-{n}")
        n += 1
    try:
        os.replace(file, dest)
    except OSError as e:
        raise storage_error(file, e) from e
    log.warning("set aside %s (%s) as %s; it will be recomputed", file, reason, dest.name)
    return dest


class FolderLock:
    """Exclusive lock on a folder for one live process (``flock``; released by the kernel when
    the process exits, however it exits). ``name`` locks one item of a shared folder instead
    (the model cache locks ``<key>.lock`` per model); ``wait`` blocks until the holder is done
    instead of raising LockHeld."""

    def __init__(self, folder: Path | str, name: str = LOCK_NAME, wait: bool = False):
        self.folder = Path(folder)
        self.file = self.folder / name
        self.wait = wait
        self._fd: int | None = None

    def acquire(self) -> FolderLock:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.file, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o666)
        except OSError as e:  # ELOOP: the lock file is a symbolic link (never followed)
            raise storage_error(self.file, e) from e
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise StorageError(f"{self.file} is not a regular file; remove it")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if self.wait else fcntl.LOCK_NB))
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise LockHeld(f"{self.folder} is in use by another fmbench run ({holder}); wait "
                           "for it to finish or choose another --out") from None
        except OSError as e:
            os.close(fd)
            raise storage_error(self.file, e) from e
        info = json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                           "since": datetime.now(UTC).isoformat(timespec="seconds")})
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, info.encode(), 0)
        except OSError:
            pass  # the lock itself is what matters; the holder note is a courtesy
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            finally:
                os.close(self._fd)
                self._fd = None

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _read_holder(fd: int) -> str:
    try:
        d = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
        return f"pid {d['pid']} on {d['host']} since {d['since']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "holder unknown"
