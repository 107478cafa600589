"""The real `dvc repro` in a temporary git repository, on tiny data and a tiny BERT.

Every test that changes the project works on its own copy, so the tests pass in any order.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from dvc_project import LOGITS, STAGES, changed, copy_project, ran, run, set_param

pytestmark = pytest.mark.slow
# What consumes the student or its settings: the scores, the learning curve and the benchmark.
AFTER_STUDENT = {"student", "validate", "evaluate", "short_texts", "assemble", "curve", "speed"}
# What loads or scores a linear model (and so runs linear.py and the compiled scorer).
SCORES_LINEAR_MODELS = {"baseline", "student", "validate", "evaluate", "short_texts", "assemble", "curve", "speed"}


@pytest.fixture
def project(reproduced, tmp_path):
    """A copy of the reproduced tiny project, this test's own to change."""
    return copy_project(reproduced[0], tmp_path / "project")


def test_first_repro_runs_every_stage(reproduced):
    assert ran(reproduced[1]) == STAGES


def test_full_repro_writes_every_metric(project, reproduced):
    for name in ("baseline", "teacher", "student"):
        metrics = json.loads((project / "metrics" / f"{name}.json").read_text())
        assert 0 <= metrics["accuracy"] <= 1 and metrics["n"] == 12
        assert {"neg", "pos", "macro avg", "weighted avg"} <= set(metrics["report"])
    student = json.loads((project / "metrics" / "student.json").read_text())
    assert "agreement_with_teacher" in student and "passed" in student["gate"]
    assert reproduced[1].count("weighted avg") == 3  # evaluate prints the three reports
    shown = json.loads(run("dvc", "metrics", "show", "--json", cwd=project).stdout)
    files = next(iter(shown.values()))["data"]
    assert {Path(f).name for f in files} == {"baseline.json", "teacher.json", "student.json", "speed.json",
                                             "metrics.json",  # dvclive's summary of the teacher's training
                                             "test.json",  # the test logits' rate and agreement with torch
                                             "test_full.json",  # the test half's: skipped by default
                                             "validation.json",  # cross-validation and the gate
                                             "short_texts.json"}
    inference = files[next(f for f in files if f.endswith("teacher_inference/test.json"))]["data"]
    assert inference["backend"] == "onnxruntime" and inference["agreement_with_torch"]["label_agreement"] == 1.0
    training = json.loads((project / "metrics" / "teacher_training" / "metrics.json").read_text())
    assert training["epoch"] == 1 and training["train"]["loss"] > 0 and 0 <= training["train"]["accuracy"] <= 1
    speed = json.loads((project / "metrics" / "speed.json").read_text())
    assert speed["student"]["reviews_per_s"] > 0 and speed["teacher"]["reviews_per_s"] > 0
    assert speed["student"]["imports_torch"] is False
    curve = json.loads((project / "metrics" / "learning_curve.json").read_text())
    assert curve[-1]["n_unlabeled"] == 20 and {"student", "teacher", "baseline", "agreement"} <= set(curve[0])


def test_full_repro_measures_short_texts_and_the_student_learns_from_sentences(project):
    """Every sentence of the 12 test reviews measured; every sentence of the transfer set learned from,
    scored by the teacher, and named in the student's lineage."""
    short = json.loads((project / "metrics" / "short_texts.json").read_text())
    test_sentences = (project / "data" / "sentences" / "test.jsonl").read_text().splitlines()
    assert short["sentences"]["n"] == len(test_sentences) > short["reviews"]["n"] == 12
    assert short["sentences"]["mean_words"] < short["reviews"]["mean_words"]
    assert all(0 <= short[what][key] <= 1 for what in short for key in ("student_accuracy", "agreement"))
    transfer = (project / "data" / "sentences" / "transfer.jsonl").read_text().splitlines()
    with np.load(project / "data" / "teacher_logits" / "transfer_sentences.npz") as npz:
        assert npz["logits"].shape == (len(transfer), 2) and len(transfer) > 20
    sentences = json.loads((project / "models" / "student" / "lineage.json").read_text())["transfer_sentences"]
    assert sentences["n_sentences"] == len(transfer) and sentences["path"] == "data/sentences/transfer.jsonl"
    # none: an empty sentences file, an empty logits file, and the student of the transfer set alone
    set_param(project, "short_texts", "n_transfer_sentences", 0)
    reran = ran(run("dvc", "repro", cwd=project).stdout)
    # (the learning curve is of the transfer set's reviews: it does not rerun)
    assert reran == {"sentences", "transfer_sentence_logits", *AFTER_STUDENT} - {"curve"}
    assert (project / "data" / "sentences" / "transfer.jsonl").read_bytes() == b""
    with np.load(project / "data" / "teacher_logits" / "transfer_sentences.npz") as npz:
        assert npz["logits"].shape == (0, 2)
    assert "transfer_sentences" not in json.loads((project / "models" / "student" / "lineage.json").read_text())


