#!/usr/bin/env python
"""Student settings compared on validation only: 5-fold cross-validation on the labeled split, as the
validate stage does it, for settings that differ in more than alpha and gold_weight (features,
nb_weighting, n-grams, ...). The test split is not read.

    python scripts/validation_sweep.py '{}' '{"nb_weighting": true}' '{"ngram_max": 2}'

Each argument is a JSON object of student parameters over params.yaml's. Prints, per setting, the
out-of-fold accuracy on the labeled reviews, and its difference from the first setting with the
standard error of that paired difference (sqrt(discordant reviews) / n), so that a difference
inside about two standard errors is not read as a result.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from bert2lr.files import read_reviews, transfer_texts  # noqa: E402
from bert2lr.params import load_params, parse_params  # noqa: E402
from bert2lr.validation import cross_validate_student, stratified_folds  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("settings", nargs="+", help="JSON objects of student parameters")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--unlabeled", default="data/splits/unlabeled")
    parser.add_argument("--teacher-logits", default="data/teacher_logits/unlabeled")
    parser.add_argument("--labeled", default="data/splits/labeled.jsonl")
    parser.add_argument("--sentences", help="the transfer set's sentences (the sentences stage), learned as the "
                                            "student stage learns them")
    parser.add_argument("--sentence-logits", help="the teacher's logits on --sentences")
    args = parser.parse_args()
    p = load_params(args.params)
    base = p.student.model_dump()
    settings = [parse_params({"student": {**base, **json.loads(s)}}).student for s in args.settings]
    reviews = read_reviews(args.labeled, need_labels=True)
    texts, labels = [r["text"] for r in reviews], np.array([r["label"] for r in reviews])
    folds = stratified_folds(labels, p.validation.folds, p.validation.seed)

    def transfer():
        return transfer_texts(args.unlabeled, args.teacher_logits, 2, args.sentences, args.sentence_logits)

    rows = []
    for raw, setting in zip(args.settings, settings):
        started = time.perf_counter()
        (pred,) = cross_validate_student(transfer, texts, labels, [setting], folds)
        rows.append((raw, pred, time.perf_counter() - started))
        print(f"# {raw}: {np.mean(pred == labels):.4f} ({rows[-1][2]:.0f} s)", file=sys.stderr, flush=True)
    first = rows[0][1] == labels
    print(f"| setting | validation accuracy ({p.validation.folds}-fold, {len(labels)} reviews) "
          f"| difference from the first | its standard error |")
    print("|---|---|---|---|")
    for raw, pred, _ in rows:
        right = pred == labels
        discordant = int(np.sum(right != first))
        print(f"| `{raw}` | {np.mean(right):.4f} | {np.mean(right) - np.mean(first):+.4f} "
              f"| {np.sqrt(discordant) / len(labels):.4f} |")


if __name__ == "__main__":
    main()
