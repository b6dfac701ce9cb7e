"""aw_keras.utils.cache: entries that several processes ask for at once are built
once and appear only complete; a writer killed with SIGKILL leaves nothing that is
read as complete, and the next call rebuilds and removes its temporary.

The worker processes load ``aw_keras/utils/cache.py`` by its path (it imports
nothing of aw_keras), so they start in a fraction of a second."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from aw_keras.utils import cache

CACHE_FILE = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "aw_keras", "utils", "cache.py")

# argv: cache root, entry name, go file, build log, seconds the build sleeps
WORKER = textwrap.dedent("""
    import importlib.util, json, os, sys, time
    spec = importlib.util.spec_from_file_location("cache", sys.argv[1])
    cache = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cache)
    name, go, log, pause = sys.argv[2], sys.argv[3], sys.argv[4], float(sys.argv[5])
    while not os.path.exists(go):
        time.sleep(0.005)

    def build(temp):
        with open(log, "a") as handle:
            handle.write(f"{os.getpid()}\\n")
        os.makedirs(os.path.join(temp, "part"))
        with open(os.path.join(temp, "part", "first.txt"), "w") as handle:
            handle.write("first")
        time.sleep(pause)
        with open(os.path.join(temp, "second.txt"), "w") as handle:
            handle.write(str(os.getpid()))

    path = cache.get_or_build(os.path.join(cache.cache_root(), name), build, key={"v": 1})
    print(json.dumps({"path": path, "files": sorted(os.listdir(path))}))
""")


def _start(tmp_path, name, pause, count):
    env = dict(os.environ, AW_KERAS_CACHE_DIR=str(tmp_path / "root"))
    return [subprocess.Popen([sys.executable, "-c", WORKER, CACHE_FILE, name,
                              str(tmp_path / "go"), str(tmp_path / "builds.log"), str(pause)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
            for _ in range(count)]


def _temporaries(directory):
    return [entry for entry in os.listdir(directory) if ".tmp-" in entry]


def test_three_processes_at_once_build_one_complete_entry(tmp_path):
    workers = _start(tmp_path, "entry", pause=0.5, count=3)
    (tmp_path / "go").write_text("")
    results = []
    for worker in workers:
        out, err = worker.communicate(timeout=60)
        assert worker.returncode == 0, err[-2000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    entry = str(tmp_path / "root" / "entry")
    assert [r["path"] for r in results] == [entry] * 3
    assert all(r["files"] == sorted([cache.MARKER, "part", "second.txt"]) for r in results)
    assert len((tmp_path / "builds.log").read_text().split()) == 1  # built once
    assert _temporaries(tmp_path / "root") == []
    assert cache.is_complete(entry, {"v": 1})
    assert not cache.is_complete(entry, {"v": 2})


def test_a_writer_killed_mid_build_leaves_nothing_complete_and_the_next_call_rebuilds(
        tmp_path):
    (tmp_path / "go").write_text("")
    [worker] = _start(tmp_path, "entry", pause=60, count=1)
    root = tmp_path / "root"
    deadline = time.time() + 30
    while not (root.is_dir() and any((root / t / "part" / "first.txt").exists()
                                     for t in _temporaries(root))):
        assert worker.poll() is None, worker.communicate()[1][-2000:]
        assert time.time() < deadline, "the worker never started building"
        time.sleep(0.01)
    worker.send_signal(signal.SIGKILL)
    worker.wait(timeout=30)
    entry = str(root / "entry")
    assert not os.path.exists(entry) and not cache.is_complete(entry, {"v": 1})
    assert len(_temporaries(root)) == 1  # what the killed writer left

    built = []

    def build(temp):
        built.append(temp)
        os.makedirs(temp)
        with open(os.path.join(temp, "data.txt"), "w") as handle:
            handle.write("complete")

    assert cache.get_or_build(entry, build, key={"v": 1}) == entry
    assert len(built) == 1
    assert sorted(os.listdir(entry)) == [cache.MARKER, "data.txt"]
    assert _temporaries(root) == []
    assert cache.get_or_build(entry, build, key={"v": 1}) == entry  # reused
    assert len(built) == 1


def test_a_failing_build_leaves_nothing_and_file_entries_work(tmp_path):
    entry = tmp_path / "lib.so"

    def broken(temp):
        with open(temp, "w") as handle:
            handle.write("half")
        raise RuntimeError("compiler failed")

    with pytest.raises(RuntimeError, match="compiler failed"):
        cache.get_or_build(entry, broken)
    assert not entry.exists() and _temporaries(tmp_path) == []

    def build(temp):
        with open(temp, "w") as handle:
            handle.write("library")

    assert cache.get_or_build(entry, build) == str(entry)
    assert entry.read_text() == "library" and _temporaries(tmp_path) == []


def test_foreign_entries_are_refused_and_empty_directories_replaced(tmp_path):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "x.txt").write_text("user data")

    def build(temp):
        os.makedirs(temp)

    with pytest.raises(cache.CacheEntryError, match="'.*foreign' exists but is not a complete"):
        cache.get_or_build(foreign, build)
    assert (foreign / "x.txt").read_text() == "user data"  # untouched
    other_key = tmp_path / "other"
    cache.get_or_build(other_key, build, key=1)
    with pytest.raises(cache.CacheEntryError):
        cache.get_or_build(other_key, build, key=2)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cache.get_or_build(empty, build) == str(empty)
    assert cache.is_complete(empty)


def test_only_temporaries_of_dead_or_day_old_writers_are_removed(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    entry = tmp_path / "entry"
    gone = tmp_path / f".entry.tmp-{dead.pid}-aaaa"
    running = tmp_path / f".entry.tmp-{os.getpid()}-bbbb"
    old = tmp_path / f".entry.tmp-{os.getpid()}-cccc"
    other = tmp_path / f".other.tmp-{dead.pid}-dddd"
    for path in (gone, running, old, other):
        path.mkdir()
    two_days_ago = time.time() - 2 * 24 * 3600
    os.utime(old, (two_days_ago, two_days_ago))
    removed = cache.remove_stale_temporaries(entry)
    assert sorted(removed) == sorted([str(gone), str(old)])
    assert sorted(os.listdir(tmp_path)) == sorted([running.name, other.name])


def test_cache_root_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("AW_KERAS_CACHE_DIR", str(tmp_path / "mine"))
    assert cache.cache_root() == str(tmp_path / "mine")
    monkeypatch.delenv("AW_KERAS_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache.cache_root() == str(tmp_path / "xdg" / "aw_keras")


def test_bad_arguments_name_the_argument(tmp_path):
    with pytest.raises(TypeError, match="`path` must be a str or os.PathLike, got int 3"):
        cache.get_or_build(3, lambda temp: None)
    with pytest.raises(TypeError, match="`build` must be callable"):
        cache.get_or_build(tmp_path / "x", "not callable")
    with pytest.raises(TypeError, match="`key` must be a JSON value"):
        cache.get_or_build(tmp_path / "x", lambda temp: None, key=object())
    with pytest.raises(cache.CacheEntryError, match="`build` returned without writing"):
        cache.get_or_build(tmp_path / "x", lambda temp: None)
    assert not (tmp_path / "x").exists()
