"""The teacher's logits from several processes (torch.distributed, gloo on CPU) equal one process's,
started by logits.processes or by torchrun itself; the ONNX Runtime back end's equal torch's."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from bert2lr.files import read_logits, write_reviews
from bert2lr.inference import predict
from bert2lr.onnx_teacher import exported_model
from bert2lr.params import LogitsParams, TeacherParams
from bert2lr.stages.export import export_teacher

TEACHER = {"max_length": 32, "truncation": "head+tail", "head_tokens": 12}
TEXTS = [" ".join(["a great film", "dull and long", "★ wonderful", "awful acting", "fine"][i % 5:]) * (1 + i % 7)
         for i in range(37)]  # 37 texts of many lengths: 5 batches of 8, the last one short


@pytest.fixture(scope="module")
def onnx_dir(workspace, tmp_path_factory):
    return tmp_path_factory.mktemp("onnx") / "teacher_onnx"


@pytest.fixture(scope="module")
def exported(workspace, onnx_dir):
    root, _, _ = workspace
    export_teacher(root / "teacher", onnx_dir, LogitsParams())
    return exported_model(onnx_dir)  # the model file


@pytest.mark.slow  # two processes, each importing torch
@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_two_processes_give_the_logits_of_one(workspace, exported, backend):
    root, _, _ = workspace
    teacher = TeacherParams(**TEACHER)
    one = predict(TEXTS, root / "teacher", exported, teacher, LogitsParams(backend=backend, batch_size=8))
    two = predict(TEXTS, root / "teacher", exported, teacher,
                  LogitsParams(backend=backend, batch_size=8, processes=2))
    assert one.shape == two.shape == (len(TEXTS), 2)
    np.testing.assert_allclose(two, one, rtol=0, atol=1e-5)


def test_onnx_runtime_gives_torchs_logits(workspace, exported):
    root, _, _ = workspace
    teacher = TeacherParams(**TEACHER)
    torch_logits = predict(TEXTS, root / "teacher", None, teacher, LogitsParams(backend="torch", batch_size=8))
    onnx_logits = predict(TEXTS, root / "teacher", exported, teacher, LogitsParams(batch_size=8))
    np.testing.assert_allclose(onnx_logits, torch_logits, rtol=0, atol=1e-5)


@pytest.mark.slow  # torchrun starts two processes of the CLI
def test_torchrun_shares_a_stage_between_its_processes(workspace, exported, tmp_path):
    """The stage's own command under torchrun: rank 0 writes the file, and it holds one process's logits."""
    root, _, _ = workspace
    write_reviews(tmp_path / "r.jsonl", [{"id": f"r{i}", "text": t} for i, t in enumerate(TEXTS)])
    (tmp_path / "params.yaml").write_text(
        "teacher: {max_length: 32, truncation: head+tail, head_tokens: 12}\nlogits: {batch_size: 8}\n")
    # --against-torch: a second prediction that every rank must join (once, rank 1 left and rank 0 hung)
    command = ["-m", "bert2lr", "logits", "--teacher", str(root / "teacher"), "--onnx", str(exported.parent),
               "--reviews", "r.jsonl", "--out", "r.npz", "--info", "info.json", "--against-torch"]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    result = subprocess.run(torchrun + command, cwd=tmp_path, capture_output=True, text=True,
                            env={**os.environ, "TQDM_DISABLE": "1"}, timeout=300)
    assert result.returncode == 0, result.stderr
    single = predict(TEXTS, root / "teacher", exported, TeacherParams(**TEACHER), LogitsParams(batch_size=8))
    np.testing.assert_allclose(read_logits(tmp_path / "r.npz", [f"r{i}" for i in range(len(TEXTS))]), single,
                               rtol=0, atol=1e-5)
    info = json.loads((tmp_path / "info.json").read_text())
    assert info["processes"] == 2 and info["agreement_with_torch"]["label_agreement"] == 1.0


def test_a_process_joins_the_world_once_however_many_predictions_it_makes(workspace, exported, monkeypatch):
    """Rejoining after destroy_process_group reuses the first group's keys in the launcher's store, and a
    rank can then dial another's stale address (CI: "connectFullMesh ... Connection refused" when the
    logits stage predicted twice under torchrun). So the second prediction must reuse the first's group."""
    import socket

    import torch.distributed as dist

    from bert2lr.inference import _join_world, _leave_world

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for name, value in {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": "0", "WORLD_SIZE": "1",
                        "LOCAL_RANK": "0"}.items():
        monkeypatch.setenv(name, value)
    root, _, _ = workspace
    teacher, p = TeacherParams(**TEACHER), LogitsParams(batch_size=8)
    try:
        first = _join_world(TEXTS[:5], root / "teacher", exported, teacher, p, "logits", (0, 0, 1))
        group = dist.group.WORLD
        second = _join_world(TEXTS[:5], root / "teacher", exported, teacher, p, "logits", (0, 0, 1))
        assert dist.is_initialized() and dist.group.WORLD is group
        np.testing.assert_array_equal(first, second)
    finally:
        _leave_world()
