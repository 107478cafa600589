"""Damaged inputs (archive, splits, teacher logits, teacher folder) end in one clear error, never a
traceback or a silent wrong result: through the functions, and a few through the real CLI."""

import gzip
import json
import shutil
import zipfile

import numpy as np
import pytest
from conftest import assert_one_line_error, bert2lr

from bert2lr.errors import UserError
from bert2lr.files import logits_digest, read_logits, read_reviews, read_transfer_shards, write_logits, write_reviews
from bert2lr.bert import load_fine_tuned
from bert2lr.bert import load_classifier


# --- splits ------------------------------------------------------------------------------------

GOOD = '{"id": "train/pos/1_9", "text": "good", "label": 1}\n'


@pytest.mark.parametrize("content, fragment", [
    (GOOD.encode() + b'{"id": "train/neg/2_1", "text": "bad \xff\xfe", "label": 0}\n',
     "labeled.jsonl:2: not UTF-8 text (invalid start byte at byte 38 of the line)"),
    (GOOD.encode() + b'["train/neg/2_1", "bad", 0]\n', "labeled.jsonl:2: expected an object with string 'id' and 'text'"),
    (GOOD.encode() + b'"just a string"\n', "labeled.jsonl:2: expected an object"),
    (GOOD.encode() * 2, "labeled.jsonl:2: id 'train/pos/1_9' already on line 1; expected each review once"),
    (b'{"id": "train/pos/1_9", "text": "good", "label": true}\n', "labeled.jsonl:1: expected 'label' 0 or 1, got True"),
    (b'{"id": "train/pos/1_9", "text": "good", "label": 1.0}\n', "labeled.jsonl:1: expected 'label' 0 or 1, got 1.0"),
    (b'{"id": 7, "text": "good", "label": 1}\n', "labeled.jsonl:1: expected an object with string 'id'"),
])
def test_bad_splits_name_the_line(tmp_path, content, fragment):
    (tmp_path / "labeled.jsonl").write_bytes(content)
    with pytest.raises(UserError) as info:
        read_reviews(tmp_path / "labeled.jsonl", need_labels=True)
    assert fragment in str(info.value)


def test_a_good_split_still_reads(tmp_path):
    (tmp_path / "s.jsonl").write_text(GOOD + '{"id": "train/neg/2_1", "text": "ennuyeux ★", "label": 0}\n',
                                      encoding="utf-8")
    assert [r["label"] for r in read_reviews(tmp_path / "s.jsonl", need_labels=True)] == [1, 0]
    assert read_reviews(tmp_path / "s.jsonl")[1]["text"] == "ennuyeux ★"


# --- teacher logits ----------------------------------------------------------------------------

IDS = ["train/pos/1_9", "train/neg/2_1", "train/unsup/3_0"]


def npz(path, **arrays):
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    return path


def test_written_logits_read_back(tmp_path):
    logits = np.array([[0.5, -0.5], [1.0, 2.0], [-3.0, 3.0]])
    write_logits(tmp_path / "l.npz", IDS, logits)
    np.testing.assert_array_equal(read_logits(tmp_path / "l.npz", IDS), logits.astype(np.float32))


def bad_logits(tmp_path):
    good = np.zeros((3, 2), dtype=np.float32)
    nan = good.copy()
    nan[1, 0] = np.nan
    inf = good.copy()
    inf[2, 1] = -np.inf
    ids = np.array(IDS)
    return {
        "nan": (dict(ids=ids, logits=nan), "row 1 (train/neg/2_1) holds [nan, 0.0]; expected finite logits"),
        "inf": (dict(ids=ids, logits=inf), "row 2 (train/unsup/3_0) holds [0.0, -inf]; expected finite logits"),
        "1-D": (dict(ids=ids, logits=good[:, 0]), "'logits' is a float32 array of shape (3,); expected floats of shape (n, 2)"),
        "3 columns": (dict(ids=ids, logits=np.zeros((3, 3), np.float32)), "shape (3, 3); expected floats of shape (n, 2)"),
        "strings": (dict(ids=ids, logits=np.array([["a", "b"]] * 3)), "'logits' is a <U1 array"),
        "lengths": (dict(ids=ids[:2], logits=good), "3 rows of logits for 2 review ids; expected one each"),
        "int ids": (dict(ids=np.arange(3), logits=good), "'ids' is a int64 array of shape (3,); expected one string"),
        "no ids": (dict(logits=good), "not a teacher-logits file"),
    }


