"""Stage: read the IMDB archive (or a table of your own) and sample the labeled, unlabeled and test
splits; write the class names by label id beside them (classes.json), which every later stage reads."""

from __future__ import annotations

import gzip
import logging
import re
import tarfile
import zlib
from pathlib import Path

import numpy as np
from tqdm import tqdm

from bert2lr.classes import CLASS_NAMES
from bert2lr.errors import UserError
from bert2lr.files import atomic_path, shard_name, write_json, write_reviews
from bert2lr.params import DataParams, SplitParams
from bert2lr.tables import TableSpec, read_table, split_table

log = logging.getLogger(__name__)

_MEMBER = re.compile(r"^(?:\./)?aclImdb/(train|test)/(pos|neg|unsup)/([^/]+)$")
_NAME = re.compile(r"^(\d+)_(\d+)\.txt$")
_BREAK = re.compile(r"<br\s*/?>", re.IGNORECASE)
_RATINGS = {"pos": range(7, 11), "neg": range(1, 5), "unsup": range(0, 1)}
SPLITS = ("labeled", "unlabeled", "test", "test_full")
CLASSES_FILE = "classes.json"  # the class names by label id, a JSON list, beside the splits


def clean(text: str) -> str:
    """Replace the HTML line breaks IMDB reviews carry with spaces."""
    return _BREAK.sub(" ", text).strip()


class _TrackedStream:
    """The decompressed tar stream as tarfile reads it, remembering the last bytes handed out.

    tarfile takes a header it cannot parse after the first one for the end of the archive and
    stops quietly, so the block where it stopped must be checked to be the end-of-archive
    marker; this keeps that block without reading (or, in a gzip stream, seeking) back.
    """

    def __init__(self, raw):
        self.raw = raw
        self.position = raw.tell()
        self.last = b""
        self.last_at = self.position

    def read(self, size: int = -1) -> bytes:
        self.last_at = self.position
        self.last = self.raw.read(size)
        self.position += len(self.last)
        return self.last

    def seek(self, offset: int, whence: int = 0) -> int:
        self.position = self.raw.seek(offset, whence)
        return self.position

    def tell(self) -> int:
        return self.position


def _check_end(archive: Path, stream: _TrackedStream, end: int) -> None:
    """After the last member, only the end-of-archive marker may follow: zero blocks (two at
    least) to the end of the stream; reading to the end makes gzip check its CRC and length."""
    position = stream.tell()
    if not stream.last_at <= end <= stream.last_at + len(stream.last) == position:
        raise UserError(f"{archive}: not a readable tar archive (cannot locate its end at byte {end})")
    rest = stream.last[end - stream.last_at:]
    zeros = 0
    while rest:
        if rest.count(0) != len(rest):
            at = end + zeros + len(rest) - len(rest.lstrip(b"\0"))
            what = "a damaged tar header" if zeros == 0 else "data after the end-of-archive marker"
            raise UserError(f"{archive}: not a readable tar archive ({what} at byte {at}); fetch it again")
        zeros += len(rest)
        rest = stream.raw.read(1 << 20)
    if zeros < 2 * tarfile.BLOCKSIZE:
        raise UserError(
            f"{archive}: not a readable tar archive (it ends at byte {end} without the end-of-archive "
            "marker: truncated); fetch it again"
        )


