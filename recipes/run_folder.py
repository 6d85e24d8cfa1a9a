"""A recipe's output folder and its bookkeeping: `run_files.json` (what the recipes wrote
there, so that a rerun replaces only those), starting over or resuming, `history.csv`
read back, JSON written atomically (`keras_vit.atomic`)."""

import csv
import json
from pathlib import Path

from keras_vit import atomic, checkpoints

RUN_FILES = "run_files.json"


def prepare_output_dir(output_dir, files, resume=True):
    """Checks that a run may write `files` (names in `output_dir`), then records them in
    `output_dir/run_files.json`, the list of what the recipes wrote there.

    An existing file that is not listed there (this code did not write it) is a
    ValueError, before anything is deleted or written. Without `resume`, deletes the
    resume checkpoint (`checkpoints.clear_resume_dir`: only what training wrote) and
    history.csv, so the run starts over.
    """
    output_dir = Path(output_dir)
    record = output_dir / RUN_FILES
    written = _read_run_files(record)
    for name in files:
        if (output_dir / name).exists() and name not in written:
            raise ValueError(
                f"{str(output_dir / name)!r} was not written by this recipe (it is not listed "
                f"in {RUN_FILES}), so it won't be replaced. Move it elsewhere, or use another "
                "--output-dir."
            )
    if not resume:
        checkpoints.clear_resume_dir(output_dir / "backup")
        if "history.csv" in written:
            (output_dir / "history.csv").unlink(missing_ok=True)
    output_dir.mkdir(parents=True, exist_ok=True)
    atomic.write_text(record, json.dumps({"files": sorted(written | set(files))}, indent=1) + "\n")


def _read_run_files(path):
    if not path.exists():
        return set()
    try:
        files = json.loads(path.read_text())["files"]
        valid = isinstance(files, list) and all(isinstance(name, str) for name in files)
    except (ValueError, KeyError, TypeError):
        valid = False
    if not valid:
        raise ValueError(
            f"{str(path)!r} is not the list of files a recipe writes there. Move it elsewhere, "
            "or use another --output-dir."
        )
    return set(files)


def read_history(path):
    """history.csv as {column: [float per epoch]} (an empty cell is NaN; columns that
    are not numbers are left out); {} when there is no such file."""
    if not Path(path).exists():
        return {}
    with open(path) as f:
        rows = list(csv.DictReader(f))
    history = {}
    for row in rows:
        for key, value in row.items():
            try:
                history.setdefault(key, []).append(float(value) if value != "" else float("nan"))
            except ValueError:
                pass
    return history


def write_json(path, obj):
    """`obj` as indented JSON, written atomically."""
    atomic.write_text(path, json.dumps(obj, indent=2) + "\n")
