"""Short texts: the sentence splitter and sampler, the sentences stage, the teacher on an empty file,
the short-text measurement, and the transfer set's sentences as a lever for the student."""

import json

import numpy as np
import pytest
from conftest import assert_one_line_error, bert2lr

from bert2lr.errors import UserError
from bert2lr.files import read_logits, read_reviews, write_logits, write_reviews
from bert2lr.linear import LinearTextModel
from bert2lr.params import LogitsParams, ShortTextsParams, StudentParams
from bert2lr.sentences import count_words, fragments, numbered_sentences, sample_sentences, split_sentences
from bert2lr.stages.logits import teacher_logits
from bert2lr.stages.prepare import clean
from bert2lr.stages.sentences import sentences_stage
from bert2lr.stages.short_texts import short_texts
from bert2lr.stages.student import student_stage

# --- the splitter ---------------------------------------------------------------------------------


def test_sentences_end_at_end_punctuation_followed_by_space_or_the_end():
    text = 'What a film! Was it good? Yes. It was "superb!" said everyone... Then we left.'
    assert fragments(text) == ["What a film!", "Was it good?", "Yes.", 'It was "superb!"', "said everyone...",
                               "Then we left."]
    # No break inside a number or before a comma or a letter: "7.5/10", "e.g.," and "3.14" stay whole.
    assert fragments("I give it 7.5/10, e.g., more than 3.14 stars.") == ["I give it 7.5/10, e.g., more than 3.14 stars."]


def test_br_tags_break_as_they_come_raw_and_as_prepare_leaves_them():
    raw = "The plot was thin<br /><br />the actors were great<br/>and the music<BR>was awful"
    assert fragments(raw) == ["The plot was thin", "the actors were great", "and the music", "was awful"]
    # prepare turns each <br /> into a space: IMDB's paragraph break <br /><br /> is two spaces in the
    # splits and still breaks; a single <br /> is one space there, no break
    assert fragments(clean(raw)) == ["The plot was thin", "the actors were great and the music was awful"]
    # one space is no break
    assert fragments("no punctuation at all here") == ["no punctuation at all here"]


def test_min_words_drops_short_fragments_and_numbers_every_fragment():
    text = "Wow. I really loved this film. 10/10! -- Go see it now, all of you."
    assert [count_words(f) for f in fragments(text)] == [1, 5, 1, 7]  # "--" is no word, "10/10" is one
    assert split_sentences(text) == ["I really loved this film.", "-- Go see it now, all of you."]
    assert numbered_sentences(text, 4) == [(1, "I really loved this film."), (3, "-- Go see it now, all of you.")]
    assert numbered_sentences(text, 1)[1] == (1, "I really loved this film.")  # the same number whatever min_words
    assert split_sentences(text, 8) == [] and split_sentences("") == []


def test_abbreviations_split_wrongly_into_shorter_pieces():
    """The documented trade-off of a regex: "Mr." ends a sentence; nothing is lost, a piece is shorter."""
    assert fragments("I liked Mr. Smith in it.") == ["I liked Mr.", "Smith in it."]


def test_the_splitter_is_deterministic():
    text = "A. B c d e! " * 50 + "<br /><br />" + "f g h i? " * 50
    assert split_sentences(text, 1) == split_sentences(text, 1) and len(split_sentences(text, 1)) == 150


# --- the sampler ----------------------------------------------------------------------------------

REVIEWS = [{"id": f"test/pos/{i}_9", "text": " ".join(f"Sentence {k} of review {i} here." for k in range(i % 4 + 1)),
            "label": i % 2} for i in range(30)]


def test_the_sampler_draws_n_sentences_with_their_review_ids_and_labels():
    sampled = sample_sentences(REVIEWS, 20, 0)
    assert len(sampled) == 20 and len({s["id"] for s in sampled}) == 20
    by_id = {r["id"]: r for r in REVIEWS}
    for s in sampled:
        review_id, k = s["id"].rsplit("/s", 1)
        assert split_sentences(by_id[review_id]["text"])[int(k)] == s["text"]
        assert s["label"] == by_id[review_id]["label"]
    # in the reviews' order, then the sentences'
    order = [(int(s["id"].split("/")[2].split("_")[0]), int(s["id"].rsplit("/s", 1)[1])) for s in sampled]
    assert order == sorted(order)


def test_the_sampler_is_deterministic_and_follows_its_seed():
    assert sample_sentences(REVIEWS, 20, 0) == sample_sentences(REVIEWS, 20, 0)
    assert sample_sentences(REVIEWS, 20, 0) != sample_sentences(REVIEWS, 20, 1)
    assert sample_sentences(REVIEWS, 20, (0, 0)) != sample_sentences(REVIEWS, 20, (0, 1))  # two streams of seed 0


