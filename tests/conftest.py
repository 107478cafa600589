"""Tiny real inputs: a synthetic aclImdb archive and a randomly initialised BERT."""

from __future__ import annotations

import io
import os
import random
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml

POSITIVE = ["great", "wonderful", "superb", "moving", "brilliant", "loved", "charming", "délicieux"]
NEGATIVE = ["awful", "boring", "terrible", "dull", "worst", "hated", "clumsy", "ennuyeux"]
NEUTRAL = ["the", "film", "plot", "actor", "scene", "movie", "story", "it", "was", "and", "really"]

def bert2lr(*args, cwd):
    """The CLI as a user runs it, in a subprocess."""
    return subprocess.run([sys.executable, "-m", "bert2lr", *args], cwd=cwd, capture_output=True, text=True)


def assert_one_line_error(result, *fragments):
    """A user mistake: exit 2, one `bert2lr: error:` line naming what is wrong, no traceback, no stdout."""
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("bert2lr: error: ")
    for fragment in fragments:
        assert fragment in last, last
    assert result.stdout == ""


TINY_PARAMS = {
    "fetch": {"sources": [{"source": "aclImdb_v1.tar.gz"}]},  # the fixtures point it at the synthetic archive
    "split": {"seed": 0, "n_labeled": 16, "n_unlabeled": 20, "n_test": 12},
    "baseline": {"ngram_max": 2},
    "teacher": {"max_length": 32, "head_tokens": 12, "epochs": 1, "batch_size": 8, "learning_rate": 1e-3,
                "n_heldout": 4},
    # three shards (logits@0, @1, @2), the last one short
    "logits": {"batch_size": 8, "shard_size": 8, "shards": [0, 1, 2]},
    "student": {"features": "tfidf", "fit": "ridge", "target": "margin", "alpha": 0.5},
    # every sentence of the test sample and of the transfer set: the student learns from them too
    "short_texts": {"n_test_sentences": 1000, "n_transfer_sentences": 1000, "min_words": 3},
    "validation": {"folds": 2, "alpha": [2.0], "gold_weight": [0.0]},
}


def review(rng: random.Random, positive: bool) -> str:
    words = rng.choices(NEUTRAL, k=rng.randint(4, 12)) + rng.choices(POSITIVE if positive else NEGATIVE, k=3)
    rng.shuffle(words)
    return " ".join(words[:6]) + ".<br /><br />" + " ".join(words[6:]) + " ★"


