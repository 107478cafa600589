"""Read a student's lineage record, and check it against the workspace."""

from __future__ import annotations

import os
from pathlib import Path

from bert2lr.errors import UserError
from bert2lr.files import file_digest, logits_digest, sha256_manifest, sha256_tree
from bert2lr.lineage import LINEAGE_FILE
from bert2lr.serving.deploy import read_lineage, student_files


def describe(lineage: dict) -> str:
    """The lineage record in a readable form."""
    m, gate, teacher, git = lineage["metrics"], lineage["gate"], lineage["teacher"], lineage["git"]
    lines = [
        f"student        {lineage['model']['file']}  sha256 {lineage['model']['sha256']}",
        f"               {_features(lineage['model'])}; made {lineage['created']}",
        f"code           git {git['commit'] or 'unknown'}{' (dirty tree)' if git['dirty'] else ''}",
        *_describe_data(lineage),
    ]
    for name, split in lineage["splits"].items():
        lines.append(f"split          {name:<10} {split['n_reviews']:>6} reviews  {split['path']}  "
                     f"sha256 {split['sha256']}")
    lines += [
        _teacher_line(teacher),
        "               " + ", ".join(f"{k}={v}" for k, v in teacher["params"].items() if k != "model"),
        f"teacher logits {lineage['teacher_logits']['path']}  sha256 {lineage['teacher_logits']['sha256']}",
        *_describe_sentences(lineage.get("transfer_sentences")),
        "student params " + ", ".join(f"{k}={v}" for k, v in lineage["student"]["params"].items()),
        f"test accuracy  {m['accuracy']:.4f} on {m['n_test']} reviews; {m['test_full_accuracy']:.4f} on "
        f"{m['n_test_full']}",
        f"quality gate   {'passed' if gate['passed'] else 'FAILED'}: baseline {gate['baseline_accuracy']:.4f}, "
        f"margin {gate['margin']:+.4f}",
        "versions       " + ", ".join(f"{k} {v}" for k, v in lineage["versions"].items()),
    ]
    return "\n".join(lines)


def _describe_sentences(sentences: dict | None) -> list[str]:
    """The transfer set's sentences a student learned from too, where it did."""
    if not sentences:
        return []
    return [f"sentences      {sentences['n_sentences']:>6} of the transfer set  {sentences['path']}  "
            f"sha256 {sentences['sha256']}",
            f"               their logits {sentences['logits']['path']}  sha256 {sentences['logits']['sha256']}"]


def _features(model: dict) -> str:
    if "n_buckets" in model:
        return f"n-grams hashed into {model['n_buckets']:,} buckets"
    return f"{model['n_features']:,} n-gram features"


def _teacher_line(teacher: dict) -> str:
    """Which teacher it was, by teacher.source, with its hash."""
    source = teacher.get("source", "fine_tune")
    if source == "scores":
        return f"teacher        precomputed scores {teacher['scores']['path']}  sha256 {teacher['scores']['sha256']}"
    how = "fine-tuned" if source == "fine_tune" else "(a classifier given, not fine-tuned here)"
    return f"teacher        {teacher['base_model']} {how}; weights sha256 {teacher['weights']['sha256']}"


ROLES = ("labeled", "unlabeled", "test")


def data_files(lineage: dict) -> list[tuple[tuple[str, ...], str, str]]:
    """(roles, path, sha256) per data file the record names, in the order labeled, unlabeled, test.

    /1 records name the IMDB archive ("archive" is its one role); /2 records name a file per role, and
    roles that share a file (the archive, or a table the other splits were sampled from) share a line,
    so a large file is hashed once.
    """
    if "data" not in lineage:
        return [(("archive",), lineage["archive"]["path"], lineage["archive"]["sha256"])]
    files = lineage["data"]["files"]
    grouped: dict[tuple[str, str], list[str]] = {}
    for role in sorted(files, key=lambda r: (ROLES.index(r) if r in ROLES else len(ROLES), r)):
        grouped.setdefault((files[role]["path"], files[role]["sha256"]), []).append(role)
    return [(tuple(roles), path, sha256) for (path, sha256), roles in grouped.items()]


