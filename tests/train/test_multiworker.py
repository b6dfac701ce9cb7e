"""--strategy multiworker: two worker processes on 127.0.0.1 (TF_CONFIG) train a few
steps with MultiWorkerMirroredStrategy and end with identical weights."""

import json
import os
import socket
import subprocess

from train_helpers import TINY_KWARGS, subprocess_env, train_command


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def test_two_workers_on_loopback_finish_with_identical_weights(tmp_path, tiny_folder):
    out = str(tmp_path / "run")
    workers = [f"127.0.0.1:{port}" for port in _free_ports(2)]
    processes = []
    for index in range(2):
        tf_config = json.dumps({"cluster": {"worker": workers},
                                "task": {"type": "worker", "index": index}})
        command = train_command(
            "aw_resnet_cifar", "--dataset", f"folder:{tiny_folder}", "--epochs", "2",
            "--batch-size", "8", "--model-kwargs", TINY_KWARGS, "--strategy", "multiworker",
            "--attention-images", "0", "--verbose", "2", "--out", out)
        processes.append(subprocess.Popen(
            command, env=subprocess_env(TF_CONFIG=tf_config), stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True))
    outputs = []
    try:
        for process in processes:
            outputs.append(process.communicate(timeout=300)[0])
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
    for process, output in zip(processes, outputs):
        assert process.returncode == 0, output[-3000:]
    assert "2 replica(s)" in outputs[0]
    chief = json.load(open(os.path.join(out, "metrics.json")))
    worker = json.load(open(os.path.join(out, "workers", "worker-1", "worker.json")))
    assert chief["epochs"] == worker["epochs"] == 2
    assert chief["weights_sha256"] == worker["weights_sha256"]
    history = json.load(open(os.path.join(out, "history.json")))
    assert [h["epoch"] for h in history] == [1, 2]
    assert history[0]["train_steps"] == 4  # 32 images / global batch 8
