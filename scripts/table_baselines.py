#!/usr/bin/env python3
"""Two n-gram baselines on one seeded split of a user's own table, fitted on the labeled split only.

CountVectorizer(1,3) + LogisticRegression and TF-IDF(1,2) + LogisticRegression, scored on the test
split; prints the accuracies as JSON. For AG News (its defaults):

    .venv/bin/python scripts/table_baselines.py ../shared/data/ag_news/ag_news_test.csv
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

from bert2lr.errors import UserError
from bert2lr.tables import TableSpec, read_table, split_table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("table", type=Path, help="the table: .csv, .jsonl/.json or .parquet")
    parser.add_argument("--text-columns", nargs="+", default=["title", "description"])
    parser.add_argument("--label-column", default="label")
    parser.add_argument("--id-column", default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-labeled", type=int, default=1000)
    parser.add_argument("--n-unlabeled", type=int, default=5600)
    parser.add_argument("--n-test", type=int, default=1000)
    args = parser.parse_args()
    try:
        spec = TableSpec(path=args.table, text_columns=args.text_columns, label_column=args.label_column,
                         id_column=args.id_column)
        records, classes = read_table(spec)
        splits = split_table(records, args.n_labeled, args.n_unlabeled, args.n_test, args.seed)
    except UserError as exc:
        print(f"table_baselines: error: {exc}", file=sys.stderr)
        sys.exit(2)
    texts = [r["text"] for r in splits["labeled"]]
    labels = [r["label"] for r in splits["labeled"]]
    test_texts = [r["text"] for r in splits["test"]]
    test_labels = [r["label"] for r in splits["test"]]
    models = {
        "count_1_3_logreg": make_pipeline(CountVectorizer(ngram_range=(1, 3)), LogisticRegression(max_iter=1000)),
        "tfidf_1_2_logreg": make_pipeline(TfidfVectorizer(ngram_range=(1, 2)), LogisticRegression(max_iter=1000)),
    }
    accuracy = {name: round(float(model.fit(texts, labels).score(test_texts, test_labels)), 4)
                for name, model in models.items()}
    print(json.dumps({
        "table": str(args.table), "classes": list(classes), "seed": args.seed,
        "sizes": {name: len(split) for name, split in splits.items()},
        "test_accuracy": accuracy,
    }, indent=2))


if __name__ == "__main__":
    main()