def test_the_sampler_takes_all_where_there_are_fewer_and_copies_no_missing_label():
    unlabeled = [{"id": r["id"], "text": r["text"]} for r in REVIEWS]
    everything = sample_sentences(unlabeled, 10**12, 3)
    assert len(everything) == sum(i % 4 + 1 for i in range(30)) and all("label" not in s for s in everything)
    assert sample_sentences(unlabeled, 0, 3) == [] and sample_sentences([{"id": "a", "text": ""}], 5, 3) == []


# --- the sentences stage --------------------------------------------------------------------------

def test_sentences_stage_writes_labeled_test_and_unlabeled_transfer_sentences(workspace, tmp_path):
    root, _, _ = workspace
    s = root / "splits"
    p = ShortTextsParams(n_test_sentences=15, n_transfer_sentences=6, min_words=3)
    counts = sentences_stage(s / "test.jsonl", s / "unlabeled.jsonl", tmp_path / "t.jsonl", tmp_path / "u.jsonl", p)
    test, transfer = read_reviews(tmp_path / "t.jsonl", need_labels=True), read_reviews(tmp_path / "u.jsonl")
    assert counts == {"test": len(test), "transfer": 6} and len(transfer) == 6
    labels = {r["id"]: r["label"] for r in read_reviews(s / "test.jsonl")}
    assert all(r["label"] == labels[r["id"].rsplit("/s", 1)[0]] for r in test)
    assert all("label" not in r and count_words(r["text"]) >= 3 for r in transfer)
    # a new n_test_sentences leaves the transfer set's sentences as they were (independent streams)
    sentences_stage(s / "test.jsonl", s / "unlabeled.jsonl", tmp_path / "t2.jsonl", tmp_path / "u2.jsonl",
                    p.model_copy(update={"n_test_sentences": 5}))
    assert (tmp_path / "u2.jsonl").read_bytes() == (tmp_path / "u.jsonl").read_bytes()
    # none from the transfer set: an empty file, which only readers told so accept
    sentences_stage(s / "test.jsonl", s / "unlabeled.jsonl", tmp_path / "t3.jsonl", tmp_path / "u3.jsonl",
                    p.model_copy(update={"n_transfer_sentences": 0}))
    assert (tmp_path / "u3.jsonl").read_bytes() == b"" and read_reviews(tmp_path / "u3.jsonl", allow_empty=True) == []
    with pytest.raises(UserError, match="the split is empty"):
        read_reviews(tmp_path / "u3.jsonl")


def test_a_teacher_of_precomputed_scores_gets_no_sentences(workspace, tmp_path):
    """Its table has a score per text it was made for, none for a sentence: both files empty."""
    root, _, _ = workspace
    s = root / "splits"
    counts = sentences_stage(s / "test.jsonl", s / "unlabeled.jsonl", tmp_path / "t.jsonl", tmp_path / "u.jsonl",
                             ShortTextsParams(), scores_teacher=True)
    assert counts == {"test": 0, "transfer": 0} and (tmp_path / "t.jsonl").read_bytes() == b""
    message = one_line_error({"teacher": {"source": "scores", "scores_path": "s.csv", "scores_columns": {"a": "b"}},
                              "short_texts": {"n_transfer_sentences": 10}})
    assert "'short_texts.n_transfer_sentences' (10) must be 0 with 'teacher.source: scores'" in message


def one_line_error(raw) -> str:
    from bert2lr.params import parse_params

    with pytest.raises(UserError) as info:
        parse_params(raw)
    assert "\n" not in str(info.value)
    return str(info.value)


def test_sentences_stage_refuses_a_min_words_no_sentence_has(workspace, tmp_path):
    root, _, _ = workspace
    s = root / "splits"
    with pytest.raises(UserError, match=r"test.jsonl: no sentence of at least 1000 words in its 12 reviews"):
        sentences_stage(s / "test.jsonl", s / "unlabeled.jsonl", tmp_path / "t.jsonl", tmp_path / "u.jsonl",
                        ShortTextsParams(min_words=1000))
    assert not (tmp_path / "t.jsonl").exists()


@pytest.mark.slow  # the CLI end to end, in subprocesses that import the heavy libraries
def test_a_negative_sentence_count_is_one_line(tmp_path, archive):
    (tmp_path / "params.yaml").write_text("short_texts:\n  n_test_sentences: -1\n")
    assert_one_line_error(bert2lr("sentences", "--test", "t.jsonl", "--unlabeled", "u", "--test-out", "a.jsonl",
                                  "--transfer-out", "b.jsonl", cwd=tmp_path),
                          "params.yaml: 'short_texts.n_test_sentences' must be at least 1, got -1")
    (tmp_path / "params.yaml").write_text("{}")
    assert_one_line_error(bert2lr("student", "--unlabeled", "u", "--teacher-logits", "l", "--labeled", "l.jsonl",
                                  "--out", "c", "--sentences", "s.jsonl", cwd=tmp_path),
                          "--sentences and --sentence-logits go together")


