#!/usr/bin/env python3
"""The two students against the transfer set's size: a vocabulary (tfidf) and hashed n-grams (hashing).

For each size (the first N reviews of the transfer set: whole shards of a project that scored at
least that many, e.g. one run with split.n_unlabeled 74000) and each kind of features, the student
stage itself runs in a process of its own (`bert2lr student`, the project's params.yaml with
student.features set), and this script records its wall time and peak resident memory (the
process's own, from wait4), the model file's size, its accuracy on every review of the test half
(test_full.jsonl), its agreement with the teacher on the test sample (the teacher's logits of
test_logits), and its serving rate on the test sample (reviews/s of the loaded model, the two kinds
timed in turns in the same run: compare their ratio, not the rates across runs). Prints a
Markdown table and writes JSON (--out); progress goes to stderr.

    .venv/bin/python scripts/student_scale.py --project . --sizes 12000 48000 74000 --out student_scale.json

It needs the project's splits and the logits of its shards (`dvc repro`, or `dvc pull`).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

from bert2lr.files import read_logits, read_reviews, review_shards
from bert2lr.linear import MODEL_FILE, LinearTextModel

KINDS = ("tfidf", "hashing")
PEAK_MARK = "student_scale: peak kB "
# The stage's command in a process that reports its own peak resident memory as it exits (Linux's
# VmHWM, which starts anew at exec). Not the wait4 of the child: Linux carries the parent's memory
# into a forked child's ru_maxrss, and this parent holds the test half and the models it scored.
REPORT_PEAK = f"""
import atexit, sys
def report():
    with open("/proc/self/status") as status:
        peak = next(line.split()[1] for line in status if line.startswith("VmHWM:"))
    print("{PEAK_MARK}" + peak, file=sys.stderr, flush=True)
atexit.register(report)
sys.argv[0] = "bert2lr"
from bert2lr.cli import main
main()
"""


def run_stage(project: Path, work: Path, n_shards: int, features: str) -> dict:
    """Fit one student with the stage's command on the first n_shards shards; its wall time and peak RSS."""
    for name, source in (("unlabeled", project / "data/splits/unlabeled"),
                         ("logits", project / "data/teacher_logits/unlabeled")):
        (work / name).mkdir()
        for k in range(n_shards):
            suffix = ".jsonl" if name == "unlabeled" else ".npz"
            (work / name / f"{k}{suffix}").symlink_to((source / f"{k}{suffix}").resolve())
    params = yaml.safe_load((project / "params.yaml").read_text(encoding="utf-8"))
    params["student"] = {**params.get("student", {}), "features": features}
    (work / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")
    arguments = ["student", "--unlabeled", "unlabeled", "--teacher-logits", "logits",
                 "--labeled", str(project / "data/splits/labeled.jsonl"),
                 "--classes", str(project / "data/splits/classes.json"), "--out", "model", "--params", "params.yaml"]
    start = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-c", REPORT_PEAK, *arguments], cwd=work, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    stderr_lines, peak_kb = [], None
    for line in child.stderr:  # the stage's progress, passed on as it comes
        if line.startswith(PEAK_MARK):
            peak_kb = int(line[len(PEAK_MARK):])
            continue
        stderr_lines.append(line)
        print(f"    {line.rstrip()}", file=sys.stderr, flush=True)
    returncode = child.wait()
    wall = time.perf_counter() - start
    if returncode != 0 or peak_kb is None:
        raise SystemExit(f"student_scale: `bert2lr student` failed for {features}:\n{''.join(stderr_lines[-5:])}")
    return {"wall_s": round(wall, 1), "peak_rss_mb": round(peak_kb / 1024, 1)}


def serving_rates(models: dict[str, LinearTextModel], texts: list[str], rounds: int = 5) -> dict[str, float]:
    """Reviews/s of each model's decision_function on the same texts, the models taking turns."""
    best = {kind: float("inf") for kind in models}
    for _ in range(rounds):
        for kind, model in models.items():
            start = time.perf_counter()
            model.decision_function(texts)
            best[kind] = min(best[kind], time.perf_counter() - start)
    return {kind: round(len(texts) / seconds) for kind, seconds in best.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--project", type=Path, default=Path("."))
    parser.add_argument("--sizes", type=int, nargs="+", default=[12000, 48000, 74000])
    parser.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS))
    parser.add_argument("--out", type=Path, default=None, help="also write the rows as JSON here")
    args = parser.parse_args()
    project = args.project.resolve()
    shard_rows = [sum(1 for _ in open(shard, "rb")) for shard in review_shards(project / "data/splits/unlabeled")]
    test_full = read_reviews(project / "data/splits/test_full.jsonl", need_labels=True)
    sample = read_reviews(project / "data/splits/test.jsonl")
    teacher = read_logits(project / "data/teacher_logits/test.npz", [r["id"] for r in sample])
    teacher_labels = np.argmax(teacher, axis=1)
    full_texts, full_labels = [r["text"] for r in test_full], np.array([r["label"] for r in test_full])
    sample_texts = [r["text"] for r in sample]
    rows = []
    for size in args.sizes:
        ends = np.cumsum(shard_rows)
        if size not in ends:
            raise SystemExit(f"student_scale: {size} reviews is not a whole number of the project's shards "
                             f"(they end at {', '.join(map(str, ends))})")
        n_shards = int(np.searchsorted(ends, size)) + 1
        models = {}
        with tempfile.TemporaryDirectory(prefix="student-scale-") as folder:
            for kind in args.kinds:
                work = Path(folder) / kind
                work.mkdir()
                print(f"student_scale: {kind} on {size} reviews ({n_shards} shards)", file=sys.stderr, flush=True)
                row = {"n_unlabeled": size, "features": kind, **run_stage(project, work, n_shards, kind)}
                model_file = work / "model" / MODEL_FILE
                model = models[kind] = LinearTextModel.load(model_file)
                row["model_mb"] = round(model_file.stat().st_size / 1e6, 1)
                row["n_features"] = model.n_features
                row["accuracy_test_half"] = round(float(np.mean(model.predict(full_texts) == full_labels)), 4)
                row["agreement_test_sample"] = round(float(np.mean(model.predict(sample_texts) == teacher_labels)), 4)
                rows.append(row)
            for kind, rate in serving_rates(models, sample_texts).items():
                next(r for r in rows if r["n_unlabeled"] == size and r["features"] == kind)["reviews_per_s"] = rate
    columns = ["n_unlabeled", "features", "accuracy_test_half", "agreement_test_sample", "peak_rss_mb", "wall_s",
               "model_mb", "n_features", "reviews_per_s"]
    print("| " + " | ".join(columns) + " |\n|" + "---|" * len(columns))
    for row in rows:
        print("| " + " | ".join(f"{row[c]:,}" if isinstance(row[c], int) else str(row[c]) for c in columns) + " |")
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
