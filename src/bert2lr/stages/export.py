"""Stage: the fine-tuned teacher exported to ONNX for ONNX Runtime (logits.backend onnxruntime),
int8-quantised where logits.quantize says so; a DVC output, so it is exported once per teacher.

With logits.backend torch, or a teacher of precomputed scores, there is nothing to export; the
folder then holds only the record saying why, so that the pipeline keeps one shape.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from bert2lr.files import TEACHER_CARD, atomic_path, read_json, write_json
from bert2lr.onnx_teacher import EXPORT_RECORD, MODEL_FILE, OPSET, export_onnx, quantize
from bert2lr.params import LogitsParams

log = logging.getLogger(__name__)


def export_teacher(model_dir: Path, out_dir: Path, p: LogitsParams) -> dict:
    """Write out_dir: model.onnx (fp32, or int8 with per-channel weights) and export.json, atomically."""
    card_path = Path(model_dir) / TEACHER_CARD
    card = read_json(card_path, "teacher card") if card_path.is_file() else {}
    started = time.perf_counter()
    # The exporter's graph passes log each initialiser they merge and rule they apply (over a hundred
    # INFO lines on stderr), which say nothing about the user's teacher.
    for name in ("onnx_ir", "onnxscript"):
        logging.getLogger(name).setLevel(logging.WARNING)
    with atomic_path(out_dir, directory=True) as tmp:
        tmp.mkdir(parents=True, exist_ok=True)
        if card.get("source") == "scores":
            record = {"exported": False, "why": "teacher.source is scores: there is no model to run"}
        elif p.backend == "torch":
            record = {"exported": False, "why": "logits.backend is torch"}
        elif p.quantize:
            fp32 = export_onnx(model_dir, tmp / "fp32.onnx")
            # Per-channel weights: of the int8 variants measured, the one closest to fp32 (docs/design.md).
            quantize(fp32, tmp / MODEL_FILE, per_channel=True)
            fp32.unlink()
            record = {"exported": True, "opset": OPSET, "precision": "int8 (dynamic, per-channel weights)"}
        else:
            export_onnx(model_dir, tmp / MODEL_FILE)
            record = {"exported": True, "opset": OPSET, "precision": "fp32"}
        write_json(tmp / EXPORT_RECORD, record)
    log.info("export: %s in %.1f s", "exported " + record["precision"] if record["exported"] else record["why"],
             time.perf_counter() - started)
    return record