@pytest.mark.parametrize("case", list(bad_logits(None)))
def test_bad_logits_files(tmp_path, case):
    arrays, fragment = bad_logits(tmp_path)[case]
    path = npz(tmp_path / "l.npz", **arrays)
    with pytest.raises(UserError) as info:
        read_logits(path, n_classes=2)  # two classes, as classes.json says for IMDB
    assert str(info.value).startswith(f"{path}: ") and fragment in str(info.value)


def test_logits_of_any_number_of_classes_unless_told(tmp_path):
    import numpy as np

    path = npz(tmp_path / "l.npz", ids=np.array(["a", "b"]), logits=np.zeros((2, 3), np.float32))
    assert read_logits(path).shape == (2, 3)
    with pytest.raises(UserError, match=r"shape \(2, 3\); expected floats of shape \(n, 4\), one logit per class"):
        read_logits(path, n_classes=4)
    single = npz(tmp_path / "one.npz", ids=np.array(["a", "b"]), logits=np.zeros((2, 1), np.float32))
    with pytest.raises(UserError, match=r"expected floats of shape \(n, K >= 2\)"):
        read_logits(single)


def test_truncated_pickled_and_foreign_logits_files(tmp_path):
    write_logits(tmp_path / "good.npz", IDS, np.zeros((3, 2)))
    data = (tmp_path / "good.npz").read_bytes()
    for n in (len(data) // 2, len(data) - 10, 30, 0):
        (tmp_path / "cut.npz").write_bytes(data[:n])
        with pytest.raises(UserError, match="cut.npz: not a teacher-logits file"):
            read_logits(tmp_path / "cut.npz")
    npz(tmp_path / "objects.npz", ids=np.array(IDS, dtype=object), logits=np.zeros((3, 2)))
    with pytest.raises(UserError, match="objects.npz: not a teacher-logits file .*allow_pickle=False"):
        read_logits(tmp_path / "objects.npz")
    np.save(tmp_path / "plain.npy", np.zeros((3, 2)))
    with pytest.raises(UserError, match="plain.npy: not a teacher-logits file \\(a single .npy array"):
        read_logits(tmp_path / "plain.npy")
    # A flipped byte inside the stored arrays: the zip's CRC catches it.
    flipped = bytearray(data)
    with zipfile.ZipFile(tmp_path / "good.npz") as z:
        info = z.getinfo("logits.npy")
    flipped[info.header_offset + 30 + len(info.filename) + info.file_size - 1] ^= 0xFF
    (tmp_path / "flipped.npz").write_bytes(bytes(flipped))
    with pytest.raises(UserError, match="flipped.npz: not a teacher-logits file .*CRC"):
        read_logits(tmp_path / "flipped.npz")


# --- teacher folders ---------------------------------------------------------------------------

def broken_copy(tiny_bert, tmp_path, change):
    folder = tmp_path / "teacher"
    shutil.copytree(tiny_bert, folder)
    change(folder)
    return folder


def cut_weights(folder):
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])


def drop_tokenizer(folder):
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        (folder / name).unlink(missing_ok=True)


def break_tokenizer_structure(folder):
    spec = json.loads((folder / "tokenizer.json").read_text())
    spec["model"] = {"type": "WordPiece"}  # valid JSON that the tokenizers library cannot build
    (folder / "tokenizer.json").write_text(json.dumps(spec))


