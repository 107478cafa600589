"""Teacher, logits, student and evaluate on the synthetic archive and a tiny real BERT."""

import hashlib
import json

import numpy as np
import pytest
from conftest import NEGATIVE, POSITIVE, TINY_TEACHER
from transformers import BertConfig, BertModel, CLIPVisionConfig

from bert2lr import bert as bert_module
from bert2lr.bert import encode, load_fine_tuned, predict_logits
from bert2lr.distill import fit_student
from bert2lr.errors import UserError
from bert2lr.files import read_logits, read_reviews
from bert2lr.linear import LinearTextModel
from bert2lr.params import StudentParams, TeacherParams
from bert2lr.scoring import render_side_by_side
from bert2lr.stages.evaluate import evaluate
from bert2lr.stages.teacher import train_teacher

TINY = TeacherParams(**TINY_TEACHER)


def test_teacher_is_saved_with_its_card(workspace):
    root, p, card = workspace
    assert (root / "teacher" / "model.safetensors").is_file()
    assert json.loads((root / "teacher" / "training.json").read_text())["params"]["epochs"] == 1
    assert card["n_reviews"] == 16 and card["steps"] == 2
    assert [x.name for x in root.iterdir() if x.name.startswith(".")] == []


def test_logits_keep_review_order_despite_length_batching(workspace, tiny_bert):
    root, p, _ = workspace
    reviews = read_reviews(root / "splits" / "unlabeled.jsonl")
    cached = read_logits(root / "logits" / "unlabeled.npz", [r["id"] for r in reviews])
    tokenizer, model = load_fine_tuned(root / "teacher")
    one_by_one = np.vstack([predict_logits(tokenizer, model, [r["text"]], p, 1, "x") for r in reviews])
    np.testing.assert_allclose(cached, one_by_one, atol=1e-5)
    with pytest.raises(UserError, match="review ids do not match"):
        read_logits(root / "logits" / "unlabeled.npz", [r["id"] for r in reviews][::-1])
    info = json.loads((root / "logits_info" / "unlabeled.json").read_text())
    assert info["n"] == 20 and info["reviews_per_s"] > 0


def test_quantized_logits_are_close(workspace):
    root, p, _ = workspace
    texts = [r["text"] for r in read_reviews(root / "splits" / "test.jsonl")]
    full = predict_logits(*load_fine_tuned(root / "teacher"), texts, p, 4, "fp32")
    int8 = predict_logits(*load_fine_tuned(root / "teacher", quantize=True), texts, p, 4, "int8")
    assert np.abs(full - int8).max() < 0.5


def test_head_tail_truncation_keeps_both_ends(tiny_bert):
    tokenizer, _ = bert_module.load_classifier(str(tiny_bert), new_head=True)
    text = " ".join(POSITIVE) + " " + " ".join(["the"] * 40) + " " + " ".join(NEGATIVE)
    p = TeacherParams(max_length=12, truncation="head+tail", head_tokens=4)
    ids = encode(tokenizer, [text, "great film"], p)
    tokens = tokenizer.convert_ids_to_tokens(ids[0])
    assert len(ids[0]) == 12 and tokens[0] == "[CLS]" and tokens[-1] == "[SEP]"
    assert tokens[1:5] == POSITIVE[:4] and tokens[-2] == NEGATIVE[-1]
    assert tokenizer.convert_ids_to_tokens(ids[1]) == ["[CLS]", "great", "film", "[SEP]"]
    head = encode(tokenizer, [text], TeacherParams(max_length=12, truncation="head"))
    head_tokens = tokenizer.convert_ids_to_tokens(head[0])
    assert len(head_tokens) == 12 and head_tokens[1:5] == POSITIVE[:4] and NEGATIVE[-1] not in head_tokens


