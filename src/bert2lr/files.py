"""Atomic writes, hashing and the line format of the splits."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from bert2lr.errors import UserError


@contextlib.contextmanager
def atomic_path(target: Path | str, directory: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling of `target`; rename it onto `target` only if the block succeeds.

    A killed or failing stage leaves either the old complete output or none, never half a file.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{target.name}.tmp-"
    if directory:
        tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=target.parent))
    else:
        fd, name = tempfile.mkstemp(prefix=prefix, dir=target.parent)
        os.close(fd)
        tmp = Path(name)
    try:
        yield tmp
        if directory:
            old = None
            if target.exists():
                old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
                os.replace(target, old / "x")
            os.replace(tmp, target)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        else:
            os.chmod(tmp, 0o644)
            os.replace(tmp, target)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise


def write_json(path: Path | str, obj) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def read_json(path: Path | str, what: str = "JSON file"):
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: {what} not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: {what} is not valid JSON ({exc})") from None


def sha256_file(path: Path | str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_tree(path: Path | str) -> str:
    """One hash over a folder's relative file names and contents."""
    path = Path(path)
    if path.is_file():
        return sha256_file(path)
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(file.relative_to(path).as_posix().encode() + b"\0")
        digest.update(sha256_file(file).encode() + b"\n")
    return digest.hexdigest()


def write_reviews(path: Path | str, reviews: Iterable[dict]) -> int:
    """Write reviews as JSON Lines (one {"id", "text"[, "label"]} per line), atomically."""
    n = 0
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for review in reviews:
            f.write(json.dumps(review, ensure_ascii=False) + "\n")
            n += 1
    return n


def read_reviews(path: Path | str, need_labels: bool = False) -> list[dict]:
    """Read a split; an empty split or a malformed line is a UserError naming the line."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: split not found (run `dvc repro prepare`)")
    reviews = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            try:
                review = json.loads(line)
            except json.JSONDecodeError:
                raise UserError(f"{path}:{lineno}: not a JSON object") from None
            if not isinstance(review, dict) or not isinstance(review.get("id"), str) \
                    or not isinstance(review.get("text"), str):
                raise UserError(f"{path}:{lineno}: expected an object with string 'id' and 'text'")
            if need_labels and review.get("label") not in (0, 1):
                raise UserError(f"{path}:{lineno}: expected 'label' 0 or 1, got {review.get('label')!r}")
            reviews.append(review)
    if not reviews:
        raise UserError(f"{path}: the split is empty")
    return reviews


def write_logits(path: Path | str, ids: list[str], logits: np.ndarray) -> None:
    """Cache logits with the ids of their reviews, row for row."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, ids=np.array(ids), logits=np.asarray(logits, dtype=np.float32))


def read_logits(path: Path | str, ids: list[str] | None = None) -> np.ndarray:
    """Read cached logits; if `ids` is given, check they are the cached reviews, in order."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            cached_ids, logits = npz["ids"], npz["logits"]
    except FileNotFoundError:
        raise UserError(f"{path}: teacher logits not found (run `dvc repro logits`)") from None
    except (ValueError, KeyError, OSError) as exc:
        raise UserError(f"{path}: not a teacher-logits file ({exc})") from None
    if ids is not None and (len(ids) != len(cached_ids) or any(a != b for a, b in zip(ids, cached_ids))):
        raise UserError(f"{path}: its review ids do not match the split; rerun `dvc repro logits`")
    return logits
