"""bert2lr.tables: a user's own CSV, JSON Lines or Parquet table as review records, and its splits."""

from __future__ import annotations

import collections
import csv
import json
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from bert2lr.errors import UserError
from bert2lr.tables import TableSpec, class_order, read_table, split_table

ROOT = Path(__file__).resolve().parents[1]

# Three classes, string labels, a title and a body, non-ASCII text; ids deliberately unsorted.
ROWS = [
    {"id": "n-7", "title": "Café prices rise", "body": "Naïve buyers pay 5 € more.", "topic": "business"},
    {"id": "n-2", "title": "Cup final", "body": "Ünited win 2–1 in Zürich.", "topic": "sports"},
    {"id": "n-9", "title": "Ракета", "body": "A rocket 🚀 reaches orbit.", "topic": "science"},
    {"id": "n-1", "title": "Merger talks", "body": "Two banks, one \"deal\", commas, too.", "topic": "business"},
    {"id": "n-4", "title": "Marathon", "body": "A record\nin two lines.", "topic": "sports"},
]
EXPECTED_CLASSES = ("business", "science", "sports")


def one_line(exc_info) -> str:
    """The message of a UserError, checked to be one line."""
    message = str(exc_info.value)
    assert "\n" not in message, message
    return message


def write_csv(path: Path, rows: list[dict], columns=None) -> Path:
    columns = columns or list(rows[0])
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def write_parquet(path: Path, rows: list[dict]) -> Path:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def spec(path, **kwargs) -> TableSpec:
    return TableSpec(path=path, **{"text_columns": ["title", "body"], "label_column": "topic"} | kwargs)


WRITERS = {"csv": write_csv, "jsonl": write_jsonl, "parquet": write_parquet}


# --- reading ----------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", WRITERS)
def test_every_format_gives_the_same_records(tmp_path, fmt):
    path = WRITERS[fmt](tmp_path / f"news.{fmt}", ROWS)
    records, classes = read_table(spec(path, id_column="id"))
    assert classes == EXPECTED_CLASSES  # sorted, whatever order the rows have
    assert records == [{"id": r["id"], "text": f"{r['title']} {r['body']}", "label": classes.index(r["topic"])}
                       for r in ROWS]
    assert records[2]["text"] == "Ракета A rocket 🚀 reaches orbit."


@pytest.mark.parametrize("fmt", WRITERS)
def test_line_separators_inside_a_text_stay_in_it(tmp_path, fmt):
    rows = [dict(ROWS[0], body="page\fbreak, line\u2028separator\r\nand CRLF"), ROWS[1]]
    records, _ = read_table(spec(WRITERS[fmt](tmp_path / f"news.{fmt}", rows)))
    assert [r["text"] for r in records] == ["Café prices rise page\fbreak, line\u2028separator\r\nand CRLF",
                                            "Cup final Ünited win 2–1 in Zürich."]


def test_without_an_id_column_rows_are_numbered_from_one(tmp_path):
    records, _ = read_table(spec(write_csv(tmp_path / "news.csv", ROWS)))
    assert [r["id"] for r in records] == ["row-1", "row-2", "row-3", "row-4", "row-5"]


def test_one_text_column_given_as_a_bare_name(tmp_path):
    records, _ = read_table(spec(write_csv(tmp_path / "news.csv", ROWS), text_columns="body"))
    assert records[0]["text"] == "Naïve buyers pay 5 € more."


def test_a_json_extension_is_read_as_json_lines_with_a_byte_order_mark_and_blank_lines(tmp_path):
    path = tmp_path / "news.json"
    path.write_text("\ufeff" + json.dumps(ROWS[0]) + "\n\n" + json.dumps(ROWS[1]) + "\n", encoding="utf-8")
    records, classes = read_table(spec(path))
    assert [r["id"] for r in records] == ["row-1", "row-2"]
    assert classes == ("business", "sports")


