"""Cache entries that any number of processes may ask for at once.

A cache entry is one file or one directory at a fixed path (for example the
offline detection set ``~/.cache/aw_keras/fashion_detection/v1-seed0-...`` or
the fused kernel's ``~/.cache/aw_keras/aw_conv_op-<key>.so``). `get_or_build`
returns the path of a complete entry, building it first when there is none:

1. When the entry is complete, its path is returned at once (no lock).
2. Otherwise an exclusive lock (``fcntl.flock`` on ``.<name>.lock`` beside the
   entry) is taken; processes that find it held wait, with one log line.
3. Under the lock: completeness is checked again (another process may have
   just finished), temporaries of dead writers are removed, ``build(temp)``
   writes the entry into a fresh temporary sibling ``.<name>.tmp-<pid>-<hex>``,
   a directory entry gets its completeness marker (``.aw_keras_complete.json``,
   written last), and the temporary is renamed onto the path in one atomic step.

So the path holds either nothing or a complete entry; a process killed while
building leaves only its temporary, which the next builder removes (a writer
holds the lock while it builds, so a temporary seen under the lock belongs to a
dead writer; temporaries whose process is still alive are kept unless a day
old). The lock file stays (removing it would race with waiting processes).
Where ``fcntl`` is missing (not POSIX) builds may overlap; each builds its own
temporary and the first rename wins. ``$AW_KERAS_CACHE_DIR`` moves the cache
root (`cache_root`). Code whose entry is written by another library (e.g.
``keras.utils.get_file``, which downloads straight to its target) holds the
same lock with ``with cache.entry_lock(path): ...``.

Example::

    import json, os
    from aw_keras.utils import cache

    def build(temp):                      # writes the entry at `temp`
        os.makedirs(temp)
        with open(os.path.join(temp, "table.json"), "w") as handle:
            json.dump({"answer": 42}, handle)

    path = os.path.join(cache.cache_root(), "tables", "answer-v1")
    path = cache.get_or_build(path, build, key={"version": 1})

``key`` (any JSON value) is stored in a directory entry's marker; an entry
whose marker holds another key is refused with `CacheEntryError` instead of
being read.
"""

import contextlib
import json
import logging
import os
import shutil
import time
import uuid

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None

CACHE_ENV = "AW_KERAS_CACHE_DIR"
MARKER = ".aw_keras_complete.json"
STALE_SECONDS = 24 * 3600
logger = logging.getLogger("aw_keras")


class CacheEntryError(OSError):
    """A path holds something that is not a complete entry of the expected kind;
    the message names the path and says what to do."""


def cache_root():
    """The aw_keras cache directory: ``$AW_KERAS_CACHE_DIR`` when set, else
    ``$XDG_CACHE_HOME/aw_keras`` (``~/.cache/aw_keras`` when that is unset)."""
    if os.environ.get(CACHE_ENV):
        return os.path.abspath(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(os.path.abspath(base), "aw_keras")


def _check_path(path):
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"`path` must be a str or os.PathLike, got {type(path).__name__} "
                        f"{path!r}.")
    path = os.path.abspath(os.fspath(path))
    if not os.path.basename(path):
        raise ValueError(f"`path` must name a file or directory, got {path!r}.")
    return path


def _read_marker(path):
    try:
        with open(os.path.join(path, MARKER)) as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


def is_complete(path, key=None):
    """True when ``path`` is a complete entry: a file (files appear only by an
    atomic rename), or a directory holding the completeness marker for ``key``."""
    path = _check_path(path)
    if os.path.isfile(path):
        return True
    if not os.path.isdir(path):
        return False
    marker = _read_marker(path)
    return isinstance(marker, dict) and marker.get("key") == key


