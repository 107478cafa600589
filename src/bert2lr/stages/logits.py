"""Stage: the teacher's raw logits on one split of reviews, cached with the review ids."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from bert2lr.bert import device, load_fine_tuned, predict_logits
from bert2lr.files import read_reviews, write_json, write_logits
from bert2lr.params import LogitsParams, TeacherParams

log = logging.getLogger(__name__)


def teacher_logits(model_dir: Path, reviews_path: Path, out: Path, info_out: Path,
                   teacher: TeacherParams, p: LogitsParams) -> dict:
    """Write `out` (ids, logits) for the reviews in reviews_path, and the inference rate to info_out.

    The rate lives apart from the logits: a wall-clock number inside a cached output would
    change its hash on every rerun, and with it dvc.lock and everything that reads it.
    """
    tokenizer, model = load_fine_tuned(model_dir, quantize=p.quantize)
    reviews = read_reviews(reviews_path)
    started = time.perf_counter()
    logits = predict_logits(tokenizer, model, [r["text"] for r in reviews], teacher, p.batch_size,
                            Path(reviews_path).stem)
    seconds = time.perf_counter() - started
    write_logits(out, [r["id"] for r in reviews], logits)
    info = {"n": len(reviews), "seconds": round(seconds, 1), "reviews_per_s": round(len(reviews) / seconds, 2),
            "quantized": p.quantize, "device": str(device())}
    log.info("logits: %s: %d reviews in %.0f s (%.1f/s)", reviews_path, len(reviews), seconds, len(reviews) / seconds)
    write_json(info_out, info)
    return info