def test_second_repro_does_nothing(project):
    assert changed(project) == set()
    assert ran(run("dvc", "repro", cwd=project).stdout) == set()


def test_audit_verifies_the_workspace(project, tmp_path):
    audit = run("bert2lr", "audit", cwd=project)
    assert "quality gate" in audit.stdout and "split          unlabeled      20 reviews" in audit.stdout
    verified = run("bert2lr", "audit", "--verify", cwd=project)
    # 8 hashes, the transfer set's sentences and their logits, and dvc.lock
    assert verified.stdout.count("ok ") == 11 and "MISMATCH" not in verified.stdout
    record = json.loads(run("bert2lr", "audit", "--json", cwd=project).stdout)
    assert record["git"]["dirty"] is False and len(record["git"]["commit"]) == 40
    ids = run("bert2lr", "audit", "--reviews", "unlabeled", cwd=project).stdout.split()
    assert len(ids) == 20 and all(i.startswith("train/") for i in ids)
    model = project / "models" / "student" / "model.npz"
    original = model.read_bytes()
    try:
        model.chmod(0o644)
        model.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
        altered = run("bert2lr", "audit", "--verify", cwd=project, check=False)
        assert altered.returncode == 1
        assert "MISMATCH model" in altered.stdout and "verification failed for: model" in altered.stderr
    finally:
        model.write_bytes(original)


def clone_and_pull(project: Path, dest: Path, local_config: list[list[str]] = ()) -> Path:
    run("git", "clone", "-q", str(project), str(dest), cwd=project)
    for args in local_config:  # credentials live in .dvc/config.local, which git never carries
        run("dvc", "remote", "modify", "--local", *args, cwd=dest)
    run("dvc", "pull", cwd=dest)
    return dest


def assert_complete_copy(clone: Path) -> None:
    assert changed(clone) == set()
    assert ran(run("dvc", "repro", cwd=clone).stdout) == set()
    rows = run("bert2lr", "predict", "--allow-ungated", "great film", "awful plot", cwd=clone).stdout.splitlines()
    assert [json.loads(r)["label"] in {"pos", "neg"} for r in rows] == [True, True]
    assert run("bert2lr", "audit", "--verify", cwd=clone).returncode == 0


def test_round_trip_through_a_local_remote(project, tmp_path):
    run("dvc", "remote", "add", "-d", "-f", "team", str(tmp_path / "storage"), cwd=project)
    run("git", "commit", "-qam", "share through a local remote", cwd=project)
    run("dvc", "push", cwd=project)
    assert_complete_copy(clone_and_pull(project, tmp_path / "clone"))
    # A CI job with the remote recomputes only what a change touches.
    ci = tmp_path / "ci"
    run("git", "clone", "-q", str(project), str(ci), cwd=tmp_path)
    set_param(ci, "student", "alpha", 3.0)
    assert ran(run("dvc", "repro", "--pull", cwd=ci).stdout) == AFTER_STUDENT


