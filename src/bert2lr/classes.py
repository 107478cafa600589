"""The class names, indexed by label id: what the data, the teacher's config, the reports and the
predictions call each class.

CLASS_NAMES are IMDB's, the default data set's. prepare writes the names of the data actually used
to data/splits/classes.json (IMDB's there too); the stages read them from it with read_classes, and
the models carry them on (the teacher's id2label, the student's model file).
"""

from __future__ import annotations

import json
import reprlib
from pathlib import Path

from bert2lr.errors import UserError

CLASS_NAMES = ("neg", "pos")


def read_classes(path: Path | str) -> tuple[str, ...]:
    """The class names of classes.json: a JSON list of 2 or more distinct, non-empty strings."""
    path = Path(path)
    try:
        names = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: class names not found (run `dvc repro prepare`)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(names, list) or len(names) < 2 or not all(isinstance(n, str) and n for n in names) \
            or len(set(names)) != len(names):
        raise UserError(f"{path}: {reprlib.repr(names)}; expected a list of 2 or more distinct, non-empty class names")
    return tuple(names)
