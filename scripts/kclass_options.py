"""Compare the two K-class student fits on a real 4-class table (AG News), with a stand-in teacher.

    .venv/bin/python scripts/kclass_options.py /path/to/ag_news_test.csv [--seed 0] [--json out.json]

The CSV has columns label (1..K), title, description; a review's text is title + " " + description.
Seed 0 shuffles the rows: 1,000 labeled, 1,000 test, the rest the transfer set (no labels used).

There is no BERT teacher for this table: the "teacher" is a scikit-learn LogisticRegression on
TF-IDF (1, 2)-grams fitted on the 1,000 labeled reviews, and its decision_function (n, K) stands in
for the teacher's logits. So the numbers compare the two fits and how closely each student tracks
its teacher; they say nothing about distilling BERT.

  (a) fit ridge, target logits: ridge on the teacher's logits centred per review, a function per class;
  (b) fit logistic, target soft_label: multinomial logistic regression on the teacher's probabilities.

Each at alpha 1 (the default) with the labeled set's gold labels mixed in (gold_weight 1, the
default) and without (0), and at alpha 0.1 with them.
Prints a table: test accuracy, agreement with the teacher on the test reviews, fit seconds.
The data is read from the given path only; nothing of it is written anywhere.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

from bert2lr.distill import fit_student
from bert2lr.params import StudentParams

CLASSES = ("World", "Sports", "Business", "Sci/Tech")  # AG News labels 1..4


def read_table(path: str) -> tuple[list[str], np.ndarray]:
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    texts = [f"{r['title']} {r['description']}" for r in rows]
    labels = np.array([int(r["label"]) - 1 for r in rows])
    return texts, labels


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("csv", help="AG News CSV (label, title, description)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--labeled", type=int, default=1000)
    parser.add_argument("--test", type=int, default=1000)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)

    texts, labels = read_table(args.csv)
    k = int(labels.max()) + 1
    order = np.random.default_rng(args.seed).permutation(len(texts))
    lab, test, transfer = np.split(order, [args.labeled, args.labeled + args.test])
    pick = lambda idx: [texts[i] for i in idx]  # noqa: E731
    print(f"{len(texts)} rows, {k} classes: {len(lab)} labeled, {len(test)} test, {len(transfer)} transfer",
          file=sys.stderr)

    # The stand-in teacher: TF-IDF (1, 2) + logistic regression on the labeled reviews.
    start = time.perf_counter()
    teacher_vec = TfidfVectorizer(ngram_range=(1, 2))
    teacher = LogisticRegression(max_iter=1000).fit(teacher_vec.fit_transform(pick(lab)), labels[lab])
    teacher_seconds = time.perf_counter() - start
    transfer_logits = teacher.decision_function(teacher_vec.transform(pick(transfer)))
    test_teacher = teacher.decision_function(teacher_vec.transform(pick(test))).argmax(axis=1)
    rows = [{"model": "teacher (stand-in: TF-IDF(1,2) + LogisticRegression on the labeled)",
             "accuracy": float(np.mean(test_teacher == labels[test])), "agreement": 1.0,
             "fit_s": teacher_seconds}]

    options = {
        "(a) ridge on centred logits": {"fit": "ridge", "target": "logits"},
        "(b) logistic on soft labels": {"fit": "logistic", "target": "soft_label"},
    }
    for name, option in options.items():
        for alpha, gold_weight in ((1.0, 1.0), (1.0, 0.0), (0.1, 1.0)):
            # StudentParams' defaults otherwise: tfidf, sublinear tf, 1-3 grams, min_df 2, temperature 1.
            p = StudentParams(**option, alpha=alpha, gold_weight=gold_weight)
            start = time.perf_counter()
            student = fit_student(pick(transfer), transfer_logits, p, pick(lab), labels[lab].tolist(),
                                  classes=CLASSES[:k] if k == len(CLASSES) else None)
            seconds = time.perf_counter() - start
            predicted = student.predict(pick(test))
            rows.append({"model": f"{name}, alpha {alpha:g}, gold_weight {gold_weight:g}",
                         "accuracy": float(np.mean(predicted == labels[test])),
                         "agreement": float(np.mean(predicted == test_teacher)), "fit_s": seconds,
                         "n_features": student.n_features})

    print(f"| {'model':<70} | accuracy | agreement | fit s |")
    print(f"|{'-' * 72}|---------:|----------:|------:|")
    for r in rows:
        print(f"| {r['model']:<70} | {r['accuracy']:.4f}   | {r['agreement']:.4f}    | {r['fit_s']:5.1f} |")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(rows, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