@pytest.fixture
def s3_server():
    """moto's S3 server on a free loopback port, stopped after the test."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        import boto3

        deadline = time.monotonic() + 30
        while True:
            try:
                s3 = boto3.client("s3", endpoint_url=url, aws_access_key_id="testing",
                                  aws_secret_access_key="testing", region_name="us-east-1")
                s3.create_bucket(Bucket="bert2lr")
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_round_trip_through_an_s3_remote(project, tmp_path, s3_server):
    credentials = [["s3", "access_key_id", "testing"], ["s3", "secret_access_key", "testing"]]
    run("dvc", "remote", "add", "-d", "-f", "s3", "s3://bert2lr/store", cwd=project)
    run("dvc", "remote", "modify", "s3", "endpointurl", s3_server, cwd=project)
    for args in credentials:
        run("dvc", "remote", "modify", "--local", *args, cwd=project)
    assert "testing" not in (project / ".dvc" / "config").read_text()
    run("git", "commit", "-qam", "share through S3", cwd=project)
    run("dvc", "push", cwd=project)
    assert_complete_copy(clone_and_pull(project, tmp_path / "clone", credentials))


def test_student_key_reruns_only_what_follows_the_student(project):
    set_param(project, "student", "alpha", 2.0)
    # dvc status lists the stages whose own inputs changed; assemble records the settings in the lineage
    assert changed(project) == {"student", "validate", "assemble", "curve"}
    assert ran(run("dvc", "repro", cwd=project).stdout) == AFTER_STUDENT
    diff = json.loads(run("dvc", "metrics", "diff", "--json", cwd=project).stdout)
    assert {Path(f).name for f in diff} <= {"baseline.json", "teacher.json", "student.json", "speed.json",
                                            "metrics.json", "validation.json"}
    assert any(Path(f).name == "speed.json" for f in diff)  # timings always move


def test_a_hashed_student_runs_the_pipeline_and_deploys_like_the_vocabulary_student(project):
    """student.features hashing: the stages after the student rerun, and the student they pack is
    served, audited and scored from a file with no vocabulary."""
    set_param(project, "student", "features", "hashing")
    set_param(project, "student", "n_buckets", 4096)
    assert ran(run("dvc", "repro", cwd=project).stdout) == AFTER_STUDENT
    assert changed(project) == set()
    metrics = json.loads((project / "metrics" / "student.json").read_text())
    assert 0.0 <= metrics["accuracy"] <= 1.0
    with np.load(project / "models" / "student" / "model.npz") as model:
        assert "vocabulary" not in model.files and model["coef"].shape[-1] == 4096
    rows = run("bert2lr", "predict", "--allow-ungated", "great film", "awful plot", cwd=project).stdout.splitlines()
    assert [json.loads(r)["label"] in {"pos", "neg"} for r in rows] == [True, True]
    verified = run("bert2lr", "audit", "--verify", cwd=project)
    assert "MISMATCH" not in verified.stdout and "features=hashing" in run("bert2lr", "audit", cwd=project).stdout


def test_the_teacher_on_the_whole_test_half_is_a_flag(project):
    """logits.test_half: off, the test half's stage writes no logits and the teacher is scored on the
    sample; on, it scores the half and evaluate compares student and teacher on all of it."""
    teacher = json.loads((project / "metrics" / "teacher.json").read_text())
    assert "test_full" not in teacher
    assert json.loads((project / "metrics" / "teacher_inference" / "test_full.json").read_text())["skipped"]
    set_param(project, "logits", "test_half", True)
    assert changed(project) == {"test_full_logits"}
    assert ran(run("dvc", "repro", cwd=project).stdout) == {"test_full_logits", "evaluate", "assemble", "speed"}
    teacher = json.loads((project / "metrics" / "teacher.json").read_text())
    student = json.loads((project / "metrics" / "student.json").read_text())
    assert teacher["test_full"]["n"] == student["test_full"]["n"] == 20
    assert 0 <= student["test_full"]["agreement_with_teacher"] <= 1
    assert json.loads((project / "metrics" / "teacher_inference" / "test_full.json").read_text())["n"] == 20


def test_a_new_test_sample_does_not_refit_the_student(project):
    """The student learns from the transfer set, its logits and the labeled split only."""
    set_param(project, "split", "n_test", 10)
    assert changed(project) == {"prepare"}
    reran = ran(run("dvc", "repro", cwd=project).stdout)
    # the test sample's sentences too; the transfer set's are as they were
    assert reran == {"prepare", "test_logits", "sentences", "test_sentence_logits", "evaluate", "short_texts",
                     "assemble", "curve", "speed"}
    assert json.loads((project / "metrics" / "student.json").read_text())["n"] == 10
    assert json.loads((project / "models" / "student" / "lineage.json").read_text())["metrics"]["n_test"] == 10


def test_plots_show_the_teacher_training_and_the_learning_curve(project):
    shown = json.loads(run("dvc", "plots", "show", "--json", cwd=project).stdout)["data"]
    names = set(shown)
    assert any(name.endswith("train/loss.tsv") for name in names), names
    assert any(name.endswith("train/learning_rate.tsv") for name in names), names
    assert any(name.endswith("train/accuracy.tsv") for name in names), names
    assert any(name.endswith("heldout/accuracy.tsv") for name in names), names  # teacher.n_heldout: 4
    assert any("Learning curve" in name for name in names), names
    curve = next(plot for name, plot in shown.items() if "Learning curve" in name)[0]
    assert '"type": "log"' in json.dumps(curve["content"])  # the custom template, found in .dvc/plots
    loss = next(plot for name, plot in shown.items() if name.endswith("train/loss.tsv"))[0]
    assert loss["type"] == "vega" and '"step"' in json.dumps(loss["content"])  # drawn against the step


def test_teacher_key_reruns_teacher_and_what_follows(project):
    set_param(project, "teacher", "epochs", 2)
    assert changed(project) == {"teacher"}
    assert ran(run("dvc", "repro", cwd=project).stdout) == {"teacher", "export", *LOGITS} | AFTER_STUDENT


def test_teacher_truncation_changes_what_reads_the_teacher(project):
    current = yaml.safe_load((project / "params.yaml").read_text())["teacher"]["truncation"]
    set_param(project, "teacher", "truncation", "head" if current == "head+tail" else "head+tail")
    assert changed(project) == {"teacher", *LOGITS, "speed"}


@pytest.mark.parametrize("code", ["src/bert2lr/linear.py", "src/bert2lr/_featurize.c"])
def test_changed_scorer_code_reruns_every_stage_that_scores(project, code):
    """The scorer computes every linear prediction: a change to it must not leave metrics stale."""
    with open(project / code, "a", encoding="utf-8") as f:
        f.write("\n/* changed */\n" if code.endswith(".c") else "\n# changed\n")
    assert changed(project) == SCORES_LINEAR_MODELS
    assert ran(run("dvc", "repro", cwd=project).stdout) == SCORES_LINEAR_MODELS
