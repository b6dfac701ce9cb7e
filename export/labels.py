"""Class names that travel with exported models: ``labels.txt`` (one name per
line, line i = the name of label i).

``aw-train`` records the names of a run's classes in its ``run.json`` (top-level
key ``"class_names"``, next to ``best.keras`` / ``last.keras``); `aw-export`
reads them there, or from a ``--class-names`` file, checks that there is one
name per class of the model and writes ``labels.txt`` next to the artifacts
(and into a SavedModel's ``assets.extra/``).

>>> names = class_names_from_run("runs/x/best.keras")            # doctest: +SKIP
>>> check_class_names(model, names)                             # doctest: +SKIP
>>> write_labels("exported/labels.txt", names)                  # doctest: +SKIP
"""

import json
import os

LABELS_FILE = "labels.txt"
RUN_FILE = "run.json"


def read_labels(path):
    """The class names in a labels file: one per line, line i = label i.

    Surrounding whitespace of a line is ignored, and so are trailing empty
    lines; an empty name before the last one, a duplicate name or an empty file
    raise ValueError naming the file and the line."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"class names file {path!r} does not exist (or is not a file).")
    with open(path, encoding="utf-8") as handle:
        lines = [line.strip() for line in handle.read().splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    return validate_class_names(lines, f"class names file {path!r}")


def validate_class_names(names, source="class_names"):
    """``names`` as a new list of str after checking it: a non-empty list of
    distinct, non-empty strings without line breaks; ValueError naming
    ``source`` otherwise."""
    if isinstance(names, (str, bytes)) or not isinstance(names, (list, tuple)):
        raise ValueError(f"{source} must be a list of class names (label i = name i), "
                         f"received {type(names).__name__}: {names!r:.200}.")
    if not names:
        raise ValueError(f"{source} holds no class names; expected one name per class.")
    seen = {}
    for index, name in enumerate(names):
        if not isinstance(name, str) or not name.strip() or "\n" in name or "\r" in name:
            raise ValueError(f"{source}: the name of label {index} is {name!r}; expected a "
                             "non-empty string on one line.")
        if name in seen:
            raise ValueError(f"{source}: labels {seen[name]} and {index} are both named "
                             f"{name!r}; class names must be distinct.")
        seen[name] = index
    return list(names)


def class_names_from_run(model_path):
    """The ``"class_names"`` of the ``run.json`` next to ``model_path`` (the
    directory ``aw-train`` writes ``best.keras`` / ``last.keras`` into), or None
    when there is no such file or it has no such key. A ``run.json`` that is not
    JSON, or whose names are not a list of distinct strings, raises ValueError."""
    run_file = os.path.join(os.path.dirname(os.path.abspath(os.fspath(model_path))), RUN_FILE)
    if not os.path.isfile(run_file):
        return None
    try:
        with open(run_file, encoding="utf-8") as handle:
            record = json.load(handle)
    except (OSError, ValueError) as error:
        raise ValueError(f"{run_file!r} next to the model is not readable JSON: {error}.") from None
    if not isinstance(record, dict) or record.get("class_names") is None:
        return None
    return validate_class_names(record["class_names"], f"\"class_names\" in {run_file!r}")


def class_count(model):
    """The number of classes a model tells apart: K of a detector (its labels
    0..K-1), the size of the last axis of a single-output classifier; None when
    neither applies."""
    from aw_keras.export import detection

    if detection.is_two_stage_detector(model):
        return int(model.num_classes)
    if detection.is_detector(model):
        return int(detection.DetectionDecoder.get(model).num_classes)
    outputs = getattr(model, "outputs", None) or []
    if len(outputs) != 1:
        return None
    size = outputs[0].shape[-1]
    return None if size is None else int(size)


def check_class_names(model, names, source="class_names"):
    """Raises ValueError unless ``names`` holds one name per class of ``model``
    (`class_count`); returns the number of classes (None when the model's
    number of classes is unknown, and nothing is checked)."""
    names = validate_class_names(names, source)
    count = class_count(model)
    if count is not None and len(names) != count:
        raise ValueError(
            f"{source} holds {len(names)} class names, but {getattr(model, 'name', 'the model')!r} "
            f"has {count} classes (labels 0..{count - 1}); expected one name per class."
        )
    return count


def write_labels(path, names):
    """Writes ``names`` to ``path`` (one per line, line i = label i), atomically;
    returns ``path``."""
    from aw_keras.export import common

    names = validate_class_names(names)
    with common.atomic_path(path) as temp:
        with open(temp, "w", encoding="utf-8") as handle:
            handle.write("".join(f"{name}\n" for name in names))
    return os.fspath(path)


def write_saved_model_labels(saved_model_dir, names):
    """Writes ``names`` as ``<saved_model_dir>/assets.extra/labels.txt`` (TF
    Serving's folder for files that travel with a model without being loaded
    by its graph); returns that path."""
    directory = os.path.join(os.fspath(saved_model_dir), "assets.extra")
    os.makedirs(directory, exist_ok=True)
    return write_labels(os.path.join(directory, LABELS_FILE), names)
