"""Atomic replacement of files and folders: a kill at any moment leaves the old one or the
new one under the final name, never a partial one.

    with atomic.replacing("model.keras") as tmp:   # tmp: same name, in a new hidden folder
        model.save(tmp)                            # beside the final path
    atomic.write_text("metrics.json", text)

The new file or folder is written under a temporary name in the destination's folder (so
the rename stays on one file system), flushed to disk (fsync), then renamed into place
(`os.replace`; a folder is swapped in with one `renameat2(RENAME_EXCHANGE)` on Linux).
The temporary folder, and what it held, is removed on every exit path that runs Python
code: an exception, Ctrl-C, and SIGTERM, which raises `SystemExit(143)` while a block runs
(in the main thread, where SIGTERM has its default action), so that the clean-ups of the
block (`finally`, `with`) run too. After a SIGKILL a hidden `.NAME.*.tmp` folder may be left.
"""

import contextlib
import ctypes
import errno
import os
import shutil
import signal
import tempfile
import threading

TEMPORARY_SUFFIX = ".tmp"
_RENAME_EXCHANGE = 2  # linux/fs.h
_AT_FDCWD = -100


def is_temporary(name):
    """Whether a file or folder name is one that `replacing` creates."""
    return name.startswith(".") and name.endswith(TEMPORARY_SUFFIX)


@contextlib.contextmanager
def replacing(path, overwrite=True):
    """Yields a temporary path with `path`'s base name, in a new hidden folder beside
    `path`; when the block ends without an exception, what was written there (a file or a
    folder) replaces `path` atomically. The temporary folder is always removed, SIGTERM
    included (`_exit_on_sigterm`). With `overwrite=False`, an existing `path` is a
    FileExistsError."""
    path = os.path.abspath(os.fspath(path))
    if not overwrite and os.path.lexists(path):
        raise FileExistsError(f"{path!r} already exists; pass overwrite=True to replace it.")
    folder, name = os.path.split(path)
    with _exit_on_sigterm():
        stage = tempfile.mkdtemp(prefix=f".{name}.", suffix=TEMPORARY_SUFFIX, dir=folder)
        try:
            staged = os.path.join(stage, name)
            yield staged
            _publish(staged, path)
        finally:
            shutil.rmtree(stage, ignore_errors=True)


def _publish(staged, path):
    """Moves the file or folder `staged` to `path` (same file system) once it is on disk:
    a file replaces `path`; a folder is exchanged with a folder at `path`, which then lies
    beside `staged` (for the caller to delete)."""
    if not os.path.lexists(staged):
        raise FileNotFoundError(f"Nothing was written to {staged!r}, so {path!r} is unchanged.")
    _sync_tree(staged)
    if os.path.isdir(staged) and os.path.isdir(path) and not os.path.islink(path):
        _exchange(staged, path)
    else:
        os.replace(staged, path)
    _fsync(os.path.dirname(path))


def write_bytes(path, data):
    """Writes `data` to `path` atomically."""
    with replacing(path) as tmp, open(tmp, "wb") as f:
        f.write(data)


def write_text(path, text):
    """Writes `text` (UTF-8) to `path` atomically."""
    write_bytes(path, text.encode("utf-8"))


@contextlib.contextmanager
def _exit_on_sigterm():
    """While the block runs (in the main thread, where SIGTERM still has its default
    action), SIGTERM raises `SystemExit(143)`, so `finally` clauses and `with` exits run."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)
    if previous is not signal.SIG_DFL:
        yield
        return

    def terminate(signum, frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _exchange(new, old):
    """Swaps two folders in one step (Linux renameat2), or else in two renames."""
    try:
        rename = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        rename = None
    if rename is not None:
        if rename(_AT_FDCWD, os.fsencode(new), _AT_FDCWD, os.fsencode(old), _RENAME_EXCHANGE) == 0:
            return
        error = ctypes.get_errno()
        if error not in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
            raise OSError(error, os.strerror(error), old)
    os.rename(old, new + ".old")
    os.rename(new, old)


def _sync_tree(path):
    """fsyncs a file, or every file and folder under a folder."""
    if not os.path.isdir(path) or os.path.islink(path):
        _fsync(path)
        return
    for root, _, names in os.walk(path):
        for name in names:
            _fsync(os.path.join(root, name))
        _fsync(root)


def _fsync(path):
    if os.path.islink(path):
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
