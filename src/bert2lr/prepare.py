"""Stage 2: read the IMDB archive and sample the labeled, unlabeled and test splits."""

from __future__ import annotations

import logging
import re
import tarfile
import zlib
from pathlib import Path

import numpy as np
from tqdm import tqdm

from bert2lr.errors import UserError
from bert2lr.files import atomic_path, write_reviews
from bert2lr.params import SplitParams

log = logging.getLogger(__name__)

_MEMBER = re.compile(r"^(?:\./)?aclImdb/(train|test)/(pos|neg|unsup)/([^/]+)$")
_NAME = re.compile(r"^(\d+)_(\d+)\.txt$")
_BREAK = re.compile(r"<br\s*/?>", re.IGNORECASE)
_RATINGS = {"pos": range(7, 11), "neg": range(1, 5), "unsup": range(0, 1)}
SPLITS = ("labeled", "unlabeled", "test", "test_full")


def clean(text: str) -> str:
    """Replace the HTML line breaks IMDB reviews carry with spaces."""
    return _BREAK.sub(" ", text).strip()


def read_archive(archive: Path, with_unsup: bool) -> dict[str, list[dict]]:
    """Return the reviews of each folder ("train/pos", ...), keyed by id, from either layout."""
    folders: dict[str, list[dict]] = {}
    wanted = {"train/pos", "train/neg", "test/pos", "test/neg"} | ({"train/unsup"} if with_unsup else set())
    if not archive.is_file():
        raise UserError(f"{archive}: archive not found (run `dvc repro fetch`)")
    try:
        with tarfile.open(archive, "r:*") as tar, tqdm(desc="read archive", unit=" reviews") as bar:
            for member in tar:
                match = _MEMBER.match(member.name)
                if not match or not member.isfile():
                    continue  # README, vocab, .feat files, folders
                half, folder, name = match.groups()
                key = f"{half}/{folder}"
                if key not in wanted:
                    continue
                name_match = _NAME.match(name)
                if not name_match or int(name_match.group(2)) not in _RATINGS[folder]:
                    raise UserError(
                        f"{archive}: {member.name}: malformed review name; expected ID_RATING.txt "
                        f"with a rating in {_RATINGS[folder].start}..{_RATINGS[folder].stop - 1}"
                    )
                raw = tar.extractfile(member).read()
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise UserError(f"{archive}: {member.name}: not UTF-8 text ({exc.reason})") from None
                review = {"id": f"{key}/{name[:-4]}", "text": clean(text)}
                if folder != "unsup":
                    review["label"] = int(folder == "pos")
                folders.setdefault(key, []).append(review)
                bar.update()
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        raise UserError(f"{archive}: not a readable tar archive ({exc})") from None
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


def prepare(archive: Path, out_dir: Path, p: SplitParams) -> dict[str, int]:
    """Write labeled, unlabeled, test (the sample) and test_full (the whole test half) as JSON Lines."""
    folders = read_archive(archive, with_unsup=p.unlabeled_pool == "train+unsup")
    splits = sample_splits(folders, p)
    for name, reviews in splits.items():
        if not reviews:
            raise UserError(f"split '{name}' would be empty; raise split.n_{name.split('_')[0]}")
    counts = {}
    with atomic_path(out_dir, directory=True) as tmp:
        for name, reviews in splits.items():
            counts[name] = write_reviews(tmp / f"{name}.jsonl", reviews)
            log.info("prepare: %s: %d reviews", name, counts[name])
    return counts