def test_models_that_are_not_classifiers(tmp_path):
    with pytest.raises(UserError, match="not a transformers model folder"):
        bert_module.load_classifier(str(tmp_path))
    (tmp_path / "vision").mkdir()
    CLIPVisionConfig(hidden_size=8, intermediate_size=8, num_hidden_layers=1,
                     num_attention_heads=2).save_pretrained(tmp_path / "vision")
    with pytest.raises(UserError, match="cannot load as a sequence classifier"):
        bert_module.load_classifier(str(tmp_path / "vision"))
    with pytest.raises(UserError, match="never downloads at run time"):
        bert_module.load_classifier("no-such-org/no-such-model")
    with pytest.raises(UserError, match="teacher folder not found"):
        load_fine_tuned(tmp_path / "missing")


@pytest.mark.parametrize("num_labels", [1, 3])
def test_logits_take_a_teacher_of_two_or_more_labels(tmp_path, tiny_bert, num_labels):
    """K classes give (n, K) logits (the student and evaluate check K against classes.json); one label is refused."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert, num_labels=num_labels,
                                                               ignore_mismatched_sizes=True)
    model.save_pretrained(tmp_path / "k")
    AutoTokenizer.from_pretrained(tiny_bert).save_pretrained(tmp_path / "k")
    if num_labels == 1:
        with pytest.raises(UserError, match="1 label; expected 2 or more"):
            load_fine_tuned(tmp_path / "k")
    else:
        assert load_fine_tuned(tmp_path / "k")[1].config.num_labels == 3


def test_teacher_head_follows_the_classes(tmp_path, tiny_bert):
    """A 2-label classifier fine-tuned for three classes gets a new three-output head named by them."""
    _, model = bert_module.load_classifier(str(tiny_bert), new_head=True, classes=("a", "b", "c"))
    assert model.config.num_labels == 3 and model.config.id2label == {0: "a", 1: "b", 2: "c"}


def test_base_encoder_gets_a_fresh_head(tmp_path, tiny_bert):
    BertModel(BertConfig(vocab_size=80, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=16)).save_pretrained(tmp_path / "encoder")
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(tiny_bert).save_pretrained(tmp_path / "encoder")
    _, model = bert_module.load_classifier(str(tmp_path / "encoder"), new_head=True)
    assert model.config.num_labels == 2


def test_interrupted_teacher_leaves_no_output(tmp_path, tiny_bert, monkeypatch):
    original = bert_module.AutoTokenizer.from_pretrained

    def tokenizer_that_breaks_on_save(*args, **kwargs):
        tokenizer = original(*args, **kwargs)

        def save_pretrained(path, *a, **k):
            (path / "half-written").write_text("x")
            raise KeyboardInterrupt

        tokenizer.save_pretrained = save_pretrained
        return tokenizer

    monkeypatch.setattr(bert_module.AutoTokenizer, "from_pretrained", tokenizer_that_breaks_on_save)
    with pytest.raises(KeyboardInterrupt):
        train_teacher(["great", "awful"], [1, 0], tmp_path / "teacher", tmp_path / "training",
                      TINY.model_copy(update={"model": str(tiny_bert)}))
    assert list(tmp_path.iterdir()) == []


def test_reference_student_equals_margin_fit():
    rng = np.random.default_rng(0)
    texts = [" ".join(rng.choice(POSITIVE + NEGATIVE + ["the", "film"], size=8)) for _ in range(60)]
    margin = np.array([sum((w in POSITIVE) - (w in NEGATIVE) for w in t.split()) for t in texts], float)
    logits = np.column_stack([-margin / 2 + 1, margin / 2 + 1])
    reference = fit_student(texts, logits, StudentParams(features="count", min_df=1, fit="least_squares",
                                                        target="logits", gold_weight=0))
    on_margin = fit_student(texts, logits, StudentParams(features="count", min_df=1, fit="least_squares",
                                                        target="margin", gold_weight=0))
    np.testing.assert_allclose(reference.decision_function(texts), on_margin.decision_function(texts), atol=1e-6)
    assert np.mean((reference.decision_function(texts) > 0) == (margin > 0)) > 0.9
    soft = fit_student(texts, logits, StudentParams(features="tfidf", fit="logistic", target="soft_label",
                                                    alpha=0.01, temperature=2.0))
    decided = margin != 0
    assert np.mean((soft.decision_function(texts) > 0)[decided] == (margin > 0)[decided]) > 0.9
    gold = fit_student(texts, logits, StudentParams(fit="ridge", target="margin", gold_weight=2.0),
                       gold_texts=["great superb", "awful dull"], gold_labels=[1, 0])
    assert gold.predict(["great superb", "awful dull"]).tolist() == [1, 0]


def test_student_stage_and_evaluate(workspace, student_dir, tmp_path):
    root, _, _ = workspace
    s = root / "splits"
    lineage = json.loads((student_dir / "lineage.json").read_text())
    gate = lineage["gate"]
    assert gate["passed"] == (lineage["metrics"]["accuracy"] > gate["baseline_accuracy"])
    assert lineage["splits"]["unlabeled"]["n_reviews"] == 20
    assert len(lineage["reviews"]["labeled"]) == 16
    assert LinearTextModel.load(student_dir).n_features == lineage["model"]["n_features"]
    results = evaluate(s / "test.jsonl", s / "test_full.jsonl", root / "baseline", student_dir.parent / "candidate",
                       root / "logits" / "test.npz", tmp_path / "metrics",
                       student_dir.parent / "metrics" / "validation.json")
    assert set(results) == {"baseline", "teacher", "student"}
    for name, result in results.items():
        saved = json.loads((tmp_path / "metrics" / f"{name}.json").read_text())
        assert saved["accuracy"] == result["accuracy"] and saved["n"] == 12
        assert set(saved["report"]) == {"neg", "pos", "macro avg", "weighted avg"}
        rows = (tmp_path / "metrics" / "predictions" / f"{name}.csv").read_text().splitlines()
        assert rows[0] == "id,actual,predicted" and len(rows) == 13
    assert results["student"]["accuracy"] == lineage["metrics"]["accuracy"]
    assert results["student"]["test_full"]["n"] == 20
    assert 0 <= results["student"]["agreement_with_teacher"] <= 1
    text = render_side_by_side(results)
    assert "baseline (accuracy" in text and "weighted avg" in text and text.count("precision") == 3


def test_teacher_training_is_charted_by_dvclive(workspace):
    root, _, card = workspace
    record = root / "teacher_training"
    summary = json.loads((record / "metrics.json").read_text())
    assert summary["epoch"] == 1 and summary["step"] == card["steps"] - 1
    assert summary["train"]["loss"] > 0 and 0 <= summary["train"]["accuracy"] <= 1
    losses = [float(line.split("\t")[1]) for line in
              (record / "plots" / "metrics" / "train" / "loss.tsv").read_text().splitlines()[1:]]
    assert summary["train"]["epoch_loss"] == round(sum(losses) / len(losses), 4)  # one epoch here
    loss = (record / "plots" / "metrics" / "train" / "loss.tsv").read_text().splitlines()
    assert loss[0].split("\t")[:2] == ["step", "loss"] and len(loss) == 1 + card["steps"]
    assert not (record / "plots" / "metrics" / "heldout").exists()  # no held-out slice asked for
    assert [x.name for x in root.iterdir() if x.name.startswith(".")] == []


def test_held_out_slice_is_kept_from_training_and_scored_per_epoch(tmp_path, tiny_bert):
    texts = [f"{'great superb' if i % 2 else 'awful dull'} film {i}" for i in range(12)]
    labels = [i % 2 for i in range(12)]
    p = TINY.model_copy(update={"model": str(tiny_bert), "epochs": 2, "n_heldout": 4})
    card = train_teacher(texts, labels, tmp_path / "teacher", tmp_path / "training", p)
    assert card["n_reviews"] == 8
    rows = (tmp_path / "training" / "plots" / "metrics" / "heldout" / "accuracy.tsv").read_text().splitlines()
    assert len(rows) == 1 + 2  # one per epoch
    summary = json.loads((tmp_path / "training" / "metrics.json").read_text())
    assert summary["epoch"] == 2 and 0 <= summary["heldout"]["accuracy"] <= 1


def test_no_held_out_slice_trains_as_before(tmp_path, tiny_bert):
    """n_heldout 0 draws the same random numbers as a teacher from before the held-out slice existed."""
    from bert2lr.stages.teacher import hold_out

    assert hold_out(5, 0, 0) == ([0, 1, 2, 3, 4], [])
    train, held = hold_out(10, 3, 0)
    assert len(held) == 3 and sorted(train + held) == list(range(10)) and hold_out(10, 3, 0) == (train, held)


def test_the_gate_is_decided_on_validation_and_assemble_packs_it(workspace, student_dir, tmp_path):
    from bert2lr.scoring import quality_gate
    from bert2lr.stages.assemble import assemble

    root, _, _ = workspace
    s = root / "splits"
    candidate = student_dir.parent / "candidate"
    metrics = json.loads((student_dir.parent / "metrics" / "student.json").read_text())
    validation = json.loads((student_dir.parent / "metrics" / "validation.json").read_text())
    # the gate compares cross-validated accuracies on the labeled split, never the test sample's
    assert metrics["gate"] == validation["gate"] == quality_gate(validation["student"]["accuracy"],
                                                                 validation["baseline"]["accuracy"])
    assert metrics["validation_accuracy"] == validation["student"]["accuracy"]
    lineage = json.loads((student_dir / "lineage.json").read_text())
    assert lineage["gate"] == metrics["gate"] and lineage["metrics"]["accuracy"] == metrics["accuracy"]
    assert (student_dir / "model.npz").read_bytes() == (candidate / "model.npz").read_bytes()
    assert quality_gate(0.8, 0.8)["passed"] is False and quality_gate(0.81, 0.8)["passed"] is True
    assert metrics["model_sha256"] == hashlib.sha256((candidate / "model.npz").read_bytes()).hexdigest()
    splits = {name: s / f"{name}.jsonl" for name in ("labeled", "unlabeled", "test", "test_full")}
    # the metrics of another model: its gate must not travel with this one
    (tmp_path / "other.json").write_text(json.dumps({**metrics, "model_sha256": "0" * 64}))
    with pytest.raises(UserError, match="other.json scores another model .* run `dvc repro evaluate`"):
        assemble(candidate, tmp_path / "other.json", "imdb", {"labeled": s / "labeled.jsonl"}, splits, root / "teacher",
                 root / "logits" / "unlabeled.npz", tmp_path / "out", StudentParams())
    del metrics["gate"]
    (tmp_path / "student.json").write_text(json.dumps(metrics))
    with pytest.raises(UserError, match="student.json: no 'gate' in the student's metrics"):
        assemble(candidate, tmp_path / "student.json", "imdb", {"labeled": s / "labeled.jsonl"}, splits, root / "teacher",
                 root / "logits" / "unlabeled.npz", tmp_path / "out", StudentParams())
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("record", ["[1, 2]", '{"gate": {"passed": true}}', "not json"])
def test_evaluate_refuses_a_record_that_is_not_validations(workspace, student_dir, tmp_path, record):
    root, _, _ = workspace
    s = root / "splits"
    (tmp_path / "validation.json").write_text(record)
    with pytest.raises(UserError, match=r"validation.json: (not a validation record|validation record is not valid)"):
        evaluate(s / "test.jsonl", s / "test_full.jsonl", root / "baseline", student_dir.parent / "candidate",
                 root / "logits" / "test.npz", tmp_path / "metrics", tmp_path / "validation.json")
    assert not (tmp_path / "metrics").exists()
