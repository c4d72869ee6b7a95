"""Publishing a directory (an artifact, an index) so that readers see the old one or the new one, whole.

A build writes into a staging directory beside its target (same filesystem, so renames are atomic),
named ``.TARGET.building-PID-XXXX``; at the end every file and directory is fsynced, modes are set
from the umask (``mkdtemp`` creates 0700, and copied files keep their source's mode), and the staging
directory takes the target's place:

- Linux: one ``renameat2(RENAME_EXCHANGE)`` swaps the two directories, so at every instant the target
  path holds either the complete old or the complete new directory; the old one, now at the staging
  path, is then removed. A kill in between leaves only a stale staging directory.
- elsewhere (or a filesystem without RENAME_EXCHANGE): the old directory is renamed to
  ``.TARGET.old-PID`` and the new one renamed into place. A kill between the two renames leaves no
  target; the next build (or :func:`recover`) renames ``.old-PID`` back, so the previous directory
  is never lost.

We chose the exchange over a symlink swap (``TARGET -> .TARGET.v2``) because a symlink changes what
users see and copy (``cp -r``, ``rm -r``, ``du`` and bind mounts all treat it differently), while the
exchange keeps ``TARGET`` an ordinary directory.

Builds of one target are serialized by an exclusive ``flock`` on ``.TARGET.lock`` beside it: a second
concurrent build fails at once with a one-line error instead of racing the first to publish. Under
the lock, staging directories whose process is dead are removed.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from fastdpr.common.errors import FastDPRError

_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def current_umask() -> int:
    """The process umask, read without changing it (Linux ``/proc``), else by setting and restoring it."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode a new regular file gets under the umask (0644 under 022, 0600 under 077)."""
    return 0o666 & ~current_umask()


def dir_mode() -> int:
    """The mode a new directory gets under the umask (0755 under 022, 0700 under 077)."""
    return 0o777 & ~current_umask()


def fsync_directory(path: Path) -> None:
    """Make a directory's entries (renames, new files) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def finalize_tree(root: Path) -> None:
    """Give every file and directory below ``root`` (itself included) the umask's modes, and fsync them.

    Files first, directories after their contents, so that once the tree is renamed into place, a
    crash cannot leave it with names whose data never reached the disk.
    """
    fmode, dmode = file_mode(), dir_mode()
    for current, dirs, files in os.walk(root, topdown=False):
        for name in files:
            path = os.path.join(current, name)
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fchmod(fd, fmode)
                os.fsync(fd)
            finally:
                os.close(fd)
        for name in dirs:
            os.chmod(os.path.join(current, name), dmode)
        os.chmod(current, dmode)
        fsync_directory(Path(current))


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2 RENAME_EXCHANGE); False when unsupported here."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(a), None, str(b))


def _old_name(target: Path) -> Path:
    return target.parent / f".{target.name}.old-{os.getpid()}"


def publish(staging: Path, target: Path) -> None:
    """Put the finished ``staging`` directory at ``target`` (replacing what is there); see the module
    docstring for why a reader (or a kill) never sees a missing or half-published target."""
    finalize_tree(staging)
    if target.exists() and _exchange(staging, target):
        fsync_directory(target.parent)
        shutil.rmtree(staging, ignore_errors=True)  # now the previous directory
        return
    if target.exists():
        old = _old_name(target)
        os.replace(target, old)
        # A kill here leaves no target: recover() renames `old` back at the next build.
        os.replace(staging, target)
        fsync_directory(target.parent)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staging, target)
        fsync_directory(target.parent)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True


def _dead(path: Path, pattern: str) -> bool:
    """True unless ``path``'s name carries the pid of a live process (``pattern`` captures it). Names
    without a pid were left by fastdpr versions before pids were recorded: no build of theirs can be
    running under the lock."""
    match = re.search(pattern, path.name)
    return match is None or not _pid_alive(int(match.group(1)))


def recover(target: Path) -> None:
    """Undo what a killed publish or build of ``target`` left beside it.

    Called with the build lock held, so no other build of ``target`` is running: a ``.old-PID``
    directory is renamed back when the target is missing (killed between the two renames) and removed
    otherwise; ``.building-PID-*`` directories of dead processes are removed. (The sharded build's
    resumable ``.TARGET.building-sharded`` is not touched.)
    """
    parent = target.parent
    olds = sorted((p for p in parent.glob(f".{target.name}.old-*") if _dead(p, r"\.old-(\d+)$")),
                  key=lambda p: p.stat().st_mtime)
    if olds and not target.exists():
        newest = olds.pop()
        # Versions before this one moved the old directory to `.old-XXXX/previous`.
        os.replace(newest / "previous" if (newest / "previous").is_dir() else newest, target)
        fsync_directory(parent)
        olds.append(newest)
    for path in olds + [p for p in parent.glob(f".{target.name}.building-*")
                        if p.name != f".{target.name}.building-sharded" and _dead(p, r"\.building-(\d+)-")]:
        shutil.rmtree(path, ignore_errors=True)


@contextmanager
def build_lock(target: Path, error: type[FastDPRError]) -> Iterator[None]:
    """Hold an exclusive lock on building ``target`` (``flock`` on ``.TARGET.lock`` beside it).

    The kernel releases the lock when the process dies however it dies (a kill -9 leaves only the file,
    which the next build locks again). A finished build removes the file while it still holds the lock;
    a build that locked a file which was removed meanwhile sees that its inode is no longer the one at
    the path and tries again, so two builds can never hold locks on two different files.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    lock_path = target.parent / f".{target.name}.lock"
    while True:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise error(f"another build of {target} is running (pid {holder}); wait for it or stop it") from None
        try:
            same = os.stat(lock_path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # locked a file another build had just removed: lock the current one
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        yield
    finally:
        with contextlib.suppress(OSError):
            lock_path.unlink()
        os.close(fd)  # releases the lock


def make_staging(target: Path) -> Path:
    """A fresh staging directory beside ``target``, named with this process's pid (see :func:`recover`)."""
    return Path(tempfile.mkdtemp(prefix=f".{target.name}.building-{os.getpid()}-", dir=target.parent))


@contextmanager
def atomic_directory(target: Path, force: bool, error: type[FastDPRError]) -> Iterator[Path]:
    """Build a directory in a staging directory and publish it at ``target`` only when the block succeeds.

    Holds the build lock of ``target`` throughout; cleans what killed builds left (:func:`recover`);
    the staging directory is removed on any failure, Ctrl-C included. A kill -9 at any point leaves
    ``target`` as it was or complete.
    """
    target = Path(target)
    with build_lock(target, error):
        recover(target)
        if target.exists() and not force:
            raise error(f"{target} already exists; pass --force to overwrite it")
        staging = make_staging(target)
        try:
            yield staging
            publish(staging, target)
        except BaseException:
            with contextlib.suppress(OSError):
                shutil.rmtree(staging)
            raise