def test_integer_labels_sort_numerically_and_are_stored_as_strings(tmp_path):
    rows = [{"text": f"t{i}", "label": label} for i, label in enumerate([10, 2, 1, 2, 10])]
    records, classes = read_table(TableSpec(path=write_jsonl(tmp_path / "t.jsonl", rows),
                                            text_columns=["text"], label_column="label"))
    assert classes == ("1", "2", "10")
    assert [r["label"] for r in records] == [2, 1, 0, 1, 2]
    # The same labels from a CSV (strings there) give the same class names.
    _, from_csv = read_table(TableSpec(path=write_csv(tmp_path / "t.csv", rows), text_columns=["text"],
                                       label_column="label"))
    assert from_csv == classes
    assert class_order(["b", "10", "a"]) == ("10", "a", "b")


def test_a_test_file_maps_onto_the_training_classes(tmp_path):
    _, classes = read_table(spec(write_csv(tmp_path / "train.csv", ROWS)))
    test_rows = [dict(ROWS[1], topic="sports"), dict(ROWS[0], topic="business")]
    records, test_classes = read_table(spec(write_csv(tmp_path / "test.csv", test_rows)), class_names=classes)
    assert test_classes == classes  # not ("business", "sports"), and one class is fine here
    assert [r["label"] for r in records] == [2, 0]
    unseen = [dict(ROWS[0], topic="politics")]
    with pytest.raises(UserError) as exc:
        read_table(spec(write_csv(tmp_path / "test2.csv", unseen)), class_names=classes)
    assert "row 1 (line 2): label 'politics' in column 'topic' is not one of the classes" in one_line(exc)


def test_an_unlabeled_table_has_no_labels(tmp_path):
    records, classes = read_table(spec(write_csv(tmp_path / "u.csv", ROWS), label_column=None))
    assert classes == ()
    assert all(set(r) == {"id", "text"} for r in records)


def test_empty_texts_are_kept_when_allowed(tmp_path):
    rows = [dict(ROWS[0]), dict(ROWS[1], title="", body="  ")]
    path = write_csv(tmp_path / "news.csv", rows)
    records, _ = read_table(spec(path, allow_empty_text=True, label_column=None))
    assert records[1] == {"id": "row-2", "text": ""}
    # an empty title alone leaves no stray space
    records, _ = read_table(spec(write_csv(tmp_path / "t.csv", [dict(ROWS[0], title="")]), label_column=None))
    assert records[0]["text"] == "Naïve buyers pay 5 € more."


def test_the_spec_refuses_a_column_in_two_roles_and_unknown_fields(tmp_path):
    with pytest.raises(ValidationError, match="named twice"):
        TableSpec(path=tmp_path / "t.csv", text_columns=["title", "topic"], label_column="topic")
    with pytest.raises(ValidationError):
        TableSpec(path=tmp_path / "t.csv", text_columns=[])
    with pytest.raises(ValidationError):
        TableSpec(path=tmp_path / "t.csv", text_columns=["a"], labels="b")


# --- errors: one line naming the file, the row or column, and what was expected ---------------


def read_error(table_spec, **kwargs) -> str:
    with pytest.raises(UserError) as exc:
        read_table(table_spec, **kwargs)
    return one_line(exc)


def test_a_missing_file(tmp_path):
    message = read_error(spec(tmp_path / "nope.csv"))
    assert message == f"{tmp_path / 'nope.csv'}: table not found"


def test_an_unknown_extension(tmp_path):
    (tmp_path / "news.xlsx").write_bytes(b"PK")
    assert "unknown table format '.xlsx'; expected a file ending in .csv, .jsonl, .json, .parquet" \
        in read_error(spec(tmp_path / "news.xlsx"))


@pytest.mark.parametrize("fmt", WRITERS)
def test_a_missing_column_names_the_columns_the_file_has(tmp_path, fmt):
    path = WRITERS[fmt](tmp_path / f"news.{fmt}", ROWS)
    message = read_error(spec(path, label_column="label"))
    assert "no column 'label'; the file has 'id', 'title', 'body', 'topic'" in message


def test_a_label_column_with_one_class(tmp_path):
    rows = [dict(r, topic="sports") for r in ROWS]
    assert "column 'topic' holds one class ('sports'); expected two or more" \
        in read_error(spec(write_csv(tmp_path / "news.csv", rows)))


