"""Runs a save or an export for tests/test_atomic.py, in a process of its own that the test
kills midway, and the helpers that watch it.

    python tests/atomic_worker.py save PATH             # ViT-B/16 (no weights) over PATH
    python tests/atomic_worker.py export MODEL PATH     # export_tflite(MODEL) over PATH
    python tests/atomic_worker.py hold PATH             # stays inside atomic.replacing(PATH)
"""

import os
import signal
import subprocess
import sys
import time


def start(*args, env=None):
    """Starts this script with `args` under the current interpreter; returns the Popen."""
    return subprocess.Popen([sys.executable, os.path.abspath(__file__), *args],
                            env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def kill_when(proc, ready, signum, timeout=600):
    """Sends `signum` to `proc` as soon as `ready()` holds; fails if it ends before."""
    deadline = time.time() + timeout
    while not ready():
        if proc.poll() is not None:
            raise AssertionError(f"The process ended (status {proc.returncode}) before it was "
                                 f"killed:\n{proc.stderr.read()[-3000:]}")
        if time.time() > deadline:
            proc.kill()
            raise AssertionError("The process never reached the point to kill it at.")
        time.sleep(0.005)
    children = descendants(proc.pid)
    proc.send_signal(signum)
    proc.wait(timeout=120)
    return children


def descendants(pid):
    """The ids of the processes under `pid` (from /proc)."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    parents[int(entry)] = int(f.read().rpartition(")")[2].split()[1])
            except (OSError, ValueError, IndexError):
                pass
    found, frontier = [], [pid]
    while frontier:
        children = [p for p, parent in parents.items() if parent in frontier]
        found += children
        frontier = children
    return found


def alive(pid):
    """Whether process `pid` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def wait_gone(pids, timeout=20):
    """The processes of `pids` still alive after up to `timeout` seconds."""
    deadline = time.time() + timeout
    while any(alive(p) for p in pids) and time.time() < deadline:
        time.sleep(0.05)
    return [p for p in pids if alive(p)]


def kill_all(pids):
    """SIGKILLs the processes of `pids` that this test started and that are still alive."""
    for pid in pids:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


def wait_for(condition, timeout=20):
    """Whether `condition()` holds within `timeout` seconds."""
    deadline = time.time() + timeout
    while not condition():
        if time.time() > deadline:
            return False
        time.sleep(0.05)
    return True


def files_under(folder):
    """{relative path: size} of every file under `folder`."""
    found = {}
    for root, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(root, name)
            try:
                found[os.path.relpath(path, folder)] = os.path.getsize(path)
            except OSError:
                pass
    return found


def main(argv):
    if argv[0] == "save":
        from keras_vit import ViT

        ViT.from_preset("b16", weights=None).save(argv[1])
    elif argv[0] == "export":
        from keras_vit import export

        export.export_tflite(argv[1], argv[2], overwrite=True)
    elif argv[0] == "hold":
        from keras_vit import atomic

        with atomic.replacing(argv[1]) as path:
            with open(path, "wb") as f:
                f.write(b"partial")
            time.sleep(600)
    else:
        raise SystemExit(f"unknown command {argv[0]!r}")


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    main(sys.argv[1:])
