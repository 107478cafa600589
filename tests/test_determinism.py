"""Fine-tuning the teacher twice, in separate processes, on the same data and seed gives the same files.

Each run is a fresh interpreter, as two `dvc repro` runs are: an in-process repeat would share
the heap, the allocator's state and the interpreter's hash seed, and could hide a difference.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import review

TRAIN = """
import json, sys
from pathlib import Path
from bert2lr.params import TeacherParams
from bert2lr.stages.teacher import train_teacher

texts, labels, model, seed, out = json.loads(sys.argv[1])
p = TeacherParams(model=model, max_length=32, head_tokens=12, truncation="head+tail", epochs=2,
                  batch_size=4, learning_rate=1e-3, seed=seed)
train_teacher(texts, labels, Path(out), Path(out + '-training'), p)
"""


def train_in_subprocess(tiny_bert: Path, out: Path, seed: int, hash_seed: str) -> None:
    rng = random.Random(0)
    labels = [i % 2 for i in range(24)]
    texts = [review(rng, bool(label)) for label in labels]
    # A different PYTHONHASHSEED per run, as two unrelated processes would have.
    env = os.environ | {"PYTHONHASHSEED": hash_seed}
    subprocess.run([sys.executable, "-c", TRAIN, json.dumps([texts, labels, str(tiny_bert), seed, str(out)])],
                   check=True, env=env, capture_output=True, timeout=300)


def digests(folder: Path) -> dict[str, str]:
    return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(folder.iterdir())}


@pytest.mark.slow  # three fine-tunings, each in a fresh interpreter
def test_teacher_is_byte_identical_across_processes(tiny_bert, tmp_path):
    train_in_subprocess(tiny_bert, tmp_path / "a", seed=0, hash_seed="1")
    train_in_subprocess(tiny_bert, tmp_path / "b", seed=0, hash_seed="2")
    train_in_subprocess(tiny_bert, tmp_path / "c", seed=1, hash_seed="1")
    a, b, c = digests(tmp_path / "a"), digests(tmp_path / "b"), digests(tmp_path / "c")
    # The whole folder, not only the weights: DVC hashes the folder, and any file that differs
    # (a wall-clock time in training.json did) changes dvc.lock and reruns every later stage.
    assert a == b
    assert "model.safetensors" in a and "training.json" in a
    # dvclive's record of the fine-tuning holds no clock either: same losses, same bytes.
    records = [{f.relative_to(tmp_path / f"{run}-training").as_posix(): f.read_bytes()
                for f in (tmp_path / f"{run}-training").rglob("*") if f.is_file()} for run in "ab"]
    assert records[0] == records[1] and "plots/metrics/train/loss.tsv" in records[0]
    # The comparison can fail: another seed gives other weights.
    assert a["model.safetensors"] != c["model.safetensors"]
    card = json.loads((tmp_path / "a" / "training.json").read_text())
    assert card["threads"] >= 1 and "seconds" not in card