# --- the teacher on sentences, and on none ---------------------------------------------------------

def test_the_teacher_scores_an_empty_file_as_no_rows(workspace, tmp_path):
    root, p, _ = workspace
    (tmp_path / "none.jsonl").write_bytes(b"")
    info = teacher_logits(root / "teacher", root / "teacher_onnx", tmp_path / "none.jsonl", tmp_path / "none.npz",
                          tmp_path / "none.json", p, LogitsParams())
    assert info["n"] == 0 and info["reviews_per_s"] is None
    assert read_logits(tmp_path / "none.npz", [], n_classes=2).shape == (0, 2)
    assert json.loads((tmp_path / "none.json").read_text())["n"] == 0


@pytest.fixture(scope="module")
def scored_sentences(workspace, tmp_path_factory):
    """The test sample's and the transfer set's sentences of the workspace, scored by its teacher."""
    root, p, _ = workspace
    s, out = root / "splits", tmp_path_factory.mktemp("sentences")
    sentences_stage(s / "test.jsonl", s / "unlabeled.jsonl", out / "test.jsonl", out / "transfer.jsonl",
                    ShortTextsParams(n_test_sentences=1000, n_transfer_sentences=15, min_words=3))
    for name in ("test", "transfer"):
        teacher_logits(root / "teacher", root / "teacher_onnx", out / f"{name}.jsonl", out / f"{name}.npz",
                       out / f"{name}_info.json", p, LogitsParams(batch_size=4))
    return out


def test_short_texts_compares_teacher_and_student_on_sentences_and_reviews(workspace, student_dir, scored_sentences,
                                                                          tmp_path):
    root, _, _ = workspace
    out = tmp_path / "metrics" / "short_texts.json"
    results = short_texts(scored_sentences / "test.jsonl", scored_sentences / "test.npz", root / "splits" / "test.jsonl",
                          root / "logits" / "test.npz", student_dir.parent / "candidate", out)
    assert json.loads(out.read_text()) == results
    sentences, reviews = results["sentences"], results["reviews"]
    assert sentences["n"] == len(read_reviews(scored_sentences / "test.jsonl")) > reviews["n"] == 12
    assert sentences["mean_words"] < reviews["mean_words"]
    for r in (sentences, reviews):
        assert 0 <= r["student_accuracy"] <= 1 and 0 <= r["teacher_accuracy"] <= 1 and 0 <= r["agreement"] <= 1
        assert r["ratio"] == pytest.approx(r["student_accuracy"] / r["teacher_accuracy"], abs=1e-4)
    # no sentences (a teacher of precomputed scores): the whole reviews only
    (tmp_path / "none.jsonl").write_bytes(b"")
    alone = short_texts(tmp_path / "none.jsonl", tmp_path / "unused.npz", root / "splits" / "test.jsonl",
                        root / "logits" / "test.npz", student_dir.parent / "candidate", out)
    assert alone["sentences"] == {"n": 0, "mean_words": None, "teacher_accuracy": None, "student_accuracy": None,
                                  "ratio": None, "agreement": None} and alone["reviews"] == reviews
    # the teacher's predictions are its cached logits': a file of other sentences is refused
    with pytest.raises(UserError, match="review ids do not match"):
        short_texts(scored_sentences / "test.jsonl", root / "logits" / "test.npz", root / "splits" / "test.jsonl",
                    root / "logits" / "test.npz", student_dir.parent / "candidate", out)


# --- the lever: sentences in the student's transfer set -------------------------------------------

def vocabulary(model: LinearTextModel) -> set[str]:
    return {bytes(model.vocabulary[a:b]).decode() for a, b in zip(model.offsets[:-1], model.offsets[1:])}


@pytest.fixture
def made_up_sentences(tmp_path):
    """Three sentences with a word no review has, which the teacher finds very positive."""
    sentences = [{"id": f"train/unsup/{i}_0/s0", "text": f"zorglub the film {w}"} for i, w in enumerate("abc")]
    write_reviews(tmp_path / "sentences.jsonl", sentences)
    write_logits(tmp_path / "sentences.npz", [s["id"] for s in sentences], np.tile([-4.0, 4.0], (3, 1)))
    return tmp_path / "sentences.jsonl", tmp_path / "sentences.npz"