def _describe_data(lineage: dict) -> list[str]:
    if "data" not in lineage:  # bert2lr-lineage/1: IMDB, whose classes are neg and pos
        return [f"archive        {lineage['archive']['path']}  sha256 {lineage['archive']['sha256']}"]
    classes = lineage.get("classes")
    files = [f"               {', '.join(roles):<10} {path}  sha256 {sha256}"
             for roles, path, sha256 in data_files(lineage)]
    return [f"data           source {lineage['data']['source']}",
            *(files or ["               no data file recorded"]),
            "classes        " + (", ".join(map(str, classes)) if isinstance(classes, list) else "not recorded")]


def project_root(student: Path) -> Path | None:
    """The DVC project above a student (its dvc.lock records it), or None outside any."""
    from dvc.exceptions import NotDvcRepoError
    from dvc.repo import Repo

    try:
        return Path(Repo.find_root(str(Path(student).resolve().parent)))
    except NotDvcRepoError:
        return None


def _file_check(what: str, path: Path, expected: str, n_reviews: int | None = None) -> tuple[bool, str, str]:
    """A file (or a folder of shards: the transfer set, its logits) re-hashed against the record."""
    if not path.exists():
        return False, what, f"{path} is missing"
    try:
        actual = logits_digest(path, n_reviews) if n_reviews is not None else sha256_tree(path)
    except UserError as exc:
        return False, what, str(exc)
    if actual != expected:
        return False, what, f"{path}  sha256 {actual[:16]}… but the record says {expected[:16]}…"
    return True, what, f"{path}  sha256 {actual[:16]}…"


def _data_check(base: Path, roles: tuple[str, ...], recorded: str, expected: str) -> tuple[bool, str, str]:
    """One data file re-hashed where it can be read; where it cannot, the line says so (and fails:
    what is not checked is not verified). A relative path is read from `base`, the project root."""
    what = "archive" if roles == ("archive",) else f"data {roles[0]}" if len(roles) == 1 else "data"
    named = "" if len(roles) == 1 else f"{', '.join(roles)}: "
    path = Path(recorded) if Path(recorded).is_absolute() else base / recorded
    cannot = f"so its content cannot be checked against the record's sha256 {expected[:16]}…"
    if not path.exists():
        return False, what, f"{named}{path} is not reachable here (no such file), {cannot}"
    try:
        actual = file_digest(path)
    except OSError as exc:  # a folder, a file without read permission, ...
        return False, what, f"{named}{path} is not readable ({exc.strerror or exc}), {cannot}"
    if actual != expected:
        return False, what, (f"{named}{path}  sha256 {actual[:16]}… but the record says {expected[:16]}… "
                             "(changed since the student was made)")
    return True, what, f"{named}{path}  sha256 {actual[:16]}…"


def _teacher_check(root: Path, teacher: dict) -> tuple[bool, str, str]:
    """Every file of the teacher folder against the record's manifest (older records: the weights only);
    for precomputed scores also the scores file the teacher folder was made from."""
    if teacher.get("source") == "scores":
        ok, _, detail = _file_check("teacher", root / teacher["scores"]["path"], teacher["scores"]["sha256"])
        if not ok:
            return False, "teacher", f"scores {detail}"
    if "files" not in teacher:
        weights = root / teacher["weights"]["path"]
        if not weights.exists():
            return False, "teacher", f"{weights} is missing"
        actual = sha256_tree(weights)
        ok = actual == teacher["weights"]["sha256"]
        return ok, "teacher", f"{weights}  sha256 {actual[:16]}…" + (
            "" if ok else f" but the record says {teacher['weights']['sha256'][:16]}… (record without a manifest)")
    folder = root / teacher["path"]
    recorded = teacher["files"]
    actual = sha256_manifest(folder) if folder.is_dir() else {}
    if not actual:
        return False, "teacher", f"{folder} is missing"
    changed = sorted(name for name in recorded if name in actual and actual[name] != recorded[name])
    missing = sorted(set(recorded) - set(actual))
    extra = sorted(set(actual) - set(recorded))
    problems = [f"{label}: {', '.join(names)}" for label, names in
                (("changed", changed), ("missing", missing), ("not in the record", extra)) if names]
    if problems:
        return False, "teacher", f"{folder}  " + "; ".join(problems)
    return True, "teacher", f"{folder}  all {len(recorded)} files match the record"