@contextlib.contextmanager
def entry_lock(path):
    """Hold the exclusive lock of the entry ``path`` (``.<name>.lock`` beside it;
    its directory is created). Without ``fcntl`` this does not lock."""
    path = _check_path(path)
    parent, name = os.path.split(path)
    os.makedirs(parent, exist_ok=True)
    if fcntl is None:  # pragma: no cover - not POSIX
        yield
        return
    with open(os.path.join(parent, f".{name}.lock"), "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            logger.warning("aw_keras: waiting for another process to finish writing %s", path)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return pid > 0
    return True


def _is_empty_directory(path):
    return os.path.isdir(path) and not os.path.islink(path) and not os.listdir(path)


def _remove(path):
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def remove_stale_temporaries(path, max_age=STALE_SECONDS):
    """Remove the temporaries ``.<name>.tmp-<pid>-*`` of the entry ``path`` whose
    writer process is gone or that are older than ``max_age`` seconds. Called
    under the entry's lock by `get_or_build`; returns the removed paths."""
    path = _check_path(path)
    parent, name = os.path.split(path)
    prefix = f".{name}.tmp-"
    removed = []
    try:
        entries = os.listdir(parent)
    except FileNotFoundError:
        return removed
    now = time.time()
    for entry in entries:
        if not entry.startswith(prefix):
            continue
        temp = os.path.join(parent, entry)
        pid_text = entry[len(prefix):].split("-", 1)[0]
        try:
            old = now - os.lstat(temp).st_mtime > max_age
        except FileNotFoundError:
            continue
        dead = pid_text.isdigit() and not _pid_alive(int(pid_text))
        if dead or old:
            _remove(temp)
            removed.append(temp)
    return removed


def get_or_build(path, build, key=None, complete_check=None):
    """The path of the complete entry ``path``, built by ``build`` when missing.

    ``build(temp)`` must create the entry at ``temp`` (a path that does not
    exist yet, in the same directory as ``path``): a file or a directory. It
    may raise; then nothing is left behind and the error propagates. ``key``
    (JSON) is recorded in a directory entry's marker and must match for the
    entry to count as complete. ``complete_check(path)``, when given, replaces
    `is_complete` as the test of an existing entry (e.g. to also accept entries
    written before markers existed). An existing ``path`` that is not complete
    and not an empty directory raises `CacheEntryError` (it was not written
    here; delete it and call again); an empty directory is replaced.
    Concurrent calls for the same path build once; see the module docstring.
    """
    path = _check_path(path)
    if not callable(build):
        raise TypeError(f"`build` must be callable as build(temp_path), got {build!r}.")
    try:
        json.dumps(key)
    except (TypeError, ValueError) as error:
        raise TypeError(f"`key` must be a JSON value, got {key!r} ({error}).") from None
    if complete_check is not None and not callable(complete_check):
        raise TypeError(f"`complete_check` must be callable as complete_check(path) or None, "
                        f"got {complete_check!r}.")
    complete = complete_check or (lambda p: is_complete(p, key))
    if complete(path):
        return path
    with entry_lock(path):
        if complete(path):
            return path
        if os.path.lexists(path) and not _is_empty_directory(path):
            raise CacheEntryError(
                f"{path!r} exists but is not a complete entry written by aw_keras "
                f"(no {MARKER} with this entry's key); delete it and call again.")
        remove_stale_temporaries(path)
        parent, name = os.path.split(path)
        temp = os.path.join(parent, f".{name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        try:
            build(temp)
            if not os.path.lexists(temp):
                raise CacheEntryError(f"`build` returned without writing the entry {temp!r} "
                                      f"for {path!r}.")
            if os.path.isdir(temp):
                with open(os.path.join(temp, MARKER), "w") as handle:
                    json.dump({"key": key}, handle, sort_keys=True)
                    handle.flush()
                    os.fsync(handle.fileno())
            try:
                os.rename(temp, path)
            except OSError:
                if not complete(path):  # without fcntl another process may have won
                    raise
        finally:
            if os.path.lexists(temp):
                _remove(temp)
    return path
