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
block (`finally`, `with`) run too. A SIGKILL runs no Python code: for that, every temporary
folder is also registered with a small reaper process (started once per process, on first
use), which removes those still registered when this process ends, however it ends (it reads
a pipe from this process and acts at end of file). `temporary_folder` gives the same promise
to a plain temporary folder (e.g. the export worker's).
"""

import atexit
import contextlib
import ctypes
import errno
import os
import shutil
import signal
import subprocess
import sys
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
    with _exit_on_sigterm(), temporary_folder(
            prefix=f".{name}.", suffix=TEMPORARY_SUFFIX, dir=folder) as stage:
        staged = os.path.join(stage, name)
        yield staged
        _publish(staged, path)


@contextlib.contextmanager
def temporary_folder(prefix=None, suffix=None, dir=None):
    """`tempfile.mkdtemp`'s folder for the block, removed when it ends, and by the reaper
    process if this process is killed (SIGKILL included) before that."""
    folder = tempfile.mkdtemp(prefix=prefix, suffix=suffix, dir=dir)
    _REAPER.register(folder)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        _REAPER.unregister(folder)


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


# The reaper: reads "+HEX" / "-HEX" lines (a folder registered / unregistered, its path in
# hex) from its stdin; at end of file (this process ended) it waits a moment for our own
# subprocesses to die (the export worker gets SIGKILL with us) and removes the folders still
# registered. It ignores Ctrl-C and runs in a session of its own, so it outlives us only by
# that moment.
_REAPER_CODE = r"""
import os, shutil, signal, time
signal.signal(signal.SIGINT, signal.SIG_IGN)
folders, pending = set(), b""
while True:
    chunk = os.read(0, 65536)
    if not chunk:
        break
    *lines, pending = (pending + chunk).split(b"\n")
    for line in lines:
        path = os.fsdecode(bytes.fromhex(line[1:].decode()))
        folders.add(path) if line[:1] == b"+" else folders.discard(path)
if folders:
    time.sleep(0.5)
    for attempt in range(3):
        for path in folders:
            shutil.rmtree(path, ignore_errors=True)
        if not any(os.path.lexists(p) for p in folders):
            break
        time.sleep(0.5)
"""


def _reaper_line(op, folder):
    return op + os.fsencode(folder).hex().encode() + b"\n"


class _Reaper:
    """This process's reaper (started on first use, again after a fork or if it died)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._folders = set()
        self._proc = None
        os.register_at_fork(after_in_child=self._forget)
        atexit.register(self._stop)

    def register(self, folder):
        with self._lock:
            self._folders.add(folder)
            self._send(b"+", folder)

    def unregister(self, folder):
        with self._lock:
            self._folders.discard(folder)
            self._send(b"-", folder)

    def _send(self, op, folder):
        line = _reaper_line(op, folder)
        for _ in range(2):
            if self._proc is None or self._proc.poll() is not None:
                self._start()
            if self._proc is None:  # no interpreter to run it: the block's clean-up only
                return
            try:
                os.write(self._proc.stdin.fileno(), line)
                return
            except OSError:  # it died: start another, which gets the whole set
                self._proc = None

    def _start(self):
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-I", "-S", "-c", _REAPER_CODE], stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        except OSError:
            self._proc = None
            return
        for folder in self._folders:
            os.write(self._proc.stdin.fileno(), _reaper_line(b"+", folder))

    def _forget(self):
        """In a forked child: the parent's reaper and folders are the parent's."""
        self._lock = threading.Lock()
        self._folders = set()
        if self._proc is not None:
            self._proc.stdin.close()
            self._proc.returncode = 0  # the parent's child: not ours to wait for
        self._proc = None

    def _stop(self):
        """At exit: end of file for the reaper, which then removes what is left."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.stdin.close()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass


_REAPER = _Reaper()


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
