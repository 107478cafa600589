"""Atomic writes, hashing and the line format of the splits."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np

from bert2lr.errors import UserError


# Leftovers carry the writer's pid (".model.npz.tmp-1234-k3j9"), so that a later writer removes
# only those of processes that are gone and never the files of one still writing.
_LEFTOVER = re.compile(r"\.(?P<name>.+)\.(?P<kind>tmp|old)-(?P<pid>\d+)-[^.]+$")
_RENAME_EXCHANGE = 2  # linux/fs.h
_AT_FDCWD = -100
# A test-only hook: the writer stops at this named point (see tests/test_files.py), so that a test
# can kill it there for real.
# The teacher stage's record of how it was made, read by lineage (a name, here so that the teacher
# stage does not import lineage and rerun whenever the lineage record changes).
TEACHER_CARD = "training.json"
PAUSE_ENV = "BERT2LR_ATOMIC_PAUSE_AT"
NO_EXCHANGE_ENV = "BERT2LR_ATOMIC_NO_EXCHANGE"  # test-only: take the fallback path of other systems


def _renameat2_exchange() -> Callable[[Path, Path], bool] | None:
    """Linux's renameat2(RENAME_EXCHANGE) from libc, or None where libc lacks it."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return None
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    renameat2.restype = ctypes.c_int

    def exchange(a: Path, b: Path) -> bool:
        """Swap a and b in one step; False where the kernel or filesystem cannot."""
        if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
            return True
        err = ctypes.get_errno()
        if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
            return False
        raise OSError(err, os.strerror(err), str(a), None, str(b))

    return exchange


_exchange = _renameat2_exchange() if sys.platform.startswith("linux") else None


def _pause(point: str) -> None:
    if os.environ.get(PAUSE_ENV) == point:
        print(f"bert2lr: paused at {point}", file=sys.stderr, flush=True)
        while True:
            time.sleep(60)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def clean_leftovers(target: Path | str) -> None:
    """Undo what a killed writer of `target` left: put a stranded old output back, remove temporaries."""
    target = Path(target)
    if not target.parent.is_dir():
        return
    for entry in target.parent.iterdir():
        match = _LEFTOVER.match(entry.name)
        if not match or match["name"] != target.name or _alive(int(match["pid"])):
            continue
        if match["kind"] == "old" and not os.path.lexists(target):
            # Killed between moving the old output aside and moving the new one in: the old one
            # is complete, so it goes back.
            os.replace(entry, target)
        else:
            _remove(entry)


@contextlib.contextmanager
def atomic_path(target: Path | str, directory: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling of `target`; move it onto `target` only if the block succeeds.

    `target` holds the old complete output or the new one at every instant, also when the writer is
    killed: folders are swapped with renameat2(RENAME_EXCHANGE) where Linux offers it; elsewhere the
    old folder is moved aside first, and a writer killed between the two renames has it put back by
    the next one. What a killed writer leaves is removed by the next writer of the same target.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    clean_leftovers(target)
    prefix = f".{target.name}.tmp-{os.getpid()}-"
    if directory:
        tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=target.parent))
    else:
        fd, name = tempfile.mkstemp(prefix=prefix, dir=target.parent)
        os.close(fd)
        tmp = Path(name)
    try:
        yield tmp
        _pause("written")
        if directory:
            os.chmod(tmp, 0o755)
            _swap_directory(tmp, target)
        else:
            os.chmod(tmp, 0o644)
            os.replace(tmp, target)
    except BaseException:
        _remove(tmp)
        raise


def _swap_directory(new: Path, target: Path) -> None:
    if not os.path.lexists(target):
        os.rename(new, target)
        return
    if _exchange is not None and not os.environ.get(NO_EXCHANGE_ENV) and _exchange(new, target):
        _pause("exchanged")
        _remove(new)  # it now holds the old output
        return
    old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-{os.getpid()}-", dir=target.parent))
    os.replace(target, old)  # an empty folder is replaced by the old output
    _pause("moved-aside")
    os.replace(new, target)
    _remove(old)


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


