"""The `data` parameters, prepare on a table of one's own, and audit of the data files (fast; the real
repro: test_table_pipeline and test_table_tracking)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bert2lr.classes import read_classes
from bert2lr.errors import UserError
from bert2lr.files import read_reviews
from bert2lr.linear import LinearTextModel
from bert2lr.params import DataParams, SplitParams, parse_params
from bert2lr.serving.deploy import predictions
from bert2lr.stages.prepare import prepare


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def rows(n, start=0, labels=("b", "a", "c")):
    return [{"key": f"k{start + i}", "title": f"titre {i} été", "body": f"corps {i}", "y": labels[i % len(labels)]}
            for i in range(n)]


@pytest.mark.parametrize("raw, message", [
    ({"data": {"source": "table"}}, "'data.path' is still the IMDB archive (data/raw/aclImdb_v1.tar.gz); with "
                                    "'data.source: table' name your table"),
    ({"data": {"source": "table", "path": "t.csv"}}, "'data.unlabeled_path' is still the IMDB archive"),
    ({"data": {"path": "t.tar.gz"}}, "'data.unlabeled_path' must be the same as 'data.path' (t.tar.gz) with "
                                     "'data.source: imdb'"),
    ({"data": {"id_column": "key"}}, "'data.id_column' is for 'data.source: table'"),
    ({"data": {"source": "table", "path": "t.csv", "unlabeled_path": "t.csv", "test_path": "t.csv",
               "text_columns": []}}, "'data.text_columns' must hold at least 1"),
    ({"data": {"source": "csv"}}, "'data.source' must be 'imdb' or 'table'"),
])
def test_data_parameters_name_the_key(raw, message):
    with pytest.raises(UserError, match=None) as info:
        parse_params(raw)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_imdb_prepare_writes_its_class_names(tmp_path, archive):
    prepare(archive, tmp_path / "splits", SplitParams(n_labeled=8, n_unlabeled=8, n_test=4))
    assert json.loads((tmp_path / "splits/classes.json").read_text()) == ["neg", "pos"]
    assert read_classes(tmp_path / "splits/classes.json") == ("neg", "pos")


def test_table_with_its_own_test_and_unlabeled_tables(tmp_path):
    table = write_jsonl(tmp_path / "train.jsonl", rows(30))
    test = write_jsonl(tmp_path / "test.jsonl", rows(9, start=100))
    unlabeled = write_jsonl(tmp_path / "more.jsonl", [{"key": f"u{i}", "title": "x", "body": f"y{i}"} for i in range(12)])
    data = DataParams(source="table", path=str(table), text_columns=["title", "body"], label_column="y",
                      id_column="key", test_path=str(test), unlabeled_path=str(unlabeled))
    counts = prepare(table, tmp_path / "splits", SplitParams(n_labeled=12, n_unlabeled=10, n_test=6),
                     data, unlabeled_path=unlabeled, test_path=test)
    assert counts == {"labeled": 12, "unlabeled": 10, "test": 6, "test_full": 9}
    assert read_classes(tmp_path / "splits/classes.json") == ("a", "b", "c")
    labeled = read_reviews(tmp_path / "splits/labeled.jsonl", need_labels=True, n_classes=3)
    assert all(r["text"].startswith("titre") and "été" in r["text"] for r in labeled)
    assert {r["id"] for r in read_reviews(tmp_path / "splits/unlabeled.jsonl")} <= {f"u{i}" for i in range(12)}
    assert {r["id"] for r in read_reviews(tmp_path / "splits/test_full.jsonl")} == {f"k{i}" for i in range(100, 109)}
    with pytest.raises(UserError, match="expected 'label' 0 or 1"):
        read_reviews(tmp_path / "splits/labeled.jsonl", need_labels=True)  # two classes by default


def test_a_test_table_with_a_class_the_table_lacks_is_refused(tmp_path):
    table = write_jsonl(tmp_path / "train.jsonl", rows(20))
    test = write_jsonl(tmp_path / "test.jsonl", rows(4, start=50, labels=("a", "z")))
    data = DataParams(source="table", path=str(table), text_columns=["title"], label_column="y", test_path=str(test),
                      unlabeled_path=str(table))
    with pytest.raises(UserError, match="label 'z'"):
        prepare(table, tmp_path / "splits", SplitParams(n_labeled=8, n_unlabeled=4, n_test=2), data, test_path=test)
    assert not (tmp_path / "splits").exists()


@pytest.mark.parametrize("bad", ['["only"]', '["a", "a"]', '{"0": "a"}', "not json"])
def test_bad_class_files_are_one_line(tmp_path, bad):
    (tmp_path / "classes.json").write_text(bad)
    with pytest.raises(UserError, match="classes.json: "):
        read_classes(tmp_path / "classes.json")


def test_predictions_give_every_class_probability():
    from sklearn.feature_extraction.text import CountVectorizer

    vectorizer = CountVectorizer().fit(["red apple", "green pear", "blue sky"])
    n = len(vectorizer.vocabulary_)
    coef = np.zeros((3, n))
    for k, word in enumerate(["red", "green", "blue"]):
        coef[k, vectorizer.vocabulary_[word]] = 2.0
    model = LinearTextModel.from_sklearn(vectorizer, coef, np.zeros(3), classes=("rouge", "vert", "bleu"))
    rows_ = predictions(model, ["green thing", "blue"])
    assert [r["label"] for r in rows_] == ["vert", "bleu"]
    assert all(set(r) == {"label", "probabilities"} and list(r["probabilities"]) == ["rouge", "vert", "bleu"]
               for r in rows_)
    two = LinearTextModel.from_sklearn(vectorizer, coef[0], 0.5)
    row = predictions(two, ["red"])[0]
    assert list(row) == ["label", "probability", "logit", "probabilities"] and row["label"] == "pos"
    assert row["probabilities"] == {"neg": round(1 - row["probability"], 6), "pos": row["probability"]}


def test_the_service_schema_follows_the_classes():
    from bert2lr.serving.serve import response_model

    schema = response_model(("rouge", "vert", "bleu")).model_json_schema()
    prediction = schema["$defs"]["Prediction"]
    assert prediction["required"] == ["label", "probabilities"]
    assert prediction["properties"]["label"]["enum"] == ["rouge", "vert", "bleu"]


def test_ag_news_params_are_valid_and_prepare_splits_the_file(tmp_path):
    """params/ag_news.yaml declares every key params.yaml does; where the AG News file is beside the
    repository (../shared/data/ag_news, as CI has it), prepare splits it 1,000 / 5,600 / 1,000."""
    import yaml

    from bert2lr.params import load_params

    root = Path(__file__).resolve().parents[1]
    raw, default = (yaml.safe_load((root / name).read_text()) for name in ("params/ag_news.yaml", "params.yaml"))
    assert {g: set(v) for g, v in raw.items()} == {g: set(v) for g, v in default.items()}
    p = load_params(root / "params/ag_news.yaml")
    table = root / p.data.path
    if not table.is_file():
        pytest.skip(f"{table} is not beside the repository")
    assert p.data.unlabeled_path == p.data.test_path == p.data.path  # one table, split three ways
    counts = prepare(table, tmp_path / "splits", p.split, p.data)
    assert (counts["labeled"], counts["unlabeled"], counts["test"]) == (1000, 5600, 1000)
    assert read_classes(tmp_path / "splits/classes.json") == ("World", "Sports", "Business", "Sci/Tech")  # labels 1-4, named


# --- `bert2lr prepare` on a bad table: exit 2, one line naming the file and what is wrong, no splits --------


def _csv(path, rows_, columns=("key", "title", "body", "y")):
    import csv

    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows_)
    return path


def _parquet(path, rows_):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    pq.write_table(pa.Table.from_pylist(rows_), path)
    return path


def _bad_table(tmp_path, case) -> tuple[dict, dict, list[str]]:
    """(data params, the table files by CLI option, the fragments the error names) for one case."""
    train = tmp_path / "train.csv"
    data = {"text_columns": ["title", "body"], "label_column": "y", "id_column": "key"}
    files = {"data": train}
    if case == "missing text column":
        _csv(train, rows(12))
        data["text_columns"] = ["title", "résumé"]
        fragments = ["train.csv: no column 'résumé'; the file has 'key', 'title', 'body', 'y'"]
    elif case == "missing label column":
        _csv(train, rows(12))
        data["label_column"] = "topic"
        fragments = ["train.csv: no column 'topic'"]
    elif case == "one class":
        _csv(train, rows(12, labels=("seul",)))
        fragments = ["train.csv: column 'y' holds one class ('seul'); expected two or more"]
    elif case == "empty text":
        table = rows(12)
        table[4].update(title=" ", body="")
        _csv(train, table)
        fragments = ["train.csv: row 5 (line 6): empty text in 'title' and 'body'; expected text in every row "
                     "(fill it in or remove the row)"]
    elif case == "test label never seen in training":
        _csv(train, rows(12))
        files["test_data"] = _csv(tmp_path / "test.csv", rows(6, start=50, labels=("a", "zèbre")))
        fragments = ["test.csv: row 2 (line 3): label 'zèbre' in column 'y' is not one of the classes 'a', 'b', 'c'"]
    elif case == ".csv that is Parquet":
        _parquet(train, rows(12))
        fragments = ["train.csv: not a", "CSV text file"]
    elif case == ".parquet that is CSV":
        files["data"] = train = _csv(tmp_path / "train.parquet", rows(12))
        fragments = ["train.parquet: not a readable Parquet file"]
    elif case == ".jsonl with a non-object line":
        files["data"] = train = write_jsonl(tmp_path / "train.jsonl", [*rows(3), ["title", "body"], *rows(9)])
        fragments = ["train.jsonl: line 4: a JSON array, not an object; expected one object a line"]
    elif case == "duplicate id":
        table = rows(12)
        table[7]["key"] = "k2"
        _csv(train, table)
        fragments = ["train.csv: row 8 (line 9): id 'k2' in column 'key' is also on row 3 (line 4)"]
    elif case == "empty id":
        table = rows(12)
        table[3]["key"] = ""
        _csv(train, table)
        fragments = ["train.csv: row 4 (line 5): column 'key' is empty; expected an id"]
    else:
        raise AssertionError(case)
    return data, files, fragments


@pytest.mark.parametrize("case", [
    "missing text column", "missing label column", "one class", "empty text", "test label never seen in training",
    ".csv that is Parquet", ".parquet that is CSV", ".jsonl with a non-object line", "duplicate id", "empty id",
])
def test_prepare_refuses_a_bad_table_in_one_line(tmp_path, params_file, case):
    from conftest import assert_one_line_error, bert2lr

    data, files, fragments = _bad_table(tmp_path, case)
    paths = {"data": files["data"], "unlabeled_data": files.get("unlabeled_data", files["data"]),
             "test_data": files.get("test_data", files["data"])}
    params = params_file(data={"source": "table", "path": str(paths["data"]),
                               "unlabeled_path": str(paths["unlabeled_data"]), "test_path": str(paths["test_data"]),
                               **data},
                         split={"n_labeled": 6, "n_unlabeled": 3, "n_test": 3})
    out = tmp_path / "splits"
    result = bert2lr("prepare", "--data", str(paths["data"]), "--unlabeled-data", str(paths["unlabeled_data"]),
                     "--test-data", str(paths["test_data"]), "--out-dir", str(out), "--params", str(params),
                     cwd=tmp_path)
    assert_one_line_error(result, *fragments)
    assert len(result.stderr.strip().splitlines()) == 1  # nothing but the error: no log line, no traceback
    assert not out.exists() and not any(p.name.startswith(".splits") for p in tmp_path.iterdir())


# --- `bert2lr audit` on the data a record names (the real repro: test_table_tracking) -------------------------


def _student_with(student_dir, tmp_path, change) -> Path:
    """A copy of the session's student (outside any DVC project) with its lineage record changed."""
    import shutil

    student = shutil.copytree(student_dir, tmp_path / "student")
    record = json.loads((student / "lineage.json").read_text())
    change(record)
    (student / "lineage.json").chmod(0o644)
    (student / "lineage.json").write_text(json.dumps(record))
    return student