@pytest.mark.parametrize("features", ["tfidf", "hashing"])
def test_a_student_with_transfer_sentences_learns_from_both(workspace, made_up_sentences, tmp_path, features):
    root, _, _ = workspace
    s, logits = root / "splits", root / "logits" / "unlabeled.npz"
    p = StudentParams(features=features, n_buckets=2**12) if features == "hashing" else StudentParams()
    without = student_stage(s / "unlabeled.jsonl", logits, s / "labeled.jsonl", tmp_path / "without", p)
    with_sentences = student_stage(s / "unlabeled.jsonl", logits, s / "labeled.jsonl", tmp_path / "with", p,
                                   sentences=made_up_sentences[0], sentence_logits=made_up_sentences[1])
    assert (tmp_path / "with" / "model.npz").read_bytes() != (tmp_path / "without" / "model.npz").read_bytes()
    # the sentences' word moves the margin up only in the student that learned from them
    probe = ["zorglub zorglub"]
    assert with_sentences.decision_function(probe)[0] > without.decision_function(probe)[0] + 0.1
    if features == "tfidf":  # and the transfer set is still in: its n-grams stay features
        assert vocabulary(without) < vocabulary(with_sentences) and "zorglub" in vocabulary(with_sentences)


def test_an_empty_sentences_file_fits_the_same_student_byte_for_byte(workspace, tmp_path):
    root, _, _ = workspace
    s, logits = root / "splits", root / "logits" / "unlabeled.npz"
    (tmp_path / "none.jsonl").write_bytes(b"")
    write_logits(tmp_path / "none.npz", [], np.zeros((0, 2)))
    student_stage(s / "unlabeled.jsonl", logits, s / "labeled.jsonl", tmp_path / "a", StudentParams())
    student_stage(s / "unlabeled.jsonl", logits, s / "labeled.jsonl", tmp_path / "b", StudentParams(),
                  sentences=tmp_path / "none.jsonl", sentence_logits=tmp_path / "none.npz")
    assert (tmp_path / "a" / "model.npz").read_bytes() == (tmp_path / "b" / "model.npz").read_bytes()


def test_sentence_logits_must_be_the_sentences(workspace, made_up_sentences, tmp_path):
    root, _, _ = workspace
    s = root / "splits"
    with pytest.raises(UserError, match="review ids do not match"):
        student_stage(s / "unlabeled.jsonl", root / "logits" / "unlabeled.npz", s / "labeled.jsonl", tmp_path / "c",
                      StudentParams(), sentences=made_up_sentences[0], sentence_logits=root / "logits" / "test.npz")
    assert not (tmp_path / "c").exists()


def test_the_lineage_names_the_sentences_a_student_learned_from(workspace, archive, made_up_sentences, student_dir,
                                                                 tmp_path):
    from bert2lr.serving.audit import describe
    from bert2lr.serving.deploy import read_lineage
    from bert2lr.stages.assemble import assemble
    from bert2lr.stages.evaluate import evaluate

    root, _, _ = workspace
    s = root / "splits"
    p = StudentParams()
    student_stage(s / "unlabeled.jsonl", root / "logits" / "unlabeled.npz", s / "labeled.jsonl", tmp_path / "cand", p,
                  sentences=made_up_sentences[0], sentence_logits=made_up_sentences[1])
    evaluate(s / "test.jsonl", s / "test_full.jsonl", root / "baseline", tmp_path / "cand", root / "logits" / "test.npz",
             tmp_path / "metrics", student_dir.parent / "metrics" / "validation.json")
    record = assemble(tmp_path / "cand", tmp_path / "metrics" / "student.json", "imdb",
                      {role: archive for role in ("labeled", "unlabeled", "test")},
                      {name: s / f"{name}.jsonl" for name in ("labeled", "unlabeled", "test", "test_full")},
                      root / "teacher", root / "logits" / "unlabeled.npz", tmp_path / "student", p,
                      *made_up_sentences)
    section = record["transfer_sentences"]
    assert section["n_sentences"] == 3 and section["path"] == str(made_up_sentences[0])
    assert section["logits"]["path"] == str(made_up_sentences[1]) and len(section["sha256"]) == 64
    assert read_lineage(tmp_path / "student")["transfer_sentences"] == section
    assert "sentences           3 of the transfer set" in describe(record)
    # a record with a damaged section is refused by name
    damaged = {**record, "transfer_sentences": {**section, "n_sentences": "3"}}
    (tmp_path / "student" / "lineage.json").write_text(json.dumps(damaged))
    with pytest.raises(UserError, match="transfer_sentences.n_sentences is '3'; expected a whole number"):
        read_lineage(tmp_path / "student")
    # an empty sentences file: no section, the record is as before
    (tmp_path / "none.jsonl").write_bytes(b"")
    record = assemble(tmp_path / "cand", tmp_path / "metrics" / "student.json", "imdb",
                      {role: archive for role in ("labeled", "unlabeled", "test")},
                      {name: s / f"{name}.jsonl" for name in ("labeled", "unlabeled", "test", "test_full")},
                      root / "teacher", root / "logits" / "unlabeled.npz", tmp_path / "student2", p,
                      tmp_path / "none.jsonl", made_up_sentences[1])
    assert "transfer_sentences" not in record