def read_archive(archive: Path, with_unsup: bool) -> dict[str, list[dict]]:
    """Return the reviews of each folder ("train/pos", ...), keyed by id, from either layout.

    The whole .tar.gz is checked: gzip's CRC and length, every header, the end-of-archive
    marker, and that no review appears twice (a later member would silently replace it).
    """
    folders: dict[str, list[dict]] = {}
    seen: set[str] = set()
    wanted = {"train/pos", "train/neg", "test/pos", "test/neg"} | ({"train/unsup"} if with_unsup else set())
    if not archive.is_file():
        raise UserError(f"{archive}: archive not found (run `dvc repro fetch`)")
    try:
        with gzip.open(archive, "rb") as raw, tqdm(desc="read archive", unit=" reviews") as bar:
            stream = _TrackedStream(raw)
            with tarfile.open(fileobj=stream, mode="r:") as tar:
                for member in tar:
                    match = _MEMBER.match(member.name)
                    if not match or not member.isfile():
                        continue  # README, vocab, .feat files, folders
                    half, folder, name = match.groups()
                    key = f"{half}/{folder}"
                    if f"{key}/{name}" in seen:
                        raise UserError(
                            f"{archive}: {member.name}: appears twice in the archive; expected each review once"
                        )
                    seen.add(f"{key}/{name}")
                    if key not in wanted:
                        continue
                    name_match = _NAME.match(name)
                    if not name_match or int(name_match.group(2)) not in _RATINGS[folder]:
                        raise UserError(
                            f"{archive}: {member.name}: malformed review name; expected ID_RATING.txt "
                            f"with a rating in {_RATINGS[folder].start}..{_RATINGS[folder].stop - 1}"
                        )
                    raw_text = tar.extractfile(member).read()
                    try:
                        text = raw_text.decode("utf-8")
                    except UnicodeDecodeError as exc:
                        raise UserError(f"{archive}: {member.name}: not UTF-8 text ({exc.reason})") from None
                    review = {"id": f"{key}/{name[:-4]}", "text": clean(text)}
                    if folder != "unsup":
                        review["label"] = CLASS_NAMES.index(folder)
                    folders.setdefault(key, []).append(review)
                    bar.update()
                _check_end(archive, stream, tar.offset)
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        # gzip.BadGzipFile (an OSError) for a wrong CRC or length, trailing garbage or no gzip
        # at all; EOFError for a stream cut short.
        raise UserError(f"{archive}: not a readable tar archive ({exc}); fetch it again") from None
    for half in ("train", "test"):
        if not any(k.startswith(half + "/") for k in folders):
            raise UserError(f"{archive}: no aclImdb/{half}/pos or aclImdb/{half}/neg reviews found")
    for reviews in folders.values():
        reviews.sort(key=lambda r: r["id"])  # independent of the archive's member order
    return folders


def sample_splits(folders: dict[str, list[dict]], p: SplitParams) -> dict[str, list[dict]]:
    """Draw disjoint seeded samples; growing a size keeps the smaller sample as a prefix."""
    rng = np.random.default_rng(p.seed)
    train = folders.get("train/pos", []) + folders.get("train/neg", [])
    test = folders.get("test/pos", []) + folders.get("test/neg", [])
    if p.n_labeled > len(train):
        raise UserError(f"split.n_labeled={p.n_labeled} is larger than the {len(train)} labeled train reviews")
    if p.n_test > len(test):
        raise UserError(f"split.n_test={p.n_test} is larger than the {len(test)} test reviews")
    order = rng.permutation(len(train))
    test_order = rng.permutation(len(test))
    labeled = [train[i] for i in order[: p.n_labeled]]
    pool = [train[i] for i in order[p.n_labeled:]]
    # The unsup reviews come after the rest of the train half, and are drawn last, so that the
    # other splits are the same samples whichever pool is chosen.
    if p.unlabeled_pool == "train+unsup":
        unsup = folders.get("train/unsup", [])
        pool += [unsup[i] for i in rng.permutation(len(unsup))]
    if p.n_unlabeled > len(pool):
        raise UserError(
            f"split.n_unlabeled={p.n_unlabeled} is larger than the {len(pool)} reviews left in "
            f"the '{p.unlabeled_pool}' pool after split.n_labeled={p.n_labeled}"
        )
    unlabeled = [{"id": r["id"], "text": r["text"]} for r in pool[: p.n_unlabeled]]
    return {
        "labeled": labeled,
        "unlabeled": unlabeled,
        "test": [test[i] for i in test_order[: p.n_test]],
        "test_full": test,
    }


