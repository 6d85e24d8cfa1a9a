"""Resume checkpoints and logs of the recipes' training, each file replaced atomically
(`keras_vit.atomic`), so a kill at any moment leaves the last complete epoch's:

* `check_resume_dir`: a guard against resuming a different model or run.
* `clear_resume_dir`: deletes a checkpoint, and only the files training wrote there.
* `CheckedBackupAndRestore`: Keras's `BackupAndRestore`, with clear errors for a
  checkpoint it can't restore.
* `AtomicCSVLogger`: Keras's `CSVLogger`.
"""

import io
import json
import shutil
from pathlib import Path

import keras

from keras_vit import atomic

RUN_SIGNATURE = "run_signature.json"
# What Keras 3's `BackupAndRestore` writes in its directory (the `.bkp` copies with
# `double_checkpoint=True`).
CHECKPOINT_WEIGHTS = "latest.weights.h5"
CHECKPOINT_METADATA = "training_metadata.json"
RESUME_FILES = (RUN_SIGNATURE, CHECKPOINT_WEIGHTS, CHECKPOINT_METADATA,
                f"{CHECKPOINT_WEIGHTS}.bkp", f"{CHECKPOINT_METADATA}.bkp")


def _unusable_checkpoint(path, problem):
    return ValueError(
        f"Can't resume from {str(path)!r}: {problem}. A crash while it was being written "
        "can leave it cut short; start over with --no-resume, or use another --output-dir."
    )


def check_resume_dir(backup_dir, signature):
    """Raises a ValueError if `backup_dir` holds a checkpoint of a different run, or
    an unreadable signature.

    `signature` is a JSON-able dict (the model config, the optimiser, ...). A new
    directory gets the signature written into it.
    """
    backup_dir = Path(backup_dir)
    path = backup_dir / RUN_SIGNATURE
    signature = json.loads(json.dumps(signature))
    if path.exists():
        try:
            saved = json.loads(path.read_text())
        except ValueError as error:  # bad JSON or bad UTF-8
            raise _unusable_checkpoint(path, f"it is not valid JSON ({error})") from None
        if not isinstance(saved, dict):
            raise _unusable_checkpoint(path, "it is not a run signature (a JSON object)")
        if saved != signature:
            diffs = sorted(k for k in set(saved) | set(signature) if saved.get(k) != signature.get(k))
            detail = "; ".join(f"{k}: saved {saved.get(k)!r}, now {signature.get(k)!r}" for k in diffs)
            raise ValueError(
                f"The resume directory {str(backup_dir)!r} holds a checkpoint of a different "
                f"model or run ({detail}). Use another --output-dir, or --no-resume to start over."
            )
    elif backup_dir.exists() and any(backup_dir.iterdir()):
        raise ValueError(
            f"The resume directory {str(backup_dir)!r} is not empty but has no "
            f"{RUN_SIGNATURE}: it was not written by this training code. Move its files "
            "elsewhere, or use another --output-dir."
        )
    else:
        backup_dir.mkdir(parents=True, exist_ok=True)
        atomic.write_text(path, json.dumps(signature, indent=1, sort_keys=True))


def clear_resume_dir(backup_dir):
    """Deletes the checkpoint in `backup_dir` and the directory itself.

    Only the files that `check_resume_dir` and `BackupAndRestore` write are deleted, and
    the temporary folders `keras_vit.atomic` leaves after a kill: if the directory holds
    anything else, or has no run signature, a ValueError names what this code did not
    write, and nothing is deleted.
    """
    backup_dir = Path(backup_dir)
    if not backup_dir.exists():
        return
    names = sorted(p.name for p in backup_dir.iterdir())
    if names and RUN_SIGNATURE not in names:
        foreign = names
    else:
        foreign = [n for n in names if not (n in RESUME_FILES and (backup_dir / n).is_file()
                                            or atomic.is_temporary(n) and (backup_dir / n).is_dir())]
    if foreign:
        raise ValueError(
            f"Not deleting the resume directory {str(backup_dir)!r}: this training code did "
            f"not write {', '.join(foreign)}. Move that elsewhere, or use another --output-dir."
        )
    for name in names:
        if atomic.is_temporary(name):
            shutil.rmtree(backup_dir / name)
        else:
            (backup_dir / name).unlink()
    backup_dir.rmdir()


class CheckedBackupAndRestore(keras.callbacks.BackupAndRestore):
    """Keras's `BackupAndRestore` saving every epoch and keeping its checkpoint, but each
    file is replaced atomically (a kill leaves the last epoch's), and a checkpoint it can't
    restore (a file cut short, corrupt metadata) is a ValueError that names the file and
    suggests `--no-resume`."""

    def __init__(self, backup_dir):
        super().__init__(backup_dir, save_freq="epoch", delete_checkpoint=False)

    def on_epoch_end(self, epoch, logs=None):
        backup_dir = Path(self.backup_dir)
        backup_dir.mkdir(parents=True, exist_ok=True)
        with atomic.replacing(backup_dir / CHECKPOINT_WEIGHTS) as weights:
            self.model.save_weights(weights)
        atomic.write_text(backup_dir / CHECKPOINT_METADATA, json.dumps({"epoch": epoch + 1, "batch": 0}))

    def on_train_begin(self, logs=None):
        backup_dir = Path(self.backup_dir)
        metadata = backup_dir / CHECKPOINT_METADATA
        if metadata.exists():
            try:
                epoch = json.loads(metadata.read_text())["epoch"]
                valid = isinstance(epoch, int) and epoch >= 0
            except (ValueError, KeyError, TypeError):
                valid = False
            if not valid:
                raise _unusable_checkpoint(
                    metadata, 'it is not the JSON Keras writes there ({"epoch": N, "batch": M})')
        try:
            super().on_train_begin(logs)
        except Exception as error:  # noqa: BLE001 - h5py's and Keras's errors alike
            weights = backup_dir / CHECKPOINT_WEIGHTS
            if not weights.exists():
                raise
            raise _unusable_checkpoint(weights, error) from error


class _ReplacingFile(io.StringIO):
    """A text file's content in memory; each `flush` replaces the file atomically."""

    def __init__(self, path, text):
        super().__init__(text)
        self.seek(0, io.SEEK_END)
        self.path = path

    def flush(self):
        atomic.write_text(self.path, self.getvalue())


class AtomicCSVLogger(keras.callbacks.CSVLogger):
    """Keras's `CSVLogger`, but each epoch replaces the file atomically with its rows so
    far, so a kill never leaves a row cut short."""

    def on_train_begin(self, logs=None):
        path = Path(self.filename)
        text = path.read_bytes().decode() if self.append and path.exists() else ""
        self.append_header = not text
        self.csv_file = _ReplacingFile(path, text)
        self.writer = self.keys = None
