"""Load a student for serving: check its lineage record, its hash and its quality gate.

Imports numpy and the compiled featurizer only: neither torch nor transformers.
"""

from __future__ import annotations

from pathlib import Path

from bert2lr.errors import UserError
from bert2lr.files import read_json, sha256_file
from bert2lr.lineage import LINEAGE_FILE
from bert2lr.linear import MODEL_FILE, LinearTextModel, sigmoid

DEFAULT_STUDENT = Path("models/student")


def student_files(path: Path | str) -> tuple[Path, Path]:
    """The model file and lineage record of a student folder (or of its model file)."""
    path = Path(path)
    folder = path if path.is_dir() or path.suffix != ".npz" else path.parent
    model = path if path.suffix == ".npz" else folder / MODEL_FILE
    if not model.is_file():
        raise UserError(f"{model}: student model not found (run `dvc repro student` or `dvc pull`)")
    return model, folder / LINEAGE_FILE


def read_lineage(path: Path | str) -> dict:
    """The lineage record of a student; a student without one is refused."""
    model, record = student_files(path)
    if not record.is_file():
        raise UserError(f"{model}: no {LINEAGE_FILE} beside it, so its origin cannot be told; "
                        "bert2lr only serves and audits students the pipeline wrote")
    lineage = read_json(record, "lineage record")
    if not isinstance(lineage, dict) or "model" not in lineage or "gate" not in lineage:
        raise UserError(f"{record}: not a bert2lr lineage record")
    return lineage


def load_student(path: Path | str = DEFAULT_STUDENT, allow_ungated: bool = False) -> tuple[LinearTextModel, dict]:
    """Load a student whose file matches its lineage record and which passed its quality gate."""
    model_file, _ = student_files(path)
    lineage = read_lineage(path)
    actual = sha256_file(model_file)
    if actual != lineage["model"]["sha256"]:
        raise UserError(f"{model_file}: sha256 {actual[:12]}… does not match its lineage record "
                        f"({lineage['model']['sha256'][:12]}…); the file was changed after the pipeline wrote it")
    gate = lineage["gate"]
    if not gate.get("passed") and not allow_ungated:
        raise UserError(
            f"{model_file}: the student failed its quality gate (accuracy {lineage['metrics']['accuracy']:.4f} "
            f"vs baseline {gate['baseline_accuracy']:.4f}); pass --allow-ungated to use it anyway")
    return LinearTextModel.load(model_file), lineage


def predictions(model: LinearTextModel, texts: list[str]) -> list[dict]:
    """Label, probability of positive and raw logit per text."""
    logits = model.decision_function(texts)
    probability = sigmoid(logits)
    return [{"label": "pos" if z > 0 else "neg", "probability": round(float(p), 6), "logit": round(float(z), 6)}
            for z, p in zip(logits, probability)]
