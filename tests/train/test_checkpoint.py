"""CheckpointManager: atomic save, exact restore, corrupt/truncated fallback."""

import os

import keras
import numpy as np

from aw_keras.train.checkpoint import CheckpointManager
from aw_keras.train.checkpoint import remove_stale_temporaries
from aw_keras.optimizers import SGDL2


def _model(seed):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4), keras.layers.Dense(2)])
    model.compile(optimizer=SGDL2(0.1, momentum=0.9, l2=1e-3), loss="mse")
    model.optimizer.build(model.trainable_variables)
    return model


def _train(model, steps):
    x = np.random.default_rng(1).normal(size=(8, 3)).astype("float32")
    y = np.zeros((8, 2), "float32")
    for _ in range(steps):
        model.train_on_batch(x, y)


def test_save_restore_roundtrip_and_corrupt_fallback(tmp_path):
    messages = []
    manager = CheckpointManager(str(tmp_path / "ckpt"), keep=2, log=messages.append)
    model = _model(0)
    snapshots = {}
    for step in (3, 6, 9):
        _train(model, 3)
        manager.save(model, model.optimizer, {"epoch": step // 3, "step_in_epoch": 0,
                                              "global_step": step, "history": []})
        snapshots[step] = ([w.numpy().copy() for w in model.weights],
                           [v.numpy().copy() for v in model.optimizer.variables])
    assert manager.checkpoints() == ["ckpt-000000006", "ckpt-000000009"]  # keep=2

    fresh = _model(1)
    state = manager.restore_latest(fresh, fresh.optimizer)
    assert state["global_step"] == 9
    for a, b in zip(snapshots[9][0], fresh.weights):
        np.testing.assert_array_equal(a, b.numpy())
    for a, b in zip(snapshots[9][1], fresh.optimizer.variables):
        np.testing.assert_array_equal(a, b.numpy())  # momentum and iterations too
    assert int(fresh.optimizer.iterations.numpy()) == 9

    # Truncate the newest weights file: detected, set aside, previous one used.
    path = tmp_path / "ckpt" / "ckpt-000000009" / "model.weights.h5"
    path.write_bytes(path.read_bytes()[:100])
    fresh = _model(2)
    state = manager.restore_latest(fresh, fresh.optimizer)
    assert state["global_step"] == 6
    assert any("ckpt-000000009 is corrupt" in m and "truncated" in m for m in messages)
    assert os.path.isdir(tmp_path / "ckpt" / "ckpt-000000009.corrupt")
    for a, b in zip(snapshots[6][0], fresh.weights):
        np.testing.assert_array_equal(a, b.numpy())

    # A flipped byte (same size) is caught by the checksum.
    path = tmp_path / "ckpt" / "ckpt-000000006" / "optimizer.npz"
    blob = bytearray(path.read_bytes())
    blob[-10] ^= 0xFF
    path.write_bytes(bytes(blob))
    assert manager.restore_latest(_model(3), _model(3).optimizer) is None
    assert any("SHA-256" in m for m in messages)


def test_killed_writes_leave_only_removable_temporaries(tmp_path):
    directory = tmp_path / "ckpt"
    directory.mkdir()
    (directory / ".tmp-ckpt-000000004.123").mkdir()
    (directory / ".tmp-ckpt-000000004.123" / "model.weights.h5").write_bytes(b"half")
    (directory / "unrelated.txt").write_text("keep")
    manager = CheckpointManager(str(directory))
    assert manager.checkpoints() == []
    assert remove_stale_temporaries(str(directory)) == [".tmp-ckpt-000000004.123"]
    assert sorted(os.listdir(directory)) == ["unrelated.txt"]


def test_sgdl2_adds_coupled_l2_before_momentum():
    variable = keras.Variable(np.array([2.0], "float32"))
    optimizer = SGDL2(0.1, momentum=0.0, l2=0.5)
    optimizer.apply_gradients([(np.array([1.0], "float32"), variable)])
    # w - lr * (g + l2 * w) = 2 - 0.1 * (1 + 1) = 1.8
    np.testing.assert_allclose(variable.numpy(), [1.8], rtol=1e-6)
    restored = SGDL2.from_config(optimizer.get_config())
    assert restored.l2 == 0.5