def table_spec(path: Path, data: DataParams, labeled: bool = True) -> TableSpec:
    """How to read one of data.source table's files: the labeled (or test) table, or an unlabeled one."""
    return TableSpec(path=Path(path), text_columns=tuple(data.text_columns),
                     label_column=data.label_column if labeled else None, id_column=data.id_column)


def table_splits(table: Path, unlabeled_table: Path | None, test_table: Path | None, data: DataParams,
                 p: SplitParams) -> tuple[dict[str, list[dict]], tuple[str, ...]]:
    """The splits and class names of a table; unlabeled_table and test_table, where given, are
    tables of their own, else those splits are sampled from `table`."""
    records, classes = read_table(table_spec(table, data))
    # The test table's labels are mapped onto the labeled table's classes; a class it alone has is an error.
    test = read_table(table_spec(test_table, data), classes)[0] if test_table else None
    unlabeled = read_table(table_spec(unlabeled_table, data, labeled=False))[0] if unlabeled_table else None
    splits = split_table(records, p.n_labeled, p.n_unlabeled, p.n_test, p.seed,
                         test_records=test, unlabeled_records=unlabeled)
    if data.class_names:  # readable names for the labels; the label ids stay those of the sorted labels
        unnamed = [label for label in classes if label not in data.class_names]
        unknown = [label for label in data.class_names if label not in classes]
        if unnamed or unknown:
            what = (f"names no class {', '.join(map(repr, unnamed))}" if unnamed
                    else f"names {', '.join(map(repr, unknown))}, which no row of {table} has as its label")
            raise UserError(f"data.class_names {what}; expected one name for each of the labels "
                            f"{', '.join(map(repr, classes))}")
        classes = tuple(data.class_names[label] for label in classes)
    return splits, classes


def prepare(data_path: Path, out_dir: Path, p: SplitParams, data: DataParams | None = None,
            unlabeled_path: Path | None = None, test_path: Path | None = None,
            shard_size: int | None = None) -> dict[str, int]:
    """Write labeled, test (the sample) and test_full (the whole test half) as JSON Lines, the
    transfer set as the folder unlabeled/ of shards 0.jsonl, 1.jsonl, ... of shard_size reviews
    each (one file without it), and classes.json. data.source imdb (the default) reads data_path as
    the IMDB archive; table reads it as a table, with unlabeled_path and test_path as tables of their
    own where given (else those splits are sampled from data_path too).

    The samples are nested (a larger one keeps the smaller as its prefix), so a larger transfer set
    keeps every full shard as it was, byte for byte, and DVC scores only the new ones."""
    data = data or DataParams()
    if data.source == "table":
        splits, classes = table_splits(Path(data_path), unlabeled_path, test_path, data, p)
    else:
        if unlabeled_path is not None or test_path is not None:
            raise UserError(f"{unlabeled_path or test_path}: the IMDB archive {data_path} holds every split; "
                            "expected data.unlabeled_path and data.test_path to be data.path")
        folders = read_archive(Path(data_path), with_unsup=p.unlabeled_pool == "train+unsup")
        splits, classes = sample_splits(folders, p), CLASS_NAMES
    for name, reviews in splits.items():
        if not reviews:
            raise UserError(f"split '{name}' would be empty; raise split.n_{name.split('_')[0]}")
    counts = {}
    with atomic_path(out_dir, directory=True) as tmp:
        for name, reviews in splits.items():
            if name == "unlabeled" and shard_size is not None:
                (tmp / name).mkdir()
                counts[name] = sum(write_reviews(tmp / name / shard_name(k, ".jsonl"), reviews[start: start + shard_size])
                                   for k, start in enumerate(range(0, len(reviews), shard_size)))
                log.info("prepare: %s: %d reviews in %d shards of up to %d", name, counts[name],
                         -(-counts[name] // shard_size), shard_size)
                continue
            counts[name] = write_reviews(tmp / f"{name}.jsonl", reviews)
            log.info("prepare: %s: %d reviews", name, counts[name])
        write_json(tmp / CLASSES_FILE, list(classes))
    log.info("prepare: %d classes: %s", len(classes), ", ".join(classes))
    return counts
