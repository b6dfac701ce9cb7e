"""Small wording helpers shared by the command-line tools' messages.

>>> count_phrase(1, "epoch"), count_phrase(3, "file"), count_phrase(None, "epoch")
('1 epoch', '3 files', '? epochs')
"""


def count_phrase(number, noun):
    """``number`` and ``noun`` in words: "1 epoch", "2 epochs" ("? epochs" when
    the number is unknown, None)."""
    if number is None:
        return f"? {noun}s"
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"