def _verified(student, cwd) -> tuple[dict[str, tuple[str, str]], object]:
    from conftest import bert2lr

    result = bert2lr("audit", "--verify", str(student), cwd=cwd)
    assert "Traceback" not in result.stderr
    return {line[9:26].strip(): (line[:9].strip(), line[26:]) for line in result.stdout.splitlines()}, result


def test_audit_still_reads_a_version_1_record_by_its_archive(student_dir, tmp_path, archive):
    from conftest import bert2lr

    from bert2lr.files import file_digest

    def to_version_1(record):
        record["format"] = "bert2lr-lineage/1"
        record["archive"] = record.pop("data")["files"]["labeled"]
        del record["classes"]

    student = _student_with(student_dir, tmp_path, to_version_1)
    digest = file_digest(archive)
    shown = bert2lr("audit", str(student), cwd=tmp_path)
    assert shown.returncode == 0 and f"archive        {archive}  sha256 {digest}" in shown.stdout
    assert "classes" not in shown.stdout and "source" not in shown.stdout
    lines, result = _verified(student, tmp_path)
    assert lines["archive"] == ("ok", f"{archive}  sha256 {digest[:16]}…")
    assert not any(what.startswith("data") for what in lines)
    assert result.returncode == 1 and lines["dvc project"][0] == "MISMATCH"  # outside a project, as ever