def make_archive(path: Path, n_train: int = 40, n_test: int = 20, n_unsup: int = 12,
                 with_test: bool = True, extra: dict[str, bytes] | None = None) -> Path:
    """A synthetic aclImdb_v1.tar.gz in the original layout, with one empty review."""
    rng = random.Random(0)
    files: dict[str, bytes] = {"aclImdb/README": b"synthetic", "aclImdb/train/labeledBow.feat": b"0 0:1\n"}
    halves = {"train": n_train} | ({"test": n_test} if with_test else {})
    for half, n in halves.items():
        for i in range(n):
            pos = i % 2 == 0
            folder, rating = ("pos", 7 + i % 4) if pos else ("neg", 1 + i % 4)
            files[f"aclImdb/{half}/{folder}/{i}_{rating}.txt"] = review(rng, pos).encode()
    for i in range(n_unsup):
        files[f"aclImdb/train/unsup/{i}_0.txt"] = review(rng, i % 2 == 0).encode()
    files["aclImdb/train/neg/999_2.txt"] = b""  # an empty review is still a review
    files.update(extra or {})
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def make_tiny_bert(path: Path, id2label: list[str] | None = None) -> Path:
    """A randomly initialised 2-layer BERT of a few hundred kilobytes, with its own vocabulary.

    id2label: make it a complete classifier of these classes, in this output order (a stand-in for
    one fine-tuned elsewhere); else a two-output model whose head the teacher stage replaces.
    """
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    path.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", "<", ">", "/", "★"]
    vocab += sorted({w for w in POSITIVE + NEGATIVE + NEUTRAL + ["br"]})
    vocab += [f"##{c}" for c in "abcdefghijklmnopqrstuvwxyzé"] + list("abcdefghijklmnopqrstuvwxyzé")
    tokenizer = BertTokenizerFast(vocab={token: i for i, token in enumerate(vocab)}, do_lower_case=True)
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64, num_labels=2)
    if id2label is not None:
        config.num_labels = len(id2label)
        config.id2label = dict(enumerate(id2label))
        config.label2id = {name: i for i, name in enumerate(id2label)}
    BertForSequenceClassification(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    return make_tiny_bert(tmp_path_factory.mktemp("models") / "tiny-bert")


# A classifier of the three classes of the table tests, with its outputs in another order than the
# sorted one classes.json lists them in.
CLASSIFIER_ORDER = ["tech", "monde", "sport"]


@pytest.fixture(scope="session")
def tiny_classifier(tmp_path_factory) -> Path:
    return make_tiny_bert(tmp_path_factory.mktemp("models") / "tiny-classifier", id2label=CLASSIFIER_ORDER)


@pytest.fixture(scope="session")
def archive(tmp_path_factory) -> Path:
    return make_archive(tmp_path_factory.mktemp("raw") / "aclImdb_v1.tar.gz")


TINY_TEACHER = {"max_length": 32, "truncation": "head", "epochs": 1, "batch_size": 8, "learning_rate": 1e-3}


@pytest.fixture(scope="session")
def workspace(tmp_path_factory, archive, tiny_bert):
    """prepare, baseline, teacher and logits once, on tiny data: (root, teacher params, card)."""
    from bert2lr.files import read_reviews
    from bert2lr.params import BaselineParams, LogitsParams, SplitParams, TeacherParams
    from bert2lr.stages.baseline import train_baseline
    from bert2lr.stages.export import export_teacher
    from bert2lr.stages.logits import teacher_logits
    from bert2lr.stages.prepare import prepare
    from bert2lr.stages.teacher import train_teacher

    root = tmp_path_factory.mktemp("ws")
    prepare(archive, root / "splits", SplitParams(n_labeled=16, n_unlabeled=20, n_test=12))
    labeled = read_reviews(root / "splits" / "labeled.jsonl", need_labels=True)
    texts, labels = [r["text"] for r in labeled], [r["label"] for r in labeled]
    train_baseline(texts, labels, root / "baseline", BaselineParams(ngram_max=2))
    p = TeacherParams(model=str(tiny_bert), **TINY_TEACHER)
    card = train_teacher(texts, labels, root / "teacher", root / "teacher_training", p)
    export_teacher(root / "teacher", root / "teacher_onnx", LogitsParams())  # the default back end, ONNX Runtime
    for split in ("unlabeled", "test"):
        teacher_logits(root / "teacher", root / "teacher_onnx", root / "splits" / f"{split}.jsonl",
                       root / "logits" / f"{split}.npz", root / "logits_info" / f"{split}.json", p,
                       LogitsParams(batch_size=4))
    return root, p, card


@pytest.fixture(scope="session")
def student_dir(workspace, archive, tmp_path_factory) -> Path:
    """A deployable student with its lineage record, as the student, evaluate and assemble stages write it."""
    from bert2lr.params import BaselineParams, StudentParams, ValidationParams
    from bert2lr.stages.assemble import assemble
    from bert2lr.stages.evaluate import evaluate
    from bert2lr.stages.student import student_stage
    from bert2lr.stages.validate import validate_stage

    root, _, _ = workspace
    s = root / "splits"
    work = tmp_path_factory.mktemp("student")
    p = StudentParams(features="tfidf", fit="ridge", target="margin")
    student_stage(s / "unlabeled.jsonl", root / "logits" / "unlabeled.npz", s / "labeled.jsonl", work / "candidate", p)
    validate_stage(s / "unlabeled.jsonl", root / "logits" / "unlabeled.npz", s / "labeled.jsonl",
                   work / "metrics" / "validation.json", p, BaselineParams(ngram_max=2),
                   ValidationParams(**TINY_PARAMS["validation"]))
    evaluate(s / "test.jsonl", s / "test_full.jsonl", root / "baseline", work / "candidate",
             root / "logits" / "test.npz", work / "metrics", work / "metrics" / "validation.json")
    out = work / "student"
    assemble(work / "candidate", work / "metrics" / "student.json", "imdb",
             {role: archive for role in ("labeled", "unlabeled", "test")},
             {name: s / f"{name}.jsonl" for name in ("labeled", "unlabeled", "test", "test_full")},
             root / "teacher", root / "logits" / "unlabeled.npz", out, p)
    return out


@pytest.fixture
def params_file(tmp_path, tiny_bert, archive):
    def write(**overrides) -> Path:
        params = {k: dict(v) for k, v in TINY_PARAMS.items()}
        params["fetch"]["sources"] = [str(archive)]
        params["teacher"]["model"] = str(tiny_bert)
        for group, values in overrides.items():
            params.setdefault(group, {}).update(values)
        if "shards" not in overrides.get("logits", {}):  # the list that fits the sizes given
            n_shards = -(-params["split"]["n_unlabeled"] // params["logits"]["shard_size"])
            params["logits"]["shards"] = list(range(n_shards))
        path = tmp_path / "params.yaml"
        path.write_text(yaml.safe_dump(params), encoding="utf-8")
        return path

    return write


# Tables of one's own: three string classes (sorted, as prepare orders string labels: label ids 0, 1, 2),
# a title and a body, non-ASCII text; the labeled and test tables are CSV, the unlabeled one JSON Lines.
TABLE_CLASSES = ["monde", "sport", "tech"]
TABLE_WORDS = {"monde": ["élection", "président", "frontière", "北京", "diplomatie"],
               "sport": ["match", "but", "équipe", "coupe", "stade"],
               "tech": ["logiciel", "puce", "réseau", "données", "東京"]}
TABLE_FILLER = ["le", "la", "un", "et", "du", "à", "après", "selon", "nouveau"]
# Relative to the project root, as a user names a table in params.yaml.
TABLES = {"labeled": "tables/news.csv", "unlabeled": "tables/more.jsonl", "test": "tables/test.csv"}
TABLE_SIZES = {"labeled": 45, "unlabeled": 36, "test": 24}


def news_rows(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = TABLE_CLASSES[i % 3]
        title = " ".join(rng.choices(TABLE_WORDS[label], k=2) + rng.choices(TABLE_FILLER, k=2))
        body = " ".join(rng.choices(TABLE_FILLER, k=5) + rng.choices(TABLE_WORDS[label], k=3)) + ", «fin»"
        rows.append({"label": label, "title": title, "body": body})
    return rows


def make_tables(root: Path) -> dict[str, Path]:
    """TABLES under root: the labeled and test CSV files (label, title, body), the unlabeled JSON Lines
    (title, body: no label)."""
    import csv
    import json

    paths = {role: root / name for role, name in TABLES.items()}
    paths["labeled"].parent.mkdir(parents=True, exist_ok=True)
    for role, seed in (("labeled", 0), ("test", 1)):
        with open(paths[role], "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, ["label", "title", "body"])
            writer.writeheader()
            writer.writerows(news_rows(TABLE_SIZES[role], seed))
    paths["unlabeled"].write_text("".join(json.dumps({"title": r["title"], "body": r["body"]}, ensure_ascii=False)
                                          + "\n" for r in news_rows(TABLE_SIZES["unlabeled"], 2)), encoding="utf-8")
    return paths


@pytest.fixture(scope="session")
def table_project(tmp_path_factory, tiny_bert):
    """The pipeline after one `dvc repro` on tables of one's own (TABLES, committed with the project),
    with fetch.sources pointing nowhere: a table needs no IMDB archive. (project, the repro's output).

    Read only, as `reproduced`: a test that changes it works on its own copy (dvc_project.copy_project).
    """
    from dvc_project import commit, make_project, run

    root = tmp_path_factory.mktemp("table")
    project = make_project(root / "project", root / "nowhere" / "aclImdb_v1.tar.gz", tiny_bert)
    make_tables(project)
    params = yaml.safe_load((project / "params.yaml").read_text(encoding="utf-8"))
    params["data"].update({"source": "table", "path": TABLES["labeled"], "unlabeled_path": TABLES["unlabeled"],
                           "test_path": TABLES["test"], "text_columns": ["title", "body"], "label_column": "label"})
    params["split"].update({"n_labeled": 36, "n_unlabeled": 30, "n_test": 18})
    params["logits"].update({"shard_size": 10, "shards": [0, 1, 2]})  # the shards of dvc_project.SHARDS
    params["curve"]["sizes"] = [10, 20]
    (project / "params.yaml").write_text(yaml.safe_dump(params, allow_unicode=True), encoding="utf-8")
    commit(project, "my own tables")
    first = run("dvc", "repro", cwd=project)
    commit(project, "first run")
    return project, first.stdout


@pytest.fixture(scope="session")
def reproduced(tmp_path_factory, archive, tiny_bert):
    """This project's pipeline after one full `dvc repro` on tiny data: (project, the repro's output).

    Shared by every test that needs a reproduced project; a test that changes it works on its own
    copy (dvc_project.copy_project), so tests do not depend on each other's order.
    """
    from dvc_project import reproduce

    return reproduce(tmp_path_factory.mktemp("e2e") / "project", archive, tiny_bert)


os.environ.setdefault("HF_HUB_OFFLINE", "1")
