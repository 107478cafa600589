"""Stage: the teacher's raw logits on one split of reviews (the test sample, or one shard of the
transfer set), cached with the review ids.

The teacher folder says which teacher it is (its card, see stages/teacher.py): a classifier is run
on the reviews, its columns put in classes.json's order where its card records another order; a
teacher of precomputed scores is looked up by review id.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from bert2lr.bert import class_columns, device
from bert2lr.errors import UserError
from bert2lr.files import TEACHER_CARD, read_json, read_logits, read_reviews, write_json, write_logits
from bert2lr.inference import backend_in_use, launched_world, predict
from bert2lr.onnx_teacher import agreement, exported_model
from bert2lr.params import LogitsParams, TeacherParams

log = logging.getLogger(__name__)


def looked_up_logits(model_dir: Path, card: dict, ids: list[str]) -> np.ndarray:
    """The precomputed scores' logits of these review ids, row for row."""
    scores = card["scores"]
    with np.load(Path(model_dir) / scores["file"], allow_pickle=False) as npz:
        score_ids = npz["ids"].tolist()
    logits = read_logits(Path(model_dir) / scores["file"], n_classes=len(card["classes"]))
    row = {record_id: i for i, record_id in enumerate(score_ids)}
    missing = [record_id for record_id in ids if record_id not in row]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise UserError(f"{scores['path']}: no score for review id {missing[0]!r}{more}; expected a row for every "
                        "review of the splits (teacher.scores_id_column names the id column)")
    return logits[[row[record_id] for record_id in ids]]


def teacher_logits(model_dir: Path, onnx_dir: Path, reviews_path: Path, out: Path, info_out: Path,
                   teacher: TeacherParams, p: LogitsParams, against_torch: bool = False,
                   skip: bool = False) -> dict | None:
    """Write `out` (ids, logits) for the reviews in reviews_path, and the inference rate to info_out.

    onnx_dir: the export stage's folder, whose model ONNX Runtime runs where logits.backend is
    onnxruntime (on a CPU). against_torch: also score the reviews in torch and record how often the
    back end's labels agree with torch's (the test sample's stage does, on every run). skip: write
    no logits (an empty file, and info saying so), for the test half's stage with logits.test_half off.

    The rate lives apart from the logits: a wall-clock number inside a cached output would
    change its hash on every rerun, and with it dvc.lock and everything that reads it.
    Returns None on a rank other than 0 of a launcher's processes (rank 0 writes).
    """
    card_path = Path(model_dir) / TEACHER_CARD
    card = read_json(card_path, "teacher card") if card_path.is_file() else {}
    if skip:  # the whole test half with logits.test_half off: not scored
        return _no_reviews(model_dir, out, info_out, p, Path(reviews_path).as_posix(), card, skipped=True)
    # An empty file is no reviews (the transfer set's sentences when there are none): its logits file
    # holds no rows, so that the stages reading it need no special case.
    reviews = read_reviews(reviews_path, allow_empty=True)
    ids = [r["id"] for r in reviews]
    name = Path(reviews_path).as_posix()
    if not reviews and card.get("source") != "scores":
        return _no_reviews(model_dir, out, info_out, p, name, card)
    if card.get("source") == "scores":
        started = time.perf_counter()
        write_logits(out, ids, looked_up_logits(model_dir, card, ids))
        info = {"n": len(reviews), "source": "scores", "seconds": round(time.perf_counter() - started, 1),
                "reviews_per_s": None, "backend": None, "quantized": False, "device": None}
        log.info("logits: %s: %d reviews looked up in %s", reviews_path, len(reviews), card["scores"]["path"])
        write_json(info_out, info)
        return info
    backend = backend_in_use(p)
    onnx_model = exported_model(onnx_dir) if backend == "onnxruntime" else None
    texts = [r["text"] for r in reviews]
    started = time.perf_counter()
    logits = predict(texts, model_dir, onnx_model, teacher, p, name)
    seconds = time.perf_counter() - started
    # Under a launcher every rank takes part in each prediction, so the reference is made before the
    # ranks other than 0 leave.
    reference = predict(texts, model_dir, None, teacher, p.model_copy(update={"backend": "torch", "quantize": False}),
                        f"{name} (torch, for agreement)") if against_torch and backend != "torch" else None
    if logits is None:  # another rank of a launcher's processes: rank 0 writes
        return None
    columns = class_columns(model_dir)
    if columns is not None:  # a classifier given with its classes in another order than classes.json's
        logits = logits[:, columns]
    write_logits(out, ids, logits)
    world = launched_world()
    info = {"n": len(reviews), "seconds": round(seconds, 1), "reviews_per_s": round(len(reviews) / seconds, 2),
            "backend": backend, "quantized": p.quantize, "processes": world[2] if world else p.processes,
            "device": str(device())}
    if reference is not None:
        info["agreement_with_torch"] = agreement(reference if columns is None else reference[:, columns], logits)
        log.info("logits: %s: %s labels agree with torch's fp32 on %.2f%% of %d reviews", name, backend,
                 100 * info["agreement_with_torch"]["label_agreement"], len(reviews))
    log.info("logits: %s: %d reviews in %.0f s (%.1f/s, %s)", name, len(reviews), seconds, len(reviews) / seconds,
             backend)
    write_json(info_out, info)
    return info


def _no_reviews(model_dir: Path, out: Path, info_out: Path, p: LogitsParams, name: str, card: dict,
                skipped: bool = False) -> dict | None:
    """An empty logits file, (0, K) with the teacher's K classes, without running the teacher (the
    tokenizer refuses an empty batch); rank 0 of a launcher's processes writes it. skipped: the
    reviews were not read at all (the test half with logits.test_half off), and info says so."""
    from transformers import AutoConfig

    world = launched_world()
    if world and world[0] != 0:
        return None
    n_classes = len(card["classes"]) if "classes" in card else \
        AutoConfig.from_pretrained(model_dir, local_files_only=True).num_labels
    write_logits(out, [], np.zeros((0, n_classes), dtype=np.float32))
    info = {"n": 0, "seconds": 0.0, "reviews_per_s": None, "backend": backend_in_use(p), "quantized": p.quantize,
            "processes": world[2] if world else p.processes, "device": str(device())}
    if skipped:
        info["skipped"] = "logits.test_half is false"
    log.info("logits: %s: %s; wrote an empty logits file with %d classes", name,
             "not scored (logits.test_half is false)" if skipped else "no reviews", n_classes)
    write_json(info_out, info)
    return info
