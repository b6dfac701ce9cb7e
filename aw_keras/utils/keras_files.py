"""Checks on Keras files that the user passes in.

`check_keras_archive` tells a damaged ``.keras`` file (truncated, another format,
a zip without ``config.json``) from a missing one before Keras's loader reports
either as "File not found":

>>> from aw_keras.utils.keras_files import check_keras_archive
>>> check_keras_archive("runs/x/best.keras")                   # doctest: +SKIP
'runs/x/best.keras'
"""

import os
import zipfile


def check_keras_archive(path, what="model file"):
    """Checks that ``path`` is a Keras 3 ``.keras`` archive; returns ``path``.

    Raises ValueError naming the file and what is wrong with it when it is
    missing, not a zip file (truncated, partly copied, or another format) or a
    zip without the archive's ``config.json``, before Keras's loader reports
    such a file as "File not found". ``what`` names the file in the message
    (e.g. ``"--init-from file"``).

    >>> check_keras_archive("runs/x/best.keras")                   # doctest: +SKIP
    'runs/x/best.keras'
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"{what} {path!r} does not exist (or is not a file).")
    advice = "Save the model with model.save('name.keras') and pass that file."
    if not zipfile.is_zipfile(path):
        raise ValueError(
            f"{what} {path!r} is not a valid .keras archive: it is not a zip file "
            f"({os.path.getsize(path)} bytes; truncated, partly copied, or another format). "
            f"{advice}"
        )
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
    except (zipfile.BadZipFile, OSError) as error:
        raise ValueError(f"{what} {path!r} is not a valid .keras archive: {error}. {advice}") from None
    if "config.json" not in names:
        raise ValueError(
            f"{what} {path!r} is not a valid .keras archive: the zip file holds no config.json "
            f"(it holds {sorted(names)[:5]}{' ...' if len(names) > 5 else ''}). {advice}"
        )
    return path