def file_digest(path: Path | str, algorithm: str = "sha256") -> str:
    """The hex digest of a file's bytes: the one hashing helper (fetch checks md5 with it too)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, algorithm).hexdigest()


def sha256_manifest(folder: Path | str) -> dict[str, str]:
    """{relative path: sha256} of every file under a folder, sorted by path."""
    folder = Path(folder)
    return {file.relative_to(folder).as_posix(): file_digest(file)
            for file in sorted(p for p in folder.rglob("*") if p.is_file())}


def sha256_tree(path: Path | str, files: list[Path] | None = None) -> str:
    """One hash over a folder's relative file names and contents (of a file: its sha256); `files`:
    only these files of the folder (the shards a student learned from, not a stale one beside them)."""
    path = Path(path)
    if path.is_file():
        return file_digest(path)
    manifest = sha256_manifest(path) if files is None else \
        {Path(file).relative_to(path).as_posix(): file_digest(file) for file in sorted(files)}
    digest = hashlib.sha256()
    for name, file_hash in manifest.items():
        digest.update(name.encode() + b"\0")
        digest.update(file_hash.encode() + b"\n")
    return digest.hexdigest()


def logits_digest(path: Path | str, n_reviews: int) -> str:
    """The sha256 of a logits file, or of the shards of a folder of logits that hold the first n_reviews rows."""
    path = Path(path)
    return sha256_tree(path, logits_shards(path, n_reviews) if path.is_dir() else None)


def write_reviews(path: Path | str, reviews: Iterable[dict]) -> int:
    """Write reviews as JSON Lines (one {"id", "text"[, "label"]} per line), atomically."""
    n = 0
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for review in reviews:
            f.write(json.dumps(review, ensure_ascii=False) + "\n")
            n += 1
    return n


def shard_name(shard: int, suffix: str) -> str:
    """A shard's file name in its folder: 0.jsonl, 1.jsonl, ... (the logits@k stage's k)."""
    return f"{shard}{suffix}"


def review_shards(folder: Path | str) -> list[Path]:
    """The shard files of a split written as a folder, in shard order: 0.jsonl, 1.jsonl, ... with no gap
    and nothing else (prepare writes the folder whole)."""
    folder = Path(folder)
    names = sorted(p.name for p in folder.iterdir())
    expected = sorted(shard_name(k, ".jsonl") for k in range(len(names)))
    if not names or names != expected:
        raise UserError(f"{folder}: holds {', '.join(names[:5]) or 'nothing'}{' ...' if len(names) > 5 else ''}; "
                        "expected the shards 0.jsonl, 1.jsonl, ... that `dvc repro prepare` writes")
    return [folder / shard_name(k, ".jsonl") for k in range(len(names))]


def read_reviews(path: Path | str, need_labels: bool = False, n_classes: int = 2,
                 allow_empty: bool = False) -> list[dict]:
    """Read a split, a JSON Lines file or a folder of shards (0.jsonl, 1.jsonl, ...) read in shard order;
    an empty split, a malformed line or an id twice is a UserError naming the file and line.

    need_labels: every review must have a label, a class index 0 .. n_classes - 1.
    allow_empty: an empty file is no reviews, not an error (the transfer set's sentences, when
    short_texts.n_transfer_sentences is 0).
    """
    path = Path(path)
    if path.is_dir():
        reviews, where = [], {}
        for shard in review_shards(path):
            for lineno, review in enumerate(_read_review_file(shard, need_labels, n_classes), 1):
                if review["id"] in where:
                    raise UserError(f"{shard}:{lineno}: id {review['id']!r} already at {where[review['id']]}; "
                                    "expected each review once")
                where[review["id"]] = f"{shard}:{lineno}"
                reviews.append(review)
        return reviews
    return _read_review_file(path, need_labels, n_classes, allow_empty)


def _read_review_file(path: Path, need_labels: bool, n_classes: int, allow_empty: bool = False) -> list[dict]:
    if not path.is_file():
        raise UserError(f"{path}: split not found (run `dvc repro prepare`)")
    reviews = []
    first_line: dict[str, int] = {}
    with open(path, "rb") as f:  # bytes, decoded line by line, so that bad UTF-8 is named by its line
        for lineno, raw in enumerate(f, 1):
            try:
                review = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError as exc:
                raise UserError(f"{path}:{lineno}: not UTF-8 text ({exc.reason} at byte {exc.start + 1} of the line)") from None
            except json.JSONDecodeError:
                raise UserError(f"{path}:{lineno}: not a JSON object") from None
            if not isinstance(review, dict) or not isinstance(review.get("id"), str) \
                    or not isinstance(review.get("text"), str):
                raise UserError(f"{path}:{lineno}: expected an object with string 'id' and 'text'")
            label = review.get("label")
            # bool is an int subclass and True == 1: only the integers 0 and 1 are labels.
            if need_labels and (type(label) is not int or not 0 <= label < n_classes):
                expected = "0 or 1" if n_classes == 2 else f"an integer from 0 to {n_classes - 1}"
                raise UserError(f"{path}:{lineno}: expected 'label' {expected}, got {label!r}")
            if review["id"] in first_line:
                raise UserError(
                    f"{path}:{lineno}: id {review['id']!r} already on line {first_line[review['id']]}; "
                    "expected each review once"
                )
            first_line[review["id"]] = lineno
            reviews.append(review)
    if not reviews and not allow_empty:
        raise UserError(f"{path}: the split is empty")
    return reviews


def write_logits(path: Path | str, ids: list[str], logits: np.ndarray) -> None:
    """Cache logits, one row of K >= 2 class logits per review, with the ids of their reviews, row for row."""
    # C order: columns picked out of a classifier's (a view in Fortran order) would save to other
    # bytes for the same values, and DVC would rerun everything downstream for nothing.
    logits = np.ascontiguousarray(logits, dtype=np.float32)
    if logits.ndim != 2 or logits.shape[0] != len(ids) or logits.shape[1] < 2:
        raise ValueError(f"logits of shape {logits.shape} for {len(ids)} review ids; "
                         f"expected ({len(ids)}, K) with K >= 2 classes")
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        # dtype=str: an empty list would otherwise be saved as floats.
        np.savez(f, ids=np.array(ids, dtype=str), logits=logits)


def logits_shards(folder: Path | str, n_reviews: int) -> list[Path]:
    """The shard files 0.npz, 1.npz, ... of a folder of logits that hold the first n_reviews rows.

    Shards past them are left alone: a shard of a once larger transfer set stays in the workspace
    until DVC's garbage collection, and is not part of this one.
    """
    return [shard for shard, _, _ in _read_logits_shards(Path(folder), n_reviews, None)]


def _read_logits_shards(folder: Path, n_reviews: int | None,
                        n_classes: int | None) -> list[tuple[Path, np.ndarray, np.ndarray]]:
    """(path, ids, logits) of each shard that holds the first n_reviews rows (all shards for None),
    each read once, through the checked reader: a cut shard is one line, not a traceback."""
    if n_reviews is None:
        return [(shard, *_read_logits_file(shard, n_classes))
                for shard in (folder / shard_name(k, ".npz") for k in range(len(list(folder.glob("*.npz")))))]
    parts, rows = [], 0
    while rows < n_reviews:
        shard = folder / shard_name(len(parts), ".npz")
        if not shard.is_file():
            raise UserError(f"{shard}: teacher logits not found; expected {n_reviews} rows in {folder}'s shards "
                            f"and found {rows} (run `dvc repro logits@{len(parts)}`)")
        shard_ids, shard_logits = _read_logits_file(shard, n_classes)
        parts.append((shard, shard_ids, shard_logits))
        rows += len(shard_ids)
    return parts


def read_logits(path: Path | str, ids: list[str] | None = None, n_classes: int | None = None) -> np.ndarray:
    """Read cached logits, an (n, K) float array; if `ids` is given, check they are the cached reviews, in order;
    if `n_classes` is, that K is it. A folder of shards (0.npz, 1.npz, ...) is read in shard order, as
    many shards as hold the ids (all of them without ids).

    Anything else (a truncated or foreign file, pickled objects, another shape, NaN or inf) is a
    UserError: the student would otherwise fit to it silently.
    """
    path = Path(path)
    if path.is_dir():
        parts = _read_logits_shards(path, None if ids is None else len(ids), n_classes)
        cached_ids = [i for _, shard_ids, _ in parts for i in shard_ids.tolist()]
        logits = np.concatenate([shard_logits for _, _, shard_logits in parts]) if parts else \
            np.zeros((0, n_classes or 2), dtype=np.float32)
        if ids is not None and cached_ids != list(ids):
            raise UserError(f"{path}: the review ids of its shards do not match the split; rerun `dvc repro logits`")
        return logits
    cached_ids, logits = _read_logits_file(path, n_classes)
    if ids is not None and (len(ids) != len(cached_ids) or any(a != b for a, b in zip(ids, cached_ids))):
        raise UserError(f"{path}: its review ids do not match the split; rerun `dvc repro logits`")
    return logits


def read_transfer_sentences(sentences: Path | str | None, sentence_logits: Path | str | None,
                            n_classes: int | None = None) -> tuple[list[dict], np.ndarray | None]:
    """The transfer set's sentences and their teacher logits (the sentences and transfer_sentence_logits
    stages), ids checked row for row; ([], None) where there are none (no file, or an empty one)."""
    extra = [] if sentences is None else read_reviews(sentences, allow_empty=True)
    return extra, (read_logits(sentence_logits, [r["id"] for r in extra], n_classes) if extra else None)


def transfer_texts(unlabeled: Path | str, teacher_logits: Path | str, n_classes: int | None = None,
                   sentences: Path | str | None = None,
                   sentence_logits: Path | str | None = None) -> Iterator[tuple[list[str], np.ndarray]]:
    """What a student learns from, shard by shard: (texts, teacher logits) of each transfer-set shard
    (`read_transfer_shards`), then of the transfer set's sentences as one more shard, if any."""
    for shard, logits in read_transfer_shards(unlabeled, teacher_logits, n_classes):
        yield [r["text"] for r in shard], logits
    extra, extra_logits = read_transfer_sentences(sentences, sentence_logits, n_classes)
    if extra:
        yield [r["text"] for r in extra], extra_logits


