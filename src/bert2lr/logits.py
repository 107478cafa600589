"""Stage 5: the teacher's raw logits on the unlabeled and test splits, cached with review ids."""

from __future__ import annotations

import logging
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from bert2lr.errors import UserError
from bert2lr.files import atomic_path, read_reviews, write_json, write_logits
from bert2lr.params import LogitsParams, TeacherParams
from bert2lr.teacher import collate, device, encode, load_classifier

log = logging.getLogger(__name__)


def load_teacher(model_dir: Path, quantize: bool = False):
    """Load the fine-tuned teacher; it must be a two-label classifier."""
    if not Path(model_dir).is_dir():
        raise UserError(f"{model_dir}: teacher folder not found (run `dvc repro teacher`)")
    tokenizer, model = load_classifier(str(model_dir), fine_tuned=True)
    if model.config.num_labels != 2:
        raise UserError(f"{model_dir}: a classifier with {model.config.num_labels} labels; expected 2")
    model.to(device()).eval()
    if quantize and device().type == "cpu":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # quantize_dynamic is deprecated in favour of torchao
            model = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    return tokenizer, model


@torch.inference_mode()
def score(tokenizer, model, texts: list[str], p: TeacherParams, batch_size: int, desc: str) -> np.ndarray:
    """Logits of shape (n, 2) in the order of `texts`.

    Reviews are batched by token count so that a batch pads to its own longest review, not
    to max_length; the results are put back in the input order.
    """
    ids = encode(tokenizer, texts, p)
    order = np.argsort([-len(x) for x in ids], kind="stable")
    out = np.zeros((len(ids), 2), dtype=np.float32)
    dev = device()
    with tqdm(total=len(ids), desc=desc, unit=" reviews") as bar:
        for start in range(0, len(ids), batch_size):
            index = order[start: start + batch_size]
            batch = collate(tokenizer, [ids[i] for i in index], dev)
            out[index] = model(**batch).logits.float().cpu().numpy()
            bar.update(len(index))
    return out


def teacher_logits(model_dir: Path, splits: dict[str, Path], out_dir: Path, info_out: Path,
                   teacher: TeacherParams, p: LogitsParams) -> dict:
    """Write `<split>.npz` (ids, logits) per split into out_dir, and the rates to info_out.

    The rates live apart from the logits: a wall-clock number inside the cached folder would
    change its hash on every rerun, and with it dvc.lock and everything that reads the folder.
    """
    tokenizer, model = load_teacher(model_dir, quantize=p.quantize)
    info = {"quantized": p.quantize, "device": str(device()), "splits": {}}
    with atomic_path(out_dir, directory=True) as tmp:
        for name, path in splits.items():
            reviews = read_reviews(path)
            started = time.perf_counter()
            logits = score(tokenizer, model, [r["text"] for r in reviews], teacher, p.batch_size, name)
            seconds = time.perf_counter() - started
            write_logits(tmp / f"{name}.npz", [r["id"] for r in reviews], logits)
            info["splits"][name] = {"n": len(reviews), "seconds": round(seconds, 1),
                                    "reviews_per_s": round(len(reviews) / seconds, 2)}
            log.info("logits: %s: %d reviews in %.0f s (%.1f/s)", name, len(reviews), seconds,
                     len(reviews) / seconds)
    write_json(info_out, info)
    return info
