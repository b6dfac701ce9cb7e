"""scripts/write_digits_folder.py: the folder appears only complete, a killed
run's temporary is removed by the next run, and a second run keeps the folder."""

import importlib.util
import os
import subprocess
import sys

import pytest

pytest.importorskip("sklearn")

SCRIPT = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "scripts", "write_digits_folder.py")


def _script():
    spec = importlib.util.spec_from_file_location("write_digits_folder", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _pngs(root):
    return {split: sum(len(files) for _, _, files in os.walk(os.path.join(root, split)))
            for split in ("train", "val", "test")}


def test_rerun_keeps_the_folder_and_a_killed_runs_temporary_is_removed(tmp_path, capsys):
    script = _script()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    leftover = tmp_path / f".digits.tmp-{dead.pid}-abcd"
    (leftover / "train" / "3").mkdir(parents=True)  # what a killed run leaves
    out = tmp_path / "digits"

    assert script.main([str(out)]) == 0
    assert capsys.readouterr().out.startswith(f"wrote {out}: train 1078, val 359, test 360")
    assert _pngs(out) == {"train": 1078, "val": 359, "test": 360}
    assert [e for e in os.listdir(tmp_path) if ".tmp-" in e] == []
    stamp = os.path.getmtime(out / "train" / "0")

    assert script.main([str(out)]) == 0
    assert capsys.readouterr().out.startswith(f"kept the existing {out}: train 1078")
    assert os.path.getmtime(out / "train" / "0") == stamp

    with pytest.raises(SystemExit) as exit_info:
        script.main([str(out), "--seed", "1"])
    assert exit_info.value.code == 2
    assert "`out` " in capsys.readouterr().err
    with pytest.raises(ValueError, match="`seed` must be an integer >= 0, got -1"):
        script.write_digits_folder(tmp_path / "other", seed=-1)
    assert not (tmp_path / "other").exists()