def _stage_of(repo, path: Path):
    """The stage that writes `path`, and that output."""
    for stage in repo.index.stages:
        for out in stage.outs:
            if Path(out.fs_path) == path:
                return stage, out
    return None, None


def _dvc_check(root: Path, student_dir: Path) -> tuple[bool, str, str]:
    """The student folder (lineage.json included) and the teacher stage's outputs against dvc.lock."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        student_stage, _ = _stage_of(repo, student_dir.resolve())
        if student_stage is None:
            return False, "dvc.lock", f"no stage of {root / 'dvc.yaml'} writes {student_dir}"
        teacher_stage = next((s for s in repo.index.stages if getattr(s, "name", None) == "teacher"), None)
        stages = [s for s in (student_stage, teacher_stage) if s is not None]
        # Stage by stage: the changed outputs and dependencies dvc.lock knows of.
        status = repo.status(targets=[s.addressing for s in stages])
        # File by file inside the changed folders, from the per-file lists in DVC's cache.
        # (data_status reads its targets relative to the project, whatever the current folder.)
        granular = repo.data_status(targets=[os.path.relpath(out.fs_path, repo.root_dir)
                                             for s in stages for out in s.outs], granular=True)
    problems: dict[str, None] = {}  # ordered, without repeats: the teacher is also the student's dependency
    for stage_name, changes in status.items():
        for change in changes:
            if not isinstance(change, dict):
                problems[f"{stage_name}: {change}"] = None
                continue
            for kind, paths in change.items():
                for changed_path, state in (paths.items() if isinstance(paths, dict) else [(paths, "")]):
                    problems[f"{changed_path} {state}".strip()] = None
    files = {p: kind for kind, paths in granular.get("uncommitted", {}).items()
             for p in paths if not p.endswith(("/", "\\"))}
    # Name the files inside a changed folder where DVC's cache lists them; keep the rest as DVC says it.
    named = [f"{p} {kind}" for p, kind in sorted(files.items())]
    named += [problem for problem in problems
              if not any(p.startswith(problem.split(" ")[0].rstrip("/") + "/") for p in files)]
    if problems:
        detail = "; ".join(named)
        return False, "dvc.lock", f"differs from what {root / 'dvc.lock'} records: {detail}"
    names = " and ".join(f"'{s.name}'" for s in stages)
    return True, "dvc.lock", f"the {names} stages' recorded files match, {LINEAGE_FILE} included"


def verify(path: Path | str) -> list[tuple[bool, str, str]]:
    """(matches, what, detail) per artifact the lineage names, recomputed from the workspace.

    The record's paths are relative to the DVC project that made the student, found above the
    student's own path, so the result does not depend on the current folder (a table named by an
    absolute path is read there). A data file that cannot be read is a failed line saying so.
    """
    model_file, record_file = student_files(path)
    lineage = read_lineage(path)
    root = project_root(model_file)
    base = root if root is not None else Path.cwd()
    results = [_file_check("model", model_file, lineage["model"]["sha256"])]
    data = [_data_check(base, roles, recorded, sha256) for roles, recorded, sha256 in data_files(lineage)]
    results += data or [(False, "data", "the record names no data file, so what the student learned from "
                                        "cannot be checked")]
    for name, split in lineage["splits"].items():
        results.append(_file_check(f"split {name}", base / split["path"], split["sha256"]))
    results.append(_teacher_check(base, lineage["teacher"]))
    results.append(_file_check("teacher logits", base / lineage["teacher_logits"]["path"],
                               lineage["teacher_logits"]["sha256"],
                               len(lineage.get("reviews", {}).get("unlabeled", []))))
    sentences = lineage.get("transfer_sentences")
    if sentences:
        results.append(_file_check("sentences", base / sentences["path"], sentences["sha256"]))
        results.append(_file_check("sentence logits", base / sentences["logits"]["path"],
                                   sentences["logits"]["sha256"]))
    if root is None:
        results.append((False, "dvc project", f"none above {record_file.parent}: {LINEAGE_FILE} itself cannot be "
                        "checked against dvc.lock, and its paths were read from the current folder"))
    else:
        results.append(_dvc_check(root, record_file.parent))
    return results
