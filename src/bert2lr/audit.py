"""Read a student's lineage record, and check it against the workspace."""

from __future__ import annotations

import hashlib
from pathlib import Path

import yaml

from bert2lr.deploy import read_lineage, student_files
from bert2lr.files import sha256_file, sha256_tree


def describe(lineage: dict) -> str:
    """The lineage record in a readable form."""
    m, gate, teacher, git = lineage["metrics"], lineage["gate"], lineage["teacher"], lineage["git"]
    lines = [
        f"student        {lineage['model']['file']}  sha256 {lineage['model']['sha256']}",
        f"               {lineage['model']['n_features']:,} n-gram features; made {lineage['created']}",
        f"code           git {git['commit'] or 'unknown'}{' (dirty tree)' if git['dirty'] else ''}",
        f"archive        {lineage['archive']['path']}  sha256 {lineage['archive']['sha256']}",
    ]
    for name, split in lineage["splits"].items():
        lines.append(f"split          {name:<10} {split['n_reviews']:>6} reviews  {split['path']}  "
                     f"sha256 {split['sha256']}")
    lines += [
        f"teacher        {teacher['base_model']} fine-tuned; weights sha256 {teacher['weights']['sha256']}",
        "               " + ", ".join(f"{k}={v}" for k, v in teacher["params"].items() if k != "model"),
        f"teacher logits {lineage['teacher_logits']['path']}  sha256 {lineage['teacher_logits']['sha256']}",
        "student params " + ", ".join(f"{k}={v}" for k, v in lineage["student"]["params"].items()),
        f"test accuracy  {m['accuracy']:.4f} on {m['n_test']} reviews; {m['test_full_accuracy']:.4f} on "
        f"{m['n_test_full']}",
        f"quality gate   {'passed' if gate['passed'] else 'FAILED'}: baseline {gate['baseline_accuracy']:.4f}, "
        f"margin {gate['margin']:+.4f}",
        "versions       " + ", ".join(f"{k} {v}" for k, v in lineage["versions"].items()),
    ]
    return "\n".join(lines)


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _lock_checks(lock: Path, stage: str = "student") -> list[tuple[bool, str, str]]:
    """Compare the files dvc.lock records for the stage that made the student with the workspace."""
    if not lock.is_file():
        return [(False, "dvc.lock", f"{lock} not found")]
    entries = (yaml.safe_load(lock.read_text()) or {}).get("stages", {}).get(stage)
    if not entries:
        return [(False, "dvc.lock", f"{lock} has no '{stage}' stage")]
    mismatched, checked = [], 0
    for entry in entries.get("deps", []) + entries.get("outs", []):
        path = lock.parent / entry["path"]
        if entry.get("md5", "").endswith(".dir") or not path.is_file():
            continue  # folders are covered by the per-file hashes of the lineage record
        checked += 1
        if _md5(path) != entry.get("md5"):
            mismatched.append(entry["path"])
    if mismatched:
        return [(False, "dvc.lock", "differs from the workspace for " + ", ".join(mismatched))]
    return [(True, "dvc.lock", f"the '{stage}' stage's {checked} recorded files match")]


def verify(path: Path | str, root: Path | str = ".") -> list[tuple[bool, str, str]]:
    """(matches, what, detail) per artifact the lineage names, recomputed from the workspace."""
    root = Path(root)
    model_file, _ = student_files(path)
    lineage = read_lineage(path)
    checks = [(model_file, lineage["model"]["sha256"], "model", sha256_file)]
    checks.append((root / lineage["archive"]["path"], lineage["archive"]["sha256"], "archive", sha256_file))
    for name, split in lineage["splits"].items():
        checks.append((root / split["path"], split["sha256"], f"split {name}", sha256_file))
    checks.append((root / lineage["teacher"]["weights"]["path"], lineage["teacher"]["weights"]["sha256"],
                   "teacher weights", sha256_tree))
    checks.append((root / lineage["teacher_logits"]["path"], lineage["teacher_logits"]["sha256"],
                   "teacher logits", sha256_file))
    results = []
    for file, expected, what, hasher in checks:
        if not file.exists():
            results.append((False, what, f"{file} is missing"))
            continue
        actual = hasher(file)
        if actual == expected:
            results.append((True, what, f"{file}  sha256 {actual[:16]}…"))
        else:
            results.append((False, what, f"{file}  sha256 {actual[:16]}… but the record says {expected[:16]}…"))
    return results + _lock_checks(root / "dvc.lock")