def fewer_weights_than_config(folder):
    config = json.loads((folder / "config.json").read_text())
    config["num_hidden_layers"] += 1  # transformers would initialise the extra layer at random
    (folder / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize("change, fragment", [
    (cut_weights, "its model.safetensors is damaged or incomplete (Error while deserializing header"),
    (lambda f: (f / "model.safetensors").write_bytes(b""), "its model.safetensors is damaged or incomplete"),
    (drop_tokenizer, "no tokenizer files; expected one of tokenizer.json, vocab.txt"),
    (lambda f: (f / "tokenizer.json").write_text("{not json"), "cannot load its tokenizer (Expecting property name"),
    (break_tokenizer_structure, "cannot load its tokenizer (missing field"),
    (lambda f: (f / "config.json").write_text("{not json"), "cannot read its config.json (It looks like the config"),
    (lambda f: (f / "config.json").write_bytes(b"\xff\xfe"), "cannot read its config.json"),
    (fewer_weights_than_config, "its weights lack 16 tensors its config.json names (bert.encoder.layer.2."),
])
def test_bad_teacher_folders(tiny_bert, tmp_path, change, fragment):
    folder = broken_copy(tiny_bert, tmp_path, change)
    with pytest.raises(UserError) as info:
        load_fine_tuned(folder)
    message = str(info.value)
    assert message.startswith(f"{folder}: ") and fragment in message and "\n" not in message


def test_a_base_model_to_fine_tune_may_lack_its_head(tiny_bert, tmp_path):
    """Only a fine-tuned teacher must be complete: a base encoder gets a fresh classification head."""
    folder = broken_copy(tiny_bert, tmp_path, fewer_weights_than_config)
    _, model = load_classifier(str(folder), new_head=True)
    assert model.config.num_hidden_layers == 3


# --- through the command line ------------------------------------------------------------------

def test_cli_refuses_a_damaged_archive(tmp_path, archive):
    (tmp_path / "params.yaml").write_text("{}")
    data = gzip.decompress(archive.read_bytes())
    (tmp_path / "cut.tar.gz").write_bytes(gzip.compress(data[: len(data) // 2]))
    result = bert2lr("prepare", "--data", "cut.tar.gz", "--unlabeled-data", "cut.tar.gz", "--test-data", "cut.tar.gz", "--out-dir", "splits", cwd=tmp_path)
    assert_one_line_error(result, "cut.tar.gz: not a readable tar archive")
    assert not (tmp_path / "splits").exists()


def test_cli_prepare_refuses_a_readme_fetched_without_a_hash(tmp_path):
    (tmp_path / "README.md").write_text("# not an archive\n")
    (tmp_path / "params.yaml").write_text(json.dumps({"fetch": {"sources": ["README.md", "gone.tar.gz"]}}))
    result = bert2lr("fetch", "--out-dir", "data/raw", cwd=tmp_path)
    assert result.returncode == 0  # without expected hashes a readable file is taken as it is ...
    result = bert2lr("prepare", "--data", "data/raw/aclImdb_v1.tar.gz", "--unlabeled-data", "data/raw/aclImdb_v1.tar.gz", "--test-data", "data/raw/aclImdb_v1.tar.gz", "--out-dir", "splits", cwd=tmp_path)
    assert_one_line_error(result, "data/raw/aclImdb_v1.tar.gz: not a readable tar archive (Not a gzipped file")  # ... until read


@pytest.mark.slow  # the CLI end to end, in subprocesses that import the heavy libraries
def shard_folders(tmp_path, sizes=(2, 2)):
    """A transfer set of shards (reviews/0.jsonl, ...) and its logits (logits/0.npz, ...)."""
    start = 0
    for k, size in enumerate(sizes):
        ids = [f"u{i}" for i in range(start, start + size)]
        write_reviews(tmp_path / "reviews" / f"{k}.jsonl", [{"id": i, "text": f"text {i}"} for i in ids])
        write_logits(tmp_path / "logits" / f"{k}.npz", ids, np.arange(2 * size, dtype=float).reshape(size, 2) + start)
        start += size
    return tmp_path / "reviews", tmp_path / "logits"


def test_a_cut_shard_in_a_folder_of_logits_is_one_error_wherever_it_is_read(tmp_path):
    reviews, logits = shard_folders(tmp_path)
    ids = [r["id"] for r in read_reviews(reviews)]
    data = (logits / "1.npz").read_bytes()
    (logits / "1.npz").write_bytes(data[: len(data) // 2])
    for read in (lambda: read_logits(logits, ids), lambda: read_logits(logits), lambda: logits_digest(logits, 4),
                 lambda: list(read_transfer_shards(reviews, logits))):
        with pytest.raises(UserError, match=r"1.npz: not a teacher-logits file"):
            read()


def test_the_transfer_set_shard_by_shard_equals_it_read_whole(tmp_path):
    reviews, logits = shard_folders(tmp_path, sizes=(3, 3, 1))
    parts = list(read_transfer_shards(reviews, logits, n_classes=2))
    assert [len(shard_reviews) for shard_reviews, _ in parts] == [3, 3, 1]
    assert [r for shard_reviews, _ in parts for r in shard_reviews] == read_reviews(reviews)
    whole = read_logits(logits, [r["id"] for r in read_reviews(reviews)], 2)
    np.testing.assert_array_equal(np.concatenate([shard_logits for _, shard_logits in parts]), whole)


def test_shards_that_do_not_pair_up_are_refused(tmp_path):
    reviews, logits = shard_folders(tmp_path)
    write_logits(logits / "1.npz", ["u3", "u2"], np.zeros((2, 2)))
    with pytest.raises(UserError, match=r"1.npz: its review ids do not match .*1.jsonl's; rerun `dvc repro logits@1`"):
        list(read_transfer_shards(reviews, logits))
    (logits / "1.npz").unlink()
    with pytest.raises(UserError, match=r"1.npz: teacher logits not found \(run `dvc repro logits@1`\)"):
        list(read_transfer_shards(reviews, logits))
    write_reviews(reviews / "1.jsonl", [{"id": "u0", "text": "again"}, {"id": "u9", "text": "new"}])
    with pytest.raises(UserError, match=r"1.jsonl: id 'u0' is in an earlier shard too"):
        list(read_transfer_shards(reviews, logits))
    with pytest.raises(UserError, match=r"expected a folder of teacher-logits shards"):
        list(read_transfer_shards(reviews, logits / "0.npz"))


@pytest.mark.slow  # the CLI end to end, in subprocesses that import the heavy libraries
def test_cli_student_refuses_a_cut_logits_shard(tmp_path):
    reviews, logits = shard_folders(tmp_path)
    (tmp_path / "params.yaml").write_text("{}")
    (tmp_path / "labeled.jsonl").write_text(GOOD + '{"id": "l2", "text": "bad", "label": 0}\n')
    data = (logits / "1.npz").read_bytes()
    (logits / "1.npz").write_bytes(data[:40])
    for features in ("tfidf", "hashing"):
        (tmp_path / "params.yaml").write_text(json.dumps({"student": {"features": features, "min_df": 1}}))
        result = bert2lr("student", "--unlabeled", "reviews", "--teacher-logits", "logits", "--labeled", "labeled.jsonl",
                         "--out", "student", cwd=tmp_path)
        assert_one_line_error(result, "1.npz: not a teacher-logits file")
        assert not (tmp_path / "student").exists()


def test_cli_refuses_a_split_with_bad_utf8(tmp_path):
    (tmp_path / "params.yaml").write_text("{}")
    (tmp_path / "labeled.jsonl").write_bytes(GOOD.encode() + b'{"id": "x", "text": "\xc3", "label": 0}\n')
    assert_one_line_error(bert2lr("baseline", "--labeled", "labeled.jsonl", "--out", "b", cwd=tmp_path),
                          "labeled.jsonl:2: not UTF-8 text")


@pytest.mark.slow  # the CLI end to end, in subprocesses that import the heavy libraries
def test_cli_refuses_bad_logits(tmp_path):
    (tmp_path / "params.yaml").write_text("{}")
    (tmp_path / "unlabeled.jsonl").write_text("".join(json.dumps({"id": i, "text": "t"}) + "\n" for i in IDS))
    logits = np.zeros((3, 2), dtype=np.float32)
    logits[0, 1] = np.nan
    npz(tmp_path / "unlabeled.npz", ids=np.array(IDS), logits=logits)
    result = bert2lr("curve", "--unlabeled", "unlabeled.jsonl", "--teacher-logits", "unlabeled.npz",
                     "--labeled", "x", "--test", "x", "--test-full", "x", "--teacher-test-logits", "x",
                     "--baseline", "x", "--out", "curve.json", cwd=tmp_path)
    assert_one_line_error(result, "unlabeled.npz: row 0 (train/pos/1_9) holds [0.0, nan]; expected finite logits")


@pytest.mark.slow  # the CLI end to end, in subprocesses that import the heavy libraries
def test_cli_refuses_a_cut_teacher(tmp_path, tiny_bert):
    broken_copy(tiny_bert, tmp_path, cut_weights)
    # The tiny BERT reads 64 positions: within that, so the weights are what fails.
    (tmp_path / "params.yaml").write_text(json.dumps({"teacher": {"max_length": 32, "truncation": "head"},
                                                      "logits": {"backend": "torch"}}))
    (tmp_path / "u.jsonl").write_text(GOOD)
    result = bert2lr("logits", "--teacher", "teacher", "--onnx", "o", "--reviews", "u.jsonl",
                     "--out", "logits.npz", "--info", "info.json", cwd=tmp_path)
    assert_one_line_error(result, "teacher: its model.safetensors is damaged or incomplete")
    assert not (tmp_path / "logits.npz").exists()
    # With ONNX Runtime, the export stage is the one that reads the weights.
    (tmp_path / "params.yaml").write_text(json.dumps({"teacher": {"max_length": 32, "truncation": "head"}}))
    result = bert2lr("export", "--teacher", "teacher", "--out", "onnx", cwd=tmp_path)
    assert_one_line_error(result, "teacher: its model.safetensors is damaged or incomplete")
    assert not (tmp_path / "onnx").exists()