@pytest.mark.parametrize("fmt", WRITERS)
def test_an_empty_text_names_its_row(tmp_path, fmt):
    rows = [dict(r) for r in ROWS]
    rows[2].update(title="", body=" ")
    message = read_error(spec(WRITERS[fmt](tmp_path / f"news.{fmt}", rows)))
    assert "row 3" in message and "empty text in 'title' and 'body'" in message


def test_a_null_text_in_json_counts_as_empty_and_a_number_is_refused(tmp_path):
    rows = [dict(ROWS[0]), dict(ROWS[1], title=None, body=None)]
    assert "row 2 (line 2): empty text" in read_error(spec(write_jsonl(tmp_path / "a.jsonl", rows)))
    rows = [dict(ROWS[0]), dict(ROWS[1], body=42)]
    assert "row 2 (line 2): column 'body' holds 42 (int); expected text" \
        in read_error(spec(write_jsonl(tmp_path / "b.jsonl", rows)))


@pytest.mark.parametrize("label", [True, 1.5, None, "", {"a": 1}])
def test_a_label_that_is_neither_a_string_nor_an_integer(tmp_path, label):
    rows = [dict(ROWS[0]), dict(ROWS[1], topic=label)]
    message = read_error(spec(write_jsonl(tmp_path / "a.jsonl", rows)))
    assert message.startswith(f"{tmp_path / 'a.jsonl'}: row 2 (line 2): column 'topic' ")
    assert "expected a label" in message


@pytest.mark.parametrize("fmt", WRITERS)
def test_duplicate_ids(tmp_path, fmt):
    rows = [dict(r) for r in ROWS]
    rows[3]["id"] = "n-2"
    message = read_error(spec(WRITERS[fmt](tmp_path / f"news.{fmt}", rows), id_column="id"))
    assert "row 4" in message and "id 'n-2' in column 'id' is also on row 2" in message
    assert message.endswith("expected each id once")


def test_a_csv_that_is_not_utf8(tmp_path):
    path = tmp_path / "news.csv"
    path.write_bytes("title,body,topic\nok,fine,a\nCafé,latin-1,b\n".encode("latin-1"))
    assert "not a UTF-8 CSV text file (line 3: invalid continuation byte" in read_error(spec(path))


def test_a_csv_that_is_binary(tmp_path):
    path = tmp_path / "news.csv"
    path.write_bytes(b"title,body,topic\n\x00\x01\x02\x00,x,y\n")
    assert "not a CSV text file (a NUL byte on line 2: binary data)" in read_error(spec(path))


def test_a_ragged_csv_row(tmp_path):
    path = tmp_path / "news.csv"
    path.write_text('title,body,topic\n"a, b",c,x\nd,e,f,g\n', encoding="utf-8")
    message = read_error(spec(path))
    assert "row 2 (line 3): 4 fields; expected 3 as in the header" in message


def test_a_broken_quote_and_an_empty_csv(tmp_path):
    path = tmp_path / "news.csv"
    path.write_text('title,body,topic\n"a"b,c,x\n', encoding="utf-8")
    assert "not a readable CSV file (line 2:" in read_error(spec(path))
    path.write_text("", encoding="utf-8")
    assert "empty; expected a header row" in read_error(spec(path))
    path.write_text("title,body,topic\n", encoding="utf-8")
    assert "the table has no rows" in read_error(spec(path))
    path.write_text("title,body,title\n", encoding="utf-8")
    assert "the header names 'title' more than once" in read_error(spec(path))


@pytest.mark.parametrize("line, expected", [
    ('["a", "b"]', "line 1: a JSON array; expected JSON Lines, one object a line"),
    ('[\n{"title": "a"},', "line 1: a JSON array; expected JSON Lines, one object a line"),
    ('"just text"', "line 1: a JSON string, not an object"),
    ('{"title": "a", "body": "b", "topic": "x"}\n7', "line 2: a JSON number, not an object"),
    ("{not json", "line 1: not JSON ("),
])
def test_a_jsonl_line_that_is_not_an_object(tmp_path, line, expected):
    path = tmp_path / "news.jsonl"
    path.write_text(line + "\n", encoding="utf-8")
    assert expected in read_error(spec(path))


