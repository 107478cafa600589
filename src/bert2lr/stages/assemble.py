"""Stage: assemble the deployable student, the fitted model and the lineage record that says which
data, teacher and settings made it, with the metrics and quality gate `evaluate` gave it.

This is the folder dvc.yaml's `artifacts:` registers and `predict`, `serve` and `audit` read.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from bert2lr import lineage
from bert2lr.errors import UserError
from bert2lr.files import atomic_path, file_digest, read_json, read_reviews, write_json
from bert2lr.linear import MODEL_FILE, LinearTextModel
from bert2lr.params import StudentParams


def lineage_metrics(metrics: dict, source: Path) -> tuple[dict, dict]:
    """(metrics, gate) for the lineage record, from evaluate's metrics of the student."""
    try:
        return ({"accuracy": metrics["accuracy"], "n_test": metrics["n"],
                 "test_full_accuracy": metrics["test_full"]["accuracy"], "n_test_full": metrics["test_full"]["n"]},
                metrics["gate"])
    except (KeyError, TypeError) as exc:
        raise UserError(f"{source}: no {exc} in the student's metrics; run `dvc repro evaluate`") from None


def assemble(candidate: Path, student_metrics: Path, data_source: str, data_files: dict[str, Path],
             splits: dict[str, Path], teacher: Path, teacher_logits: Path, out_dir: Path, p: StudentParams,
             sentences: Path | None = None, sentence_logits: Path | None = None) -> dict:
    """Write out_dir/model.npz (the candidate's file, byte for byte) and out_dir/lineage.json; both or neither.

    sentences, sentence_logits: the transfer set's sentences the student learned from too, and their
    teacher logits; the record names them where there are any."""
    model_file = Path(candidate) / MODEL_FILE
    model = LinearTextModel.load(model_file)
    scored = read_json(student_metrics, "student metrics")
    metrics, gate = lineage_metrics(scored, student_metrics)
    actual = file_digest(model_file)
    if scored.get("model_sha256") != actual:
        raise UserError(f"{student_metrics} scores another model (sha256 {str(scored.get('model_sha256'))[:12]}...) "
                        f"than {model_file} ({actual[:12]}...); its gate is not this model's: run `dvc repro evaluate`")
    record = lineage.build(
        data_source=data_source, data_files=data_files, splits=splits, teacher=teacher, teacher_logits=teacher_logits,
        student_params=p.model_dump(), metrics=metrics, gate=gate,
        reviews={name: [r["id"] for r in read_reviews(splits[name])] for name in ("labeled", "unlabeled")},
        classes=model.classes, transfer_sentences=lineage.sentences_section(sentences, sentence_logits),
    )
    with atomic_path(out_dir, directory=True) as tmp:
        shutil.copyfile(model_file, tmp / MODEL_FILE)
        # n_features: coefficients per output (a hashed model's buckets); n_buckets only for a hashed
        # model, so that a vocabulary model's record is what it always was.
        record["model"] = {"file": MODEL_FILE, "sha256": file_digest(tmp / MODEL_FILE),
                           "n_features": model.n_features,
                           **({"n_buckets": model.n_buckets} if model.n_buckets else {})}
        write_json(tmp / lineage.LINEAGE_FILE, record)
    return record