def test_audit_names_each_data_file_by_role_and_says_which_it_cannot_reach(student_dir, tmp_path, archive):
    from conftest import bert2lr

    from bert2lr.files import file_digest

    digest = file_digest(archive)
    shown = bert2lr("audit", str(student_dir), cwd=tmp_path).stdout
    assert "data           source imdb" in shown and "classes        neg, pos" in shown
    assert f"labeled, unlabeled, test {archive}  sha256 {digest}" in shown  # one file, three roles, one line
    lines, result = _verified(student_dir, tmp_path)
    assert lines["data"] == ("ok", f"labeled, unlabeled, test: {archive}  sha256 {digest[:16]}…")

    def move_away(record):
        files = record["data"]["files"]
        files["labeled"]["path"] = "tables/gone.csv"  # relative: read from the project root (here: none, the cwd)
        files["test"]["path"] = str(tmp_path)  # a folder

    student = _student_with(student_dir, tmp_path, move_away)
    lines, result = _verified(student, tmp_path)
    cannot = f"so its content cannot be checked against the record's sha256 {digest[:16]}…"
    assert lines["data labeled"] == ("MISMATCH", f"{tmp_path / 'tables/gone.csv'} is not reachable here "
                                                 f"(no such file), {cannot}")
    assert lines["data unlabeled"] == ("ok", f"{archive}  sha256 {digest[:16]}…")
    assert lines["data test"] == ("MISMATCH", f"{tmp_path} is not readable (Is a directory), {cannot}")
    assert result.returncode == 1
    assert "verification failed for: data labeled, data test, dvc project" in result.stderr

    nothing = _student_with(student_dir, tmp_path / "empty", lambda record: record["data"].update(files={}))
    lines, result = _verified(nothing, tmp_path)
    assert lines["data"] == ("MISMATCH", "the record names no data file, so what the student learned from cannot "
                                         "be checked")
    assert "no data file recorded" in bert2lr("audit", str(nothing), cwd=tmp_path).stdout


