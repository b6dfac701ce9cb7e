"""Atomic, verifiable training checkpoints.

A checkpoint is a directory ``ckpt-<global step>/`` holding the model weights
(``model.weights.h5``), the optimizer variables (``optimizer.npz``), the training
state (``state.json``: completed epochs, step inside the epoch, history) and a
``MANIFEST.json`` with the size and SHA-256 of each file. It is written into a
hidden temporary directory, fsync'ed, then renamed into place: a ``kill -9`` at
any moment leaves either the complete checkpoint or a temporary directory that the
next run deletes. On restore, a checkpoint whose manifest is missing or whose
files do not match it (truncated, corrupt) is renamed ``*.corrupt`` and the
previous one is used, with a message.
"""

import hashlib
import json
import os
import re
import shutil

import numpy as np

FILES = ("model.weights.h5", "optimizer.npz", "state.json")
_NAME = re.compile(r"^ckpt-(\d{9})$")
_TMP_PREFIX = ".tmp-"


class CorruptCheckpoint(Exception):
    pass


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_text(path, text):
    """Writes ``text`` to ``path`` via a temporary file, fsync and rename."""
    directory = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(directory, f"{_TMP_PREFIX}{os.path.basename(path)}.{os.getpid()}")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync(directory)


def atomic_write_json(path, obj):
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def remove_stale_temporaries(directory):
    """Deletes temporaries a killed run left in ``directory`` (ours only)."""
    if not os.path.isdir(directory):
        return []
    removed = []
    for name in os.listdir(directory):
        if name.startswith(_TMP_PREFIX):
            path = os.path.join(directory, name)
            shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
            removed.append(name)
    return removed


class CheckpointManager:
    """Saves and restores (model, optimizer, state) in ``directory``."""

    def __init__(self, directory, keep=3, log=print):
        self.directory = directory
        self.keep = max(1, int(keep))
        self.log = log

    def checkpoints(self):
        """Valid-looking checkpoint names, oldest first."""
        if not os.path.isdir(self.directory):
            return []
        names = [n for n in os.listdir(self.directory) if _NAME.match(n)]
        return sorted(names, key=lambda n: int(_NAME.match(n).group(1)))

    def save(self, model, optimizer, state):
        step = int(state["global_step"])
        os.makedirs(self.directory, exist_ok=True)
        remove_stale_temporaries(self.directory)
        final = os.path.join(self.directory, f"ckpt-{step:09d}")
        tmp = os.path.join(self.directory, f"{_TMP_PREFIX}ckpt-{step:09d}.{os.getpid()}")
        os.makedirs(tmp)
        model.save_weights(os.path.join(tmp, "model.weights.h5"))
        values = {f"v{i:04d}": np.asarray(v.numpy()) for i, v in enumerate(optimizer.variables)}
        with open(os.path.join(tmp, "optimizer.npz"), "wb") as f:
            np.savez(f, **values)
        with open(os.path.join(tmp, "state.json"), "w") as f:
            json.dump(state, f, indent=1, sort_keys=True)
        manifest = {}
        for name in FILES:
            path = os.path.join(tmp, name)
            _fsync(path)
            manifest[name] = {"bytes": os.path.getsize(path), "sha256": _sha256(path)}
        with open(os.path.join(tmp, "MANIFEST.json"), "w") as f:
            json.dump(manifest, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        _fsync(tmp)
        if os.path.exists(final):  # same step saved twice (epoch end == step save)
            shutil.rmtree(final)
        os.rename(tmp, final)
        _fsync(self.directory)
        for old in self.checkpoints()[:-self.keep]:
            shutil.rmtree(os.path.join(self.directory, old), ignore_errors=True)
        return final

    def verify(self, name):
        """Raises CorruptCheckpoint unless every file matches the manifest."""
        path = os.path.join(self.directory, name)
        try:
            with open(os.path.join(path, "MANIFEST.json")) as f:
                manifest = json.load(f)
        except (OSError, ValueError) as error:
            raise CorruptCheckpoint(f"unreadable MANIFEST.json ({error})") from error
        for file in FILES:
            entry = manifest.get(file)
            full = os.path.join(path, file)
            if entry is None or not os.path.isfile(full):
                raise CorruptCheckpoint(f"{file} is missing")
            size = os.path.getsize(full)
            if size != entry["bytes"]:
                raise CorruptCheckpoint(f"{file} has {size} bytes, expected {entry['bytes']} "
                                        "(truncated?)")
            if _sha256(full) != entry["sha256"]:
                raise CorruptCheckpoint(f"{file} does not match its SHA-256 (corrupt)")

    def _load(self, name, model, optimizer):
        path = os.path.join(self.directory, name)
        self.verify(name)
        with open(os.path.join(path, "state.json")) as f:
            state = json.load(f)
        try:
            model.load_weights(os.path.join(path, "model.weights.h5"))
            with np.load(os.path.join(path, "optimizer.npz")) as values:
                saved = [values[k] for k in sorted(values.files)]
        except Exception as error:  # noqa: BLE001 - h5py/numpy raise many types
            raise CorruptCheckpoint(f"cannot load ({type(error).__name__}: {error})") from error
        variables = optimizer.variables
        if len(saved) != len(variables) or any(
                tuple(s.shape) != tuple(v.shape) for s, v in zip(saved, variables)):
            raise CorruptCheckpoint(
                f"optimizer state has {len(saved)} variables, the optimizer has "
                f"{len(variables)} (a different model or optimizer?)")
        for variable, value in zip(variables, saved):
            variable.assign(value)
        return state

    def restore_latest(self, model, optimizer):
        """Loads the newest intact checkpoint; returns its state, or None."""
        for name in reversed(self.checkpoints()):
            try:
                state = self._load(name, model, optimizer)
            except CorruptCheckpoint as error:
                bad = os.path.join(self.directory, name)
                os.rename(bad, bad + ".corrupt")
                self.log(f"[aw-train] checkpoint {name} is corrupt: {error}. Renamed it to "
                         f"{name}.corrupt and trying the previous checkpoint.")
                continue
            self.log(f"[aw-train] resumed from {os.path.join(self.directory, name)} "
                     f"(epoch {state['epoch']}, step {state['step_in_epoch']} of that epoch).")
            return state
        return None
