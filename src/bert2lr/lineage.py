"""The lineage record a student carries: which data, teacher and settings produced it."""

from __future__ import annotations

import datetime
import subprocess
from importlib import metadata
from pathlib import Path

from bert2lr.files import TEACHER_CARD, file_digest, logits_digest, read_json, sha256_manifest, sha256_tree

LINEAGE_FILE = "lineage.json"
# /2: "data" (the source and its files by role) in place of /1's "archive"; /1 records stay readable.
FORMAT = "bert2lr-lineage/2"
FORMATS = ("bert2lr-lineage/1", FORMAT)
_LIBRARIES = ("bert2lr", "torch", "transformers", "scikit-learn", "numpy", "dvc")


# What makes a student besides its data: the code, the pipeline and its parameters. Outputs the run
# itself rewrites (dvc.lock, the metrics git tracks) and prose do not make the commit "dirty".
CODE_PATHS = ("src", "dvc.yaml", "params.yaml", "pyproject.toml")


def _git(cwd: Path | str | None = None) -> dict:
    def run(*args):
        return subprocess.run(["git", *args], capture_output=True, text=True, check=True, cwd=cwd).stdout.strip()

    try:
        # Untracked files count: a new module the code imports is not in the commit either.
        status = run("status", "--porcelain", "--untracked-files=all", "--", *CODE_PATHS)
        return {"commit": run("rev-parse", "HEAD"), "dirty": bool(status)}
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None, "dirty": None}


def _versions() -> dict:
    versions = {}
    for name in _LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def count_lines(path: Path) -> int:
    """Lines of a JSON Lines file, or of all the files of a folder of shards."""
    if Path(path).is_dir():
        return sum(count_lines(file) for file in Path(path).iterdir())
    with open(path, "rb") as f:
        return sum(1 for _ in f)


def teacher_weights(teacher: Path) -> Path:
    """The teacher's weights file (safetensors by default), else its whole folder."""
    weights = sorted(Path(teacher).glob("*.safetensors")) or sorted(Path(teacher).glob("*.bin"))
    return weights[0] if len(weights) == 1 else Path(teacher)


def teacher_section(teacher: Path, card: dict) -> dict:
    """Which teacher it was (teacher.source) and its hashes: a model's weights and files (a classifier
    given: also its source folder's files), or the precomputed scores' file (no weights)."""
    source = card.get("source", "fine_tune")  # cards from before teacher.source: fine-tuned
    files = sha256_manifest(teacher)
    section = {"source": source, "path": str(teacher),
               # Every file the logits depend on: tokenizer and config as well as weights, or the scores.
               "files": files, "params": card["params"]}
    if source == "scores":
        return {**section, "scores": {"path": card["scores"]["path"], "sha256": card["scores"]["sha256"]}}
    weights = teacher_weights(teacher)
    # The weights file is in the manifest already: hashing 90 MB once is enough.
    name = weights.relative_to(teacher).as_posix() if weights.is_file() else None
    section = {"base_model": card["base_model"], **section,
               "weights": {"path": str(weights), "sha256": files[name] if name in files else sha256_tree(weights)}}
    if source == "classifier":
        section["source_files"] = card["source_files"]
    return section


def sentences_section(sentences: Path | None, sentence_logits: Path | None) -> dict | None:
    """The transfer set's sentences the student also learned from, and their teacher logits, with their
    hashes; None where it learned from none (no file, or an empty one), so that such a record is as before."""
    if sentences is None or count_lines(sentences) == 0:
        return None
    return {"path": str(sentences), "sha256": file_digest(sentences), "n_sentences": count_lines(sentences),
            "logits": {"path": str(sentence_logits), "sha256": file_digest(sentence_logits)}}


def build(data_source: str, data_files: dict[str, Path], splits: dict[str, Path], teacher: Path,
          teacher_logits: Path, student_params: dict, metrics: dict, gate: dict, reviews: dict[str, list[str]],
          classes: tuple[str, ...] | None = None, transfer_sentences: dict | None = None) -> dict:
    """The record. data_files: the files the splits were drawn from by role ("labeled", "unlabeled",
    "test"; for IMDB the archive in each). classes: the student's class names by label id.
    transfer_sentences: `sentences_section`'s, where the student learned from sentences too."""
    card = read_json(Path(teacher) / TEACHER_CARD, "teacher training card")
    digests = {str(path): file_digest(path) for path in set(data_files.values())}  # the archive once, not thrice
    return {
        "format": FORMAT,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "data": {"source": data_source,
                 "files": {role: {"path": str(path), "sha256": digests[str(path)]} for role, path in data_files.items()}},
        **({"classes": list(classes)} if classes is not None else {}),
        # A split written in shards (the transfer set) is a folder: one hash over its files.
        "splits": {name: {"path": str(path), "sha256": sha256_tree(path), "n_reviews": count_lines(path)}
                   for name, path in splits.items()},
        "teacher": teacher_section(Path(teacher), card),
        "teacher_logits": {"path": str(teacher_logits),
                           "sha256": logits_digest(teacher_logits, len(reviews["unlabeled"]))},
        **({"transfer_sentences": transfer_sentences} if transfer_sentences else {}),
        "student": {"params": student_params},
        "git": _git(),
        "versions": _versions(),
        "metrics": metrics,
        "gate": gate,
        "reviews": reviews,
    }
