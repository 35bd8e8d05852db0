"""fmbench.storage: atomic writes (umask, clean-up, machine errors), orphans, set-aside, lock —
reproduced with real processes, real kill -9 and a patched fsync for a full or read-only disk."""

import errno
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from fmbench import storage as S


def _fail_fsync(monkeypatch, err: int, when=lambda name: True):
    """Make fsync fail with ``err`` for files whose name satisfies ``when`` (as a full disk,
    quota or read-only file system does at the latest when the data is forced to disk)."""
    real = os.fsync

    def fsync(fd):
        name = os.readlink(f"/proc/self/fd/{fd}")
        if when(name):
            raise OSError(err, os.strerror(err))
        return real(fd)

    monkeypatch.setattr(os, "fsync", fsync)


def _temps(folder):
    return [p for p in folder.rglob(".*") if "tmp" in p.name]


@pytest.mark.parametrize("mask,mode", [(0o022, 0o644), (0o027, 0o640), (0o002, 0o664)])
def test_atomic_write_honours_umask(tmp_path, mask, mode):
    old = os.umask(mask)
    try:
        S.atomic_write_text(tmp_path / "a" / "f.txt", "x")
    finally:
        os.umask(old)
    assert (tmp_path / "a" / "f.txt").stat().st_mode & 0o777 == mode


@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.EACCES])
def test_machine_write_errors_are_storage_errors_and_leave_nothing(tmp_path, monkeypatch, err):
    target = tmp_path / "f.txt"
    target.write_text("old")
    _fail_fsync(monkeypatch, err)
    with pytest.raises(S.StorageError, match=os.strerror(err)) as e:
        S.atomic_write_text(target, "new")
    assert str(target) in str(e.value) and "--resume" in str(e.value)
    assert target.read_text() == "old" and _temps(tmp_path) == []


def test_any_write_error_names_the_path(tmp_path):
    """A folder where a file should go, a name too long: the run cannot write; one message."""
    (tmp_path / "f.txt").mkdir()
    for target in (tmp_path / "f.txt", tmp_path / ("x" * 300)):
        with pytest.raises(S.StorageError, match="cannot write") as e:
            S.atomic_write_text(target, "x")
        assert str(target) in str(e.value) and isinstance(e.value.__cause__, OSError)
    assert _temps(tmp_path) == []


def test_exception_inside_writer_removes_the_temp_file(tmp_path):
    def boom(f):
        f.write(b"half")
        raise ValueError("writer failed")

    with pytest.raises(ValueError):
        S.atomic_write(tmp_path / "f.bin", boom)
    assert list(tmp_path.iterdir()) == []


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_orphans_of_dead_writers_are_removed_live_ones_kept(tmp_path):
    dead = tmp_path / "cases" / f".x.json.{S._host()}.{_dead_pid()}.0123abcd.tmp"
    mine = tmp_path / f".y.json.{S._host()}.{os.getpid()}.0123abcd.tmp"
    other_host_new = tmp_path / ".z.json.otherhost.1.0123abcd.tmp"
    legacy = tmp_path / "models" / ".m.pt.4242.tmp"
    for p in (dead, mine, other_host_new, legacy):
        p.parent.mkdir(exist_ok=True)
        p.write_text("partial")
    assert S.remove_orphans(tmp_path) == [dead]
    assert mine.exists() and other_host_new.exists() and legacy.exists()
    assert S.remove_orphans(tmp_path, legacy=True) == [legacy]
    old = time.time() - S.ORPHAN_AGE_S - 10
    os.utime(other_host_new, (old, old))
    assert S.remove_orphans(tmp_path) == [other_host_new]


WRITER = textwrap.dedent("""
    import sys, time
    from fmbench.storage import atomic_write

    def slow(f):
        f.write(b"partial")
        f.flush()
        print("writing", flush=True)
        time.sleep(60)

    atomic_write(sys.argv[1], slow)
""")


def test_kill_9_inside_an_atomic_write(tmp_path):
    """The killed writer leaves its temp file and the old target; the next clean-up removes it."""
    target = tmp_path / "results.csv"
    target.write_text("old")
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(target)], stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline().strip() == "writing"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    left = _temps(tmp_path)
    assert len(left) == 1 and target.read_text() == "old"
    assert S.remove_orphans(tmp_path) == left and _temps(tmp_path) == []


def test_set_aside_renames_and_never_overwrites(tmp_path, caplog):
    f = tmp_path / "a.json"
    f.write_text("{trunc")
    first = S.set_aside(f, "not valid JSON")
    f.write_text("{again")
    second = S.set_aside(f, "not valid JSON")
    assert not f.exists() and first != second
    assert first.read_text() == "{trunc" and second.read_text() == "{again"
    assert first.name.startswith("a.json.corrupt-")
    assert "set aside" in caplog.text and "not valid JSON" in caplog.text


HOLDER = textwrap.dedent("""
    import sys, time
    from fmbench.storage import FolderLock

    FolderLock(sys.argv[1]).acquire()
    print("locked", flush=True)
    time.sleep(60)
""")


def test_lock_is_exclusive_and_released_by_kill_9(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path)], stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(S.LockHeld, match=f"pid {proc.pid}"):
            S.FolderLock(tmp_path).acquire()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    with S.FolderLock(tmp_path):  # the kernel released the dead holder's lock
        with pytest.raises(S.LockHeld):
            S.FolderLock(tmp_path).acquire()  # a second holder in this process is refused too
    S.FolderLock(tmp_path).acquire().release()
