#!/usr/bin/env python3
"""Int8 dynamic quantisation of the teacher against full precision, on the test sample.

Prints the rate of each and how often their predicted labels agree, as JSON:

    .venv/bin/python scripts/quantization.py --teacher models/teacher --reviews data/splits/test.jsonl
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from bert2lr.files import read_reviews
from bert2lr.bert import load_fine_tuned, predict_logits
from bert2lr.params import load_params


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", type=Path, default=Path("models/teacher"))
    parser.add_argument("--reviews", type=Path, default=Path("data/splits/test.jsonl"))
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = parser.parse_args()
    p = load_params(args.params)
    texts = [r["text"] for r in read_reviews(args.reviews)]
    result, logits = {"n_reviews": len(texts)}, {}
    for name, quantize in (("fp32", False), ("int8", True)):
        tokenizer, model = load_fine_tuned(args.teacher, quantize=quantize)
        started = time.perf_counter()
        logits[name] = predict_logits(tokenizer, model, texts, p.teacher, p.logits.batch_size, name)
        result[name] = {"reviews_per_s": round(len(texts) / (time.perf_counter() - started), 2)}
    result["label_agreement"] = round(float(np.mean(logits["fp32"].argmax(1) == logits["int8"].argmax(1))), 4)
    margin = {k: v[:, 1] - v[:, 0] for k, v in logits.items()}
    result["margin_mean_abs_diff"] = round(float(np.mean(np.abs(margin["fp32"] - margin["int8"]))), 4)
    result["margin_correlation"] = round(float(np.corrcoef(margin["fp32"], margin["int8"])[0, 1]), 4)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
