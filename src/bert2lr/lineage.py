"""The lineage record a student carries: which data, teacher and settings produced it."""

from __future__ import annotations

import datetime
import subprocess
from importlib import metadata
from pathlib import Path

from bert2lr.files import file_digest, read_json, sha256_manifest, sha256_tree

LINEAGE_FILE = "lineage.json"
FORMAT = "bert2lr-lineage/1"
TEACHER_CARD = "training.json"
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
    with open(path, "rb") as f:
        return sum(1 for _ in f)


def teacher_weights(teacher: Path) -> Path:
    """The teacher's weights file (safetensors by default), else its whole folder."""
    weights = sorted(Path(teacher).glob("*.safetensors")) or sorted(Path(teacher).glob("*.bin"))
    return weights[0] if len(weights) == 1 else Path(teacher)


def build(archive: Path, splits: dict[str, Path], teacher: Path, teacher_logits: Path,
          student_params: dict, metrics: dict, gate: dict, reviews: dict[str, list[str]],
          classes: tuple[str, ...] | None = None, tables: dict[str, Path] | None = None) -> dict:
    """The record. classes: the student's class names by label id. tables: where the data came from
    a table of one's own (data.source table), its files by role ("labeled", "unlabeled", "test"),
    hashed; the archive is then only what the fetch stage brought, not the data."""
    card = read_json(Path(teacher) / TEACHER_CARD, "teacher training card")
    weights = teacher_weights(teacher)
    return {
        "format": FORMAT,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "archive": {"path": str(archive), "sha256": file_digest(archive)},
        **({"tables": {role: {"path": str(path), "sha256": file_digest(path)} for role, path in tables.items()}}
           if tables else {}),
        **({"classes": list(classes)} if classes is not None else {}),
        "splits": {name: {"path": str(path), "sha256": file_digest(path), "n_reviews": count_lines(path)}
                   for name, path in splits.items()},
        "teacher": {"base_model": card["base_model"], "path": str(teacher),
                    "weights": {"path": str(weights), "sha256": sha256_tree(weights)},
                    # Every file the teacher's predictions depend on: tokenizer and config as well as weights.
                    "files": sha256_manifest(teacher),
                    "params": card["params"]},
        "teacher_logits": {"path": str(teacher_logits), "sha256": file_digest(teacher_logits)},
        "student": {"params": student_params},
        "git": _git(),
        "versions": _versions(),
        "metrics": metrics,
        "gate": gate,
        "reviews": reviews,
    }