def test_a_parquet_file_that_is_not_parquet(tmp_path):
    pytest.importorskip("pyarrow")
    path = write_csv(tmp_path / "news.parquet", ROWS)
    assert "news.parquet: not a readable Parquet file (" in read_error(spec(path))


def test_parquet_without_pyarrow_says_how_to_install_it(tmp_path, monkeypatch):
    path = tmp_path / "news.parquet"
    path.write_bytes(b"PAR1")
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # import pyarrow now raises ImportError
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    assert "reading Parquet needs pyarrow, which is not installed; pip install 'bert2lr[tables]'" \
        in read_error(spec(path))


# --- splits -----------------------------------------------------------------------------------


def table(n: int, prefix: str = "row") -> list[dict]:
    return [{"id": f"{prefix}-{i}", "text": f"text {i}", "label": i % 3} for i in range(n)]


def ids(records) -> list[str]:
    return [r["id"] for r in records]


def test_one_table_splits_into_disjoint_seeded_samples():
    records = table(100)
    splits = split_table(records, n_labeled=10, n_unlabeled=50, n_test=20, seed=0)
    assert {k: len(v) for k, v in splits.items()} == {"labeled": 10, "unlabeled": 50, "test": 20, "test_full": 40}
    labeled, unlabeled, test = (set(ids(splits[k])) for k in ("labeled", "unlabeled", "test"))
    assert not (labeled & unlabeled or labeled & test or unlabeled & test)
    assert test <= set(ids(splits["test_full"])) and not set(ids(splits["test_full"])) & (labeled | unlabeled)
    assert all("label" not in r for r in splits["unlabeled"])
    assert all("label" in r for r in splits["labeled"] + splits["test"])
    assert split_table(records, 10, 50, 20, seed=0) == splits
    assert ids(split_table(records, 10, 50, 20, seed=1)["labeled"]) != ids(splits["labeled"])


def test_growing_a_size_extends_its_sample_and_keeps_the_test_sample():
    records = table(100)
    small = split_table(records, 10, 30, 20, seed=0)
    more_unlabeled = split_table(records, 10, 60, 20, seed=0)
    assert ids(more_unlabeled["unlabeled"])[:30] == ids(small["unlabeled"])
    assert more_unlabeled["labeled"] == small["labeled"] and more_unlabeled["test"] == small["test"]
    more_labeled = split_table(records, 25, 30, 20, seed=0)
    assert ids(more_labeled["labeled"])[:10] == ids(small["labeled"])
    assert more_labeled["test"] == small["test"]
    more_test = split_table(records, 10, 30, 40, seed=0)
    assert ids(more_test["test"])[:20] == ids(small["test"])
    assert more_test["labeled"] == small["labeled"] and more_test["unlabeled"] == small["unlabeled"]


def test_separate_test_and_unlabeled_files():
    records, test_records = table(30), table(50, "test")
    unlabeled_records = [{"id": f"u-{i}", "text": f"u {i}"} for i in range(40)]
    splits = split_table(records, 30, 25, 10, seed=0, test_records=test_records,
                         unlabeled_records=unlabeled_records)
    assert sorted(ids(splits["labeled"])) == sorted(ids(records))  # the whole table may be labeled
    assert all(i.startswith("test-") for i in ids(splits["test"])) and splits["test_full"] == test_records
    assert all(i.startswith("u-") for i in ids(splits["unlabeled"])) and len(splits["unlabeled"]) == 25
    bigger = split_table(records, 30, 40, 20, seed=0, test_records=test_records, unlabeled_records=unlabeled_records)
    assert ids(bigger["unlabeled"])[:25] == ids(splits["unlabeled"])
    assert ids(bigger["test"])[:10] == ids(splits["test"])
    # A test file alone: the unlabeled sample comes from the rest of the table.
    alone = split_table(records, 10, 20, 5, seed=0, test_records=test_records)
    assert not set(ids(alone["labeled"])) & set(ids(alone["unlabeled"]))