def read_transfer_shards(reviews: Path | str, teacher_logits: Path | str,
                         n_classes: int | None = None) -> Iterator[tuple[list[dict], np.ndarray]]:
    """The transfer set shard by shard, (reviews, their logits), one shard in memory at a time: each
    review shard k with logits shard k, ids checked row for row and across shards (as `read_reviews`
    and `read_logits` check them). A split that is one file is one shard."""
    reviews, teacher_logits = Path(reviews), Path(teacher_logits)
    if not reviews.is_dir():
        shard_reviews = _read_review_file(reviews, False, 2)
        yield shard_reviews, read_logits(teacher_logits, [r["id"] for r in shard_reviews], n_classes)
        return
    if not teacher_logits.is_dir():
        raise UserError(f"{teacher_logits}: expected a folder of teacher-logits shards for the shards of {reviews}")
    seen: set[str] = set()
    for k, shard in enumerate(review_shards(reviews)):
        shard_reviews = _read_review_file(shard, False, 2)
        ids = [r["id"] for r in shard_reviews]
        if not seen.isdisjoint(ids):
            repeated = next(i for i in ids if i in seen)
            raise UserError(f"{shard}: id {repeated!r} is in an earlier shard too; expected each review once")
        seen.update(ids)
        logits_file = teacher_logits / shard_name(k, ".npz")
        if not logits_file.is_file():
            raise UserError(f"{logits_file}: teacher logits not found (run `dvc repro logits@{k}`)")
        cached_ids, shard_logits = _read_logits_file(logits_file, n_classes)
        if cached_ids.tolist() != ids:
            raise UserError(f"{logits_file}: its review ids do not match {shard}'s; rerun `dvc repro logits@{k}`")
        yield shard_reviews, shard_logits