def test_class_names_name_labels_written_as_codes(tmp_path):
    table = tmp_path / "codes.csv"
    table.write_text("label,text\n" + "".join(f"{1 + i % 3},texte {i} été\n" for i in range(30)), encoding="utf-8")
    raw = {"source": "table", "path": str(table), "unlabeled_path": str(table), "test_path": str(table)}
    data = parse_params({"data": {**raw, "class_names": {1: "monde", 2: "sport", 3: "tech"}}}).data
    prepare(table, tmp_path / "splits", SplitParams(n_labeled=12, n_unlabeled=6, n_test=6), data)
    assert read_classes(tmp_path / "splits/classes.json") == ("monde", "sport", "tech")
    labeled = read_reviews(tmp_path / "splits/labeled.jsonl", need_labels=True, n_classes=3)
    assert all(r["label"] == (int(r["id"].split("-")[1]) - 1) % 3 for r in labeled)  # row-N holds label 1 + (N-1) % 3
    for names, message in (({1: "monde", 2: "sport"}, "data.class_names names no class '3'; expected one name for "
                                                        "each of the labels '1', '2', '3'"),
                           ({1: "a", 2: "b", 3: "c", 9: "d"}, "data.class_names names '9', which no row of")):
        data = parse_params({"data": {**raw, "class_names": names}}).data
        with pytest.raises(UserError) as info:
            prepare(table, tmp_path / "bad", SplitParams(n_labeled=12, n_unlabeled=6, n_test=6), data)
        assert str(info.value).startswith(message) and "\n" not in str(info.value)
        assert not (tmp_path / "bad").exists()