@pytest.mark.parametrize("sizes, kwargs, expected", [
    ((90, 1, 20), {}, "split.n_labeled=90 and split.n_test=20 need 110 rows; the table has 100"),
    ((10, 71, 20), {}, "split.n_unlabeled=71 is larger than the 70 rows of the table left after "
                       "split.n_labeled=10 and split.n_test=20"),
    ((101, 1, 1), {"test_records": table(5)}, "split.n_labeled=101 need 101 rows; the table has 100"),
    ((10, 1, 6), {"test_records": table(5)}, "split.n_test=6 is larger than the 5 rows of the test table"),
    ((10, 6, 1), {"unlabeled_records": table(5)}, "split.n_unlabeled=6 is larger than the 5 rows of the unlabeled"),
    ((0, 1, 1), {}, "split.n_labeled=0; expected an integer of at least 1"),
])
def test_a_size_larger_than_its_source_names_the_parameter(sizes, kwargs, expected):
    with pytest.raises(UserError) as exc:
        split_table(table(100), *sizes, seed=0, **kwargs)
    assert expected in one_line(exc)


def test_an_unlabeled_table_cannot_give_the_labeled_split():
    records = [{"id": f"row-{i}", "text": "t"} for i in range(10)]
    with pytest.raises(UserError) as exc:
        split_table(records, 2, 2, 2, seed=0)
    assert "has no label; the labeled split needs a label column" in one_line(exc)


# --- the real AG News test split (not in the repository; next to it in CI) ---------------------


def ag_news() -> Path | None:
    """shared/data/ag_news/ag_news_test.csv beside the repo root (CI: ../shared) or above it."""
    for folder in ROOT.parents:
        path = folder / "shared" / "data" / "ag_news" / "ag_news_test.csv"
        if path.is_file():
            return path
    return None


@pytest.mark.skipif(ag_news() is None, reason="AG News (shared/data/ag_news/ag_news_test.csv) is not here")
def test_ag_news():
    records, classes = read_table(TableSpec(path=ag_news(), text_columns=["title", "description"],
                                            label_column="label"))
    assert classes == ("1", "2", "3", "4")
    assert len(records) == 7600
    assert collections.Counter(r["label"] for r in records) == {0: 1900, 1: 1900, 2: 1900, 3: 1900}
    assert len({r["id"] for r in records}) == 7600 and records[0]["id"] == "row-1"
    assert all(r["text"] for r in records)
    splits = split_table(records, n_labeled=1000, n_unlabeled=5600, n_test=1000, seed=0)
    assert {k: len(v) for k, v in splits.items()} == {"labeled": 1000, "unlabeled": 5600, "test": 1000,
                                                      "test_full": 1000}
    assert len({r["label"] for r in splits["labeled"]}) == 4


def test_the_baselines_script_on_a_tiny_table(tmp_path):
    import random
    import subprocess

    rng = random.Random(0)
    words = {"world": ["war", "minister", "election"], "sports": ["goal", "match", "coach"],
             "tech": ["chip", "software", "internet"]}
    rows = [{"label": topic, "title": " ".join(rng.choices(vocab, k=3)), "description": "the news of the day"}
            for topic, vocab in words.items() for _ in range(20)]
    path = write_csv(tmp_path / "tiny.csv", rows)
    script = ROOT / "scripts" / "table_baselines.py"
    run = subprocess.run([sys.executable, script, path, "--n-labeled", "30", "--n-unlabeled", "10",
                          "--n-test", "15"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert result["classes"] == ["sports", "tech", "world"]
    assert result["sizes"] == {"labeled": 30, "unlabeled": 10, "test": 15, "test_full": 20}
    assert set(result["test_accuracy"]) == {"count_1_3_logreg", "tfidf_1_2_logreg"}
    run = subprocess.run([sys.executable, script, tmp_path / "nope.csv"], capture_output=True, text=True)
    assert run.returncode == 2 and run.stdout == ""
    assert run.stderr.strip().splitlines() == [f"table_baselines: error: {tmp_path / 'nope.csv'}: table not found"]