def _read_logits_file(path: Path, n_classes: int | None) -> tuple[np.ndarray, np.ndarray]:
    """(ids, logits) of one logits file, checked."""
    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise ValueError("a single .npy array, not an .npz archive")
        with loaded as npz:
            cached_ids, logits = npz["ids"], npz["logits"]
    except FileNotFoundError:
        raise UserError(f"{path}: teacher logits not found (run `dvc repro logits`)") from None
    except (ValueError, KeyError, OSError, EOFError, zipfile.BadZipFile) as exc:
        # allow_pickle=False makes an object array a ValueError; a cut file is BadZipFile or EOFError.
        raise UserError(f"{path}: not a teacher-logits file ({exc}); expected an .npz with 'ids' and 'logits'") \
            from None
    if cached_ids.ndim != 1 or cached_ids.dtype.kind != "U":
        raise UserError(f"{path}: 'ids' is a {cached_ids.dtype} array of shape {cached_ids.shape}; "
                        "expected one string per review")
    want = "K >= 2" if n_classes is None else str(n_classes)
    if logits.ndim != 2 or logits.shape[1] < 2 or logits.dtype.kind != "f" \
            or (n_classes is not None and logits.shape[1] != n_classes):
        raise UserError(f"{path}: 'logits' is a {logits.dtype} array of shape {logits.shape}; "
                        f"expected floats of shape (n, {want})" + ("" if n_classes is None else
                        f", one logit per class of classes.json (rerun `dvc repro teacher logits`)"))
    if len(logits) != len(cached_ids):
        raise UserError(f"{path}: {len(logits)} rows of logits for {len(cached_ids)} review ids; expected one each")
    finite = np.isfinite(logits).all(axis=1)
    if not finite.all():
        row = int(np.argmin(finite))
        raise UserError(f"{path}: row {row} ({cached_ids[row]}) holds {logits[row].tolist()}; expected finite logits")
    return cached_ids, logits
