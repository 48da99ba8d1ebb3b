"""Files and folders every command writes: atomic, durable writes and run folders that are never clobbered.

`atomic_write` is the one writer: a temporary file with a unique name in the target's folder, fsync,
rename over the target, fsync of the folder. An interrupted write leaves the old file or the new one,
never half of either, and two processes never rename each other's temporary files into place.
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
from pathlib import Path

from .errors import DaxiaoError


def atomic_write(path: str | Path, data: bytes | str) -> Path:
    """Write `data` to `path` so that readers see the old file or the whole new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = data.encode() if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def atomic_write_json(path: str | Path, obj, indent: int | None = 2) -> Path:
    return atomic_write(path, json.dumps(obj, indent=indent, default=str))


def _fsync_dir(folder: Path) -> None:
    try:  # the rename itself is durable only once the folder's entry is on disk (POSIX)
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # some platforms cannot open folders; the rename is still atomic there
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def next_free(folder: Path, base: str, create: bool = False) -> Path:
    """`folder/base`, or `folder/base-2`, `-3` ... : the first that does not exist yet. With `create` the
    folder is made here, atomically (mkdir fails if it exists), so two processes starting at once never
    pick the same one."""
    n = 1
    while True:
        path = folder / (base if n == 1 else f"{base}-{n}")
        if not path.exists():
            if not create:
                return path
            folder.mkdir(parents=True, exist_ok=True)
            try:
                path.mkdir()
                return path
            except FileExistsError:  # another process took it just now
                pass
        n += 1


RUN_FIX = "choose another --name, or pass --exist-ok to replace its files, or --resume to continue it"


def check_new_folder(path: Path, exist_ok: bool, what: str = "Run folder", fix: str = RUN_FIX) -> Path:
    """Refuse to write into a non-empty `path` unless `exist_ok`, saying which flags would allow it."""
    if path.exists() and not path.is_dir():
        raise DaxiaoError(f"{what} {path} is a file; choose another --name.")
    if path.exists() and any(p.name != LOCK_NAME for p in path.iterdir()) and not exist_ok:
        raise DaxiaoError(f"{what} {path} exists; {fix}.")
    return path


def writable_dir(folder: Path, what: str, otherwise: str) -> Path:
    """`folder`, created if needed; one line naming it and the way out when it cannot be written.
    `what` names the folder ("feature cache"), `otherwise` the flag that avoids it ("--feature-cache memory")."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DaxiaoError(f"Cannot create the {what} directory {folder} ({e.strerror}); pass --cache-dir DIR "
                          f"somewhere writable, or {otherwise}.") from None
    if not os.access(folder, os.W_OK):
        raise DaxiaoError(f"The {what} directory {folder} is read-only; pass --cache-dir DIR somewhere writable, "
                          f"or {otherwise}.")
    return folder


def csv_safe(text: str) -> str:
    """A cell a spreadsheet shows as text: a leading = + - @ (a formula) gets a quote mark in front."""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


# ---- one process per folder ----------------------------------------------------------------------------
LOCK_NAME = ".lock"


class FolderLock:
    """An exclusive lock on a run or study folder, held while a process writes there.

    The lock is ``<folder>/.lock``: a kernel lock (``flock``) on it, which the kernel drops when the holder
    dies however it dies (SIGKILL, OOM killer, power loss), plus the holder's pid, host and command inside,
    for the message a second process prints. A lock file whose holder is gone is therefore simply taken over;
    the previous holder is named. Used as ``with FolderLock(run, "run"): ...``.
    """

    def __init__(self, folder: str | Path, what: str = "Run folder"):
        self.folder, self.what = Path(folder), what
        self.path = self.folder / LOCK_NAME
        self.fd: int | None = None
        self.took_over: dict | None = None  # the dead holder's record, when a stale lock was taken over

    def acquire(self) -> FolderLock:
        import fcntl

        self.folder.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                kernel_lock = True
            except OSError as e:
                if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):  # held by a live process
                    holder = _read_holder(fd)
                    os.close(fd)
                    raise DaxiaoError(f"{self.what} {self.folder} is in use by {_describe(holder)}; wait for it "
                                      "to finish, or stop it first (two processes writing one folder would mix "
                                      "their files).") from None
                kernel_lock = False  # a file system without flock: the pid and host inside decide
            # The file we locked may have been unlinked by a holder releasing it between our open and flock:
            # then the lock is on a dead inode, so open the path again.
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        old = _read_holder(fd)
        if old and old.get("pid") != os.getpid() and (old.get("host") != _host() or not kernel_lock) and _alive(old):
            # Another machine wrote this lock (a shared mount, where flock may be local only), or flock is
            # missing: we cannot be sure its process is gone, so refuse and say how to release it by hand.
            os.close(fd)
            raise DaxiaoError(f"{self.what} {self.folder} is locked by {_describe(old)}; if that process is gone, "
                              f"delete {self.path} and try again.")
        if old and old.get("pid") != os.getpid():
            self.took_over = old  # its holder died without releasing it (SIGKILL, OOM, power loss)
        record = {"pid": os.getpid(), "host": _host(), "command": " ".join(_argv())[:300]}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode(), 0)
        os.fsync(fd)
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)  # unlinked while still locked: nobody can lock this inode after us
        finally:
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _host() -> str:
    import socket

    return socket.gethostname()


def _argv() -> list[str]:
    import sys

    return [Path(sys.argv[0]).name, *sys.argv[1:]] if sys.argv and sys.argv[0] else []


def _read_holder(fd: int) -> dict | None:
    try:
        raw = os.pread(fd, 4096, 0)
        holder = json.loads(raw) if raw.strip() else None
    except (OSError, ValueError):
        return None
    return holder if isinstance(holder, dict) else None


def _alive(holder: dict) -> bool:
    """Whether the process named in a lock file still runs (only knowable on its own host)."""
    if holder.get("host") != _host():
        return True
    pid = holder.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _describe(holder: dict | None) -> str:
    if not holder:
        return "another process"
    cmd = f" ({holder['command']})" if holder.get("command") else ""
    return f"process {holder.get('pid')} on {holder.get('host')}{cmd}"
