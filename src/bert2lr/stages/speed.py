"""Benchmark: teacher against student on the same test reviews, on this machine's CPU.

Each model is measured in a fresh process, so that its peak memory is its own.
"""

from __future__ import annotations

import multiprocessing
import platform
import resource
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from bert2lr.files import TEACHER_CARD, read_json, read_reviews, write_json
from bert2lr.params import TeacherParams


def _rate_and_latency(predict_batch, predict_one, texts: list[str], n_latency: int, min_seconds: float) -> dict:
    predict_one(texts[0])  # warm-up: first-call allocations are not serving costs
    runs, started = 0, time.perf_counter()
    while True:
        outputs = predict_batch(texts)
        runs += 1
        elapsed = time.perf_counter() - started
        if elapsed >= min_seconds:
            break
    latencies = []
    for text in texts[:n_latency]:
        t0 = time.perf_counter_ns()
        predict_one(text)
        latencies.append((time.perf_counter_ns() - t0) / 1e6)
    return {
        "reviews_per_s": round(runs * len(texts) / elapsed, 1),
        "latency_ms": {"p50": round(float(np.percentile(latencies, 50)), 4),
                       "p99": round(float(np.percentile(latencies, 99)), 4), "n": len(latencies)},
        "predictions": np.asarray(outputs).tolist(),
    }


def _measure_teacher(teacher: str, texts: list[str], p: TeacherParams, batch_size: int, n_latency: int) -> dict:
    import os

    os.environ["TQDM_DISABLE"] = "1"  # a bar per single-review call would only be noise
    import torch

    from bert2lr.bert import class_columns, load_fine_tuned, predict_logits

    tokenizer, model = load_fine_tuned(Path(teacher))
    # A classifier given as teacher.model may order its outputs otherwise than classes.json, which the
    # student's predictions follow: compare class for class.
    columns = class_columns(Path(teacher)) or list(range(model.config.num_labels))

    def batch(xs):
        return predict_logits(tokenizer, model, xs, p, batch_size, "teacher")[:, columns].argmax(axis=1)

    result = _rate_and_latency(batch, lambda x: batch([x]), texts, n_latency, min_seconds=0.0)
    result["threads"] = torch.get_num_threads()
    result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return result


def _measure_student(student: str, texts: list[str], n_latency: int) -> dict:
    import sys

    from bert2lr.serving.deploy import load_student

    model, _ = load_student(Path(student), allow_ungated=True)
    result = _rate_and_latency(model.predict, lambda x: model.predict([x]), texts, n_latency, min_seconds=2.0)
    result["imports_torch"] = "torch" in sys.modules
    result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return result


def _in_fresh_process(fn, *args):
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()


def _size_mb(path: Path) -> float:
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return round(sum(p.stat().st_size for p in files) / 1e6, 3)


def _student_only(teacher: Path, student: Path, texts: list[str], out: Path) -> dict:
    """Precomputed scores: no teacher model to time, so its numbers (and the ratios) are null, not made up."""
    s = _in_fresh_process(_measure_student, str(student), texts, len(texts))
    s.pop("predictions")
    from bert2lr.linear import MODEL_FILE

    s["size_mb"] = _size_mb(Path(student) / MODEL_FILE)
    result = {"n_reviews": len(texts), "cpu": platform.processor() or platform.machine(),
              "teacher": None, "teacher_source": "scores", "student": s,
              "throughput_ratio": None, "latency_ratio_p50": None, "agreement": None}
    write_json(out, result)
    return result


def benchmark(teacher: Path, student: Path, test: Path, out: Path, p: TeacherParams,
              batch_size: int = 64, n_latency_teacher: int = 100) -> dict:
    """Throughput, single-review latency, size and peak memory of both; write them to `out`."""
    texts = [r["text"] for r in read_reviews(test)]
    card_path = Path(teacher) / TEACHER_CARD
    if card_path.is_file() and read_json(card_path, "teacher card").get("source") == "scores":
        return _student_only(teacher, student, texts, out)
    t = _in_fresh_process(_measure_teacher, str(teacher), texts, p, batch_size, n_latency_teacher)
    s = _in_fresh_process(_measure_student, str(student), texts, len(texts))
    agreement = float(np.mean(np.array(t.pop("predictions")) == np.array(s.pop("predictions"))))
    from bert2lr.linear import MODEL_FILE

    t["size_mb"] = _size_mb(Path(teacher))
    s["size_mb"] = _size_mb(Path(student) / MODEL_FILE)
    result = {
        "n_reviews": len(texts),
        "cpu": platform.processor() or platform.machine(),
        "teacher": t,
        "student": s,
        "throughput_ratio": round(s["reviews_per_s"] / t["reviews_per_s"], 1),
        "latency_ratio_p50": round(t["latency_ms"]["p50"] / s["latency_ms"]["p50"], 1),
        "agreement": round(agreement, 4),
    }
    write_json(out, result)
    return result
