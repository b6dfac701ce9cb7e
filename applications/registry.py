"""Model registry: lower-snake names -> builder functions with fixed defaults.

Example:

>>> from aw_keras import applications
>>> applications.list_models("aw_se_*")[:2]
['aw_se_mobilenet', 'aw_se_resnet101']
>>> model = applications.get_model("resnet_cifar", input_shape=(32, 32, 3), classes=10)
"""

import difflib
import fnmatch
import functools

_MODELS = {}
_TASKS = {}  # name -> "classification" | "detection_backbone"
TASKS = ("classification", "detection_backbone")


def register_model(name=None, **defaults):
    """Decorator registering a builder under ``name`` (default: the function's
    name in lower case) with keyword ``defaults``. Returns the function unchanged.

    Example:

    >>> @register_model("tiny_resnet", blocks=(1, 1, 1))
    ... def TinyResNet(**kwargs): ...
    """

    def decorator(fn):
        register_variant(name or fn.__name__.lower(), fn, **defaults)
        return fn

    return decorator


def register_variant(name, fn, task="classification", **defaults):
    """Registers ``fn`` with keyword ``defaults`` under ``name``; ``task`` is
    "classification" (an image classifier) or "detection_backbone" (an FPN
    backbone whose outputs are a feature pyramid)."""
    if not isinstance(name, str) or not name or name != name.lower():
        raise ValueError(f"Model names must be non-empty lower-case strings, got {name!r}.")
    if task not in TASKS:
        raise ValueError(f"`task` must be one of {TASKS}, got {task!r}.")
    if name in _MODELS and (_MODELS[name], _TASKS[name]) != ((fn, defaults), task):
        raise ValueError(f"A different model is already registered as {name!r}.")
    _MODELS[name] = (fn, defaults)
    _TASKS[name] = task


def list_models(pattern="*", task=None):
    """Sorted registered names matching the shell-style ``pattern`` (and ``task``
    when given: "classification" or "detection_backbone")."""
    if not isinstance(pattern, str):
        raise TypeError(f"`pattern` must be a string, got {pattern!r}.")
    if task is not None and task not in TASKS:
        raise ValueError(f"`task` must be None or one of {TASKS}, got {task!r}.")
    return sorted(n for n in _MODELS if fnmatch.fnmatchcase(n, pattern.lower())
                  and task in (None, _TASKS[n]))


def model_task(name):
    """The task of the registered model ``name`` (see `register_variant`)."""
    get_model_builder(name)  # raises for unknown names
    return _TASKS[name.lower()]


def is_model(name):
    return name in _MODELS


def get_model_builder(name):
    """The builder of ``name`` with its registered defaults bound (a partial)."""
    if not isinstance(name, str):
        raise TypeError(f"Model `name` must be a string, got {name!r}.")
    key = name.lower()
    if key not in _MODELS:
        close = difflib.get_close_matches(key, list(_MODELS), n=5, cutoff=0.5)
        hint = f" Close matches: {close}." if close else ""
        raise ValueError(
            f"Unknown model {name!r}.{hint} See aw_keras.applications.list_models() "
            f"for all {len(_MODELS)} registered names."
        )
    fn, defaults = _MODELS[key]
    return functools.partial(fn, **{"name": key, **defaults})


def get_model(model_name, /, **kwargs):
    """Builds the registered model ``model_name``; ``kwargs`` override the
    defaults (``include_top``, ``input_shape``, ``classes``, ``name``, ...)."""
    return get_model_builder(model_name)(**kwargs)
