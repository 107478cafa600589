"""Read a user's own table of texts (CSV, JSON Lines, Parquet) into review records, and split it.

A table becomes the records the splits hold ({"id": str, "text": str[, "label": int]}, see
bert2lr.files.write_reviews) and its class names: the distinct labels, sorted (numerically when
every label is an integer), as strings; a record's label is an index into them. Rows without an
id column are named "row-<n>", n counting data rows from 1, so that lineage names every row.

The prepare stage reads data.source table's files with it (stages/prepare.py table_splits).
"""

from __future__ import annotations

import csv
import io
import json
import re
import typing
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Annotated, Optional

import numpy as np
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from bert2lr.errors import UserError

FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl", ".parquet": "parquet"}
PARQUET_HINT = "pip install 'bert2lr[tables]' (or pip install pyarrow)"
_JSON_KINDS = {list: "array", str: "string", int: "number", float: "number", bool: "boolean", type(None): "null"}
_INTEGER = re.compile(r"[+-]?[0-9]+")
_CSV_FIELD_LIMIT = 2**31 - 1  # csv's default of 128 KiB per field is shorter than a long document


def _one_or_several(value):
    """A bare column name is a list of one; a list becomes a tuple (the spec is frozen)."""
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list):
        return tuple(value)
    return value


class TableSpec(BaseModel):
    """Where a table is and which of its columns hold what."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    path: Path = Field(strict=False, description="the table: .csv (with a header row), .jsonl/.json "
                                                 "(one JSON object a line) or .parquet")
    text_columns: Annotated[tuple[Annotated[str, Field(min_length=1)], ...], BeforeValidator(_one_or_several)] = Field(
        min_length=1, description="the column(s) holding the text; several are joined with a space, in this order")
    label_column: Optional[str] = Field(
        None, min_length=1, description="the column holding the class (string or integer); null: an unlabeled table")
    id_column: Optional[str] = Field(
        None, min_length=1, description="the column holding a unique id; null: rows are named row-1, row-2, ...")
    allow_empty_text: bool = Field(
        False, description="keep rows whose text is empty (else an empty text is an error naming its row)")

    @model_validator(mode="after")
    def _distinct_columns(self):
        seen: set[str] = set()
        for role, name in [*(("text", c) for c in self.text_columns),
                           ("label", self.label_column), ("id", self.id_column)]:
            if name is None:
                continue
            if name in seen:
                raise ValueError(f"column {name!r} is named twice (again as the {role} column); "
                                 "expected each column in one role")
            seen.add(name)
        return self

    @property
    def columns(self) -> tuple[str, ...]:
        """Every column the spec reads, texts first."""
        return self.text_columns + tuple(c for c in (self.label_column, self.id_column) if c is not None)


# --- reading rows, one reader a format --------------------------------------------------------
# Each yields (where, row): where names the row in an error ("row 3 (line 4)"), row maps each of
# the spec's columns to its raw value (str for CSV; anything JSON or Arrow holds for the others).


def _names(columns) -> str:
    return ", ".join(repr(c) for c in columns) if columns else "none"


def _missing(path: Path, column: str, has, where: str = "") -> UserError:
    return UserError(f"{path}: {where}no column {column!r}; the file has {_names(has)}")


def _decode(path: Path, data: bytes, what: str) -> str:
    try:
        text = data.decode("utf-8-sig")  # a byte-order mark, as spreadsheets write, is not data
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise UserError(f"{path}: not a UTF-8 {what} (line {line}: {exc.reason} at byte {exc.start + 1}); "
                        "save it as UTF-8 text") from None
    if "\0" in text:
        line = text.count("\n", 0, text.index("\0")) + 1
        raise UserError(f"{path}: not a {what} (a NUL byte on line {line}: binary data)")
    return text


def _csv_rows(path: Path, spec: TableSpec) -> Iterator[tuple[str, dict]]:
    text = _decode(path, path.read_bytes(), "CSV text file")
    # StringIO with newline="" ends lines at \n, \r and \r\n only (str.splitlines would also
    # break at a form feed or U+2028 inside a field), and keeps them for csv to read quoted ones.
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    old_limit = csv.field_size_limit(_CSV_FIELD_LIMIT)
    try:
        try:
            header = next(reader)
        except StopIteration:
            raise UserError(f"{path}: empty; expected a header row naming the columns") from None
        if len(set(header)) != len(header):
            twice = sorted({c for c in header if header.count(c) > 1})
            raise UserError(f"{path}: the header names {_names(twice)} more than once; expected distinct columns")
        for column in spec.columns:
            if column not in header:
                raise _missing(path, column, header)
        index = {c: header.index(c) for c in spec.columns}
        n = 0
        while True:
            line = reader.line_num + 1
            try:
                fields = next(reader)
            except StopIteration:
                break
            if not fields:
                continue  # a blank line
            n += 1
            where = f"row {n} (line {line})"
            if len(fields) != len(header):
                raise UserError(f"{path}: {where}: {len(fields)} fields; expected {len(header)} as in the header "
                                "(an unquoted comma or quote?)")
            yield where, {c: fields[i] for c, i in index.items()}
    except csv.Error as exc:
        raise UserError(f"{path}: not a readable CSV file (line {reader.line_num}: {exc})") from None
    finally:
        csv.field_size_limit(old_limit)


def _jsonl_rows(path: Path, spec: TableSpec) -> Iterator[tuple[str, dict]]:
    text = _decode(path, path.read_bytes(), "JSON Lines text file")
    n = 0
    # Lines end at \n only: JSON writes U+2028 and other separators inside strings unescaped.
    for lineno, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            if lineno == 1 and line.lstrip().startswith("["):
                raise UserError(f"{path}: line 1: a JSON array; expected JSON Lines, one object a line") from None
            raise UserError(f"{path}: line {lineno}: not JSON ({exc.msg}); expected one object a line") from None
        if isinstance(obj, list) and lineno == 1:
            raise UserError(f"{path}: line 1: a JSON array; expected JSON Lines, one object a line")
        if not isinstance(obj, dict):
            kind = _JSON_KINDS.get(type(obj), type(obj).__name__)
            raise UserError(f"{path}: line {lineno}: a JSON {kind}, not an object; expected one object a line")
        n += 1
        where = f"row {n} (line {lineno})"
        for column in spec.columns:
            if column not in obj:
                raise _missing(path, column, list(obj), where=f"{where}: ")
        yield where, {c: obj[c] for c in spec.columns}


def _parquet_rows(path: Path, spec: TableSpec) -> Iterator[tuple[str, dict]]:
    try:
        import pyarrow
        import pyarrow.parquet as pq
    except ImportError:
        raise UserError(f"{path}: reading Parquet needs pyarrow, which is not installed; {PARQUET_HINT}") from None
    try:
        schema = pq.read_schema(path)
        for column in spec.columns:
            if column not in schema.names:
                raise _missing(path, column, schema.names)
        table = pq.read_table(path, columns=list(spec.columns))
    except (pyarrow.ArrowException, OSError) as exc:  # ArrowInvalid: "Parquet magic bytes not found", ...
        raise UserError(f"{path}: not a readable Parquet file ({str(exc).splitlines()[0]})") from None
    columns = {c: table.column(c).to_pylist() for c in spec.columns}
    for i in range(table.num_rows):
        yield f"row {i + 1}", {c: values[i] for c, values in columns.items()}


_READERS = {"csv": _csv_rows, "jsonl": _jsonl_rows, "parquet": _parquet_rows}


# --- from rows to records ---------------------------------------------------------------------


def _text(path: Path, where: str, column: str, value) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise UserError(f"{path}: {where}: column {column!r} holds {value!r} ({type(value).__name__}); "
                        "expected text")
    return value.strip()


def _key(path: Path, where: str, column: str, value, what: str) -> str:
    """A label or an id: a non-empty string, or an integer (stored as its decimal string)."""
    if type(value) is int:  # bool is an int subclass: True is no label
        return str(value)
    if isinstance(value, str) and value.strip():
        return value
    if value is None or isinstance(value, str):
        raise UserError(f"{path}: {where}: column {column!r} is empty; expected {what}")
    raise UserError(f"{path}: {where}: column {column!r} holds {value!r} ({type(value).__name__}); "
                    f"expected {what} (a string or an integer)")


def _format(path: Path) -> str:
    """The format of an existing table file, by its extension."""
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise UserError(f"{path}: unknown table format {path.suffix or '(no extension)'!r}; "
                        f"expected a file ending in {', '.join(FORMATS)}")
    if not path.is_file():
        raise UserError(f"{path}: table not found")
    return fmt


def class_order(names) -> tuple[str, ...]:
    """Sorted class names: numerically when each is an integer (2 before 10), else as strings."""
    names = set(names)
    if all(_INTEGER.fullmatch(n) for n in names):
        return tuple(sorted(names, key=lambda n: (int(n), n)))
    return tuple(sorted(names))


def read_table(spec: TableSpec, class_names: Sequence[str] | None = None) -> tuple[list[dict], tuple[str, ...]]:
    """Return the table's records and the class names their labels index.

    Without `class_names` they come from the data (a labeled table needs two classes at least);
    with them (a test file read after its training file), every label must be one of them, and
    they are returned as given. An unlabeled table (no label column) gives records without
    "label" and the class names given, or none.
    """
    path = Path(spec.path)
    fmt = _format(path)
    if class_names is not None:
        class_names = tuple(class_names)
        if len(set(class_names)) != len(class_names) or not all(isinstance(c, str) and c for c in class_names):
            raise ValueError(f"class_names must be distinct non-empty strings, got {class_names!r}")

    records: list[dict] = []
    labels: list[tuple[str, str]] = []  # (label, where) of each record, mapped to ids at the end
    first_row: dict[str, str] = {}
    for where, row in _READERS[fmt](path, spec):
        text = " ".join(part for part in (_text(path, where, c, row[c]) for c in spec.text_columns) if part)
        if not text and not spec.allow_empty_text:
            columns = " and ".join(repr(c) for c in spec.text_columns)
            # No hint at TableSpec.allow_empty_text: the pipeline's data parameters do not offer it.
            raise UserError(f"{path}: {where}: empty text in {columns}; expected text in every row "
                            "(fill it in or remove the row)")
        if spec.id_column is None:
            record_id = f"row-{len(records) + 1}"
        else:
            record_id = _key(path, where, spec.id_column, row[spec.id_column], "an id")
            if record_id in first_row:
                raise UserError(f"{path}: {where}: id {record_id!r} in column {spec.id_column!r} is also on "
                                f"{first_row[record_id]}; expected each id once")
            first_row[record_id] = where
        records.append({"id": record_id, "text": text})
        if spec.label_column is not None:
            labels.append((_key(path, where, spec.label_column, row[spec.label_column], "a label"), where))
    if not records:
        raise UserError(f"{path}: the table has no rows")
    if spec.label_column is None:
        return records, class_names or ()

    if class_names is None:
        class_names = class_order(label for label, _ in labels)
        if len(class_names) < 2:
            raise UserError(f"{path}: column {spec.label_column!r} holds one class ({class_names[0]!r}); "
                            "expected two or more")
    index = {name: i for i, name in enumerate(class_names)}
    for record, (label, where) in zip(records, labels):
        if label not in index:
            raise UserError(f"{path}: {where}: label {label!r} in column {spec.label_column!r} is not one of "
                            f"the classes {_names(class_names)}; expected a class the training table has")
        record["label"] = index[label]
    return records, class_names


# --- splits -----------------------------------------------------------------------------------


def _labeled(records: list[dict], what: str) -> None:
    for record in records:
        if "label" not in record:
            raise UserError(f"{what}: record {record['id']!r} has no label; the {what} needs a label column")


def split_table(records: list[dict], n_labeled: int, n_unlabeled: int, n_test: int, seed: int,
                test_records: list[dict] | None = None,
                unlabeled_records: list[dict] | None = None) -> dict[str, list[dict]]:
    """Draw the labeled, unlabeled and test splits (and test_full) as prepare does for IMDB.

    One seeded permutation of each source, drawn in the order table, test file, unlabeled file:
    - labeled: the first n_labeled rows of the table's permutation;
    - test: from a test file, its first n_test rows (test_full: the whole file); else the LAST
      n_test rows of the table's permutation (test_full: every row neither labeled nor unlabeled);
    - unlabeled (labels dropped): from an unlabeled file, its first n_unlabeled rows; else the
      table's rows after the labeled ones.
    Each sample is a prefix of the one a larger size draws, and the test sample does not move when
    n_labeled or n_unlabeled changes. A size larger than what its source holds is an error
    naming the parameter.
    """
    for name, n in (("n_labeled", n_labeled), ("n_unlabeled", n_unlabeled), ("n_test", n_test)):
        if type(n) is not int or n < 1:
            raise UserError(f"split.{name}={n!r}; expected an integer of at least 1")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(records))
    test_order = rng.permutation(len(test_records)) if test_records is not None else None
    unlabeled_order = rng.permutation(len(unlabeled_records)) if unlabeled_records is not None else None

    held_out = 0 if test_records is not None else n_test  # rows the table keeps back for the test split
    if n_labeled + held_out > len(records):
        also = f" and split.n_test={n_test}" if held_out else ""
        raise UserError(f"split.n_labeled={n_labeled}{also} need {n_labeled + held_out} rows; "
                        f"the table has {len(records)}")
    labeled = [records[i] for i in order[:n_labeled]]
    _labeled(labeled, "labeled split")

    if test_records is None:
        taken = n_labeled + (n_unlabeled if unlabeled_records is None else 0)
        test = [records[i] for i in order[::-1][:n_test]]  # from the end, so that it stays put
        test_full = [records[i] for i in order[taken:]]
    else:
        if n_test > len(test_records):
            raise UserError(f"split.n_test={n_test} is larger than the {len(test_records)} rows of the test table")
        test = [test_records[i] for i in test_order[:n_test]]
        test_full = list(test_records)
    _labeled(test_full, "test split")

    if unlabeled_records is None:
        pool = [records[i] for i in order[n_labeled:len(records) - held_out]]
        if n_unlabeled > len(pool):
            raise UserError(f"split.n_unlabeled={n_unlabeled} is larger than the {len(pool)} rows of the table "
                            f"left after split.n_labeled={n_labeled}"
                            + (f" and split.n_test={n_test}" if held_out else ""))
    else:
        pool = [unlabeled_records[i] for i in unlabeled_order]
        if n_unlabeled > len(pool):
            raise UserError(f"split.n_unlabeled={n_unlabeled} is larger than the {len(pool)} rows of the "
                            "unlabeled table")
    unlabeled = [{"id": r["id"], "text": r["text"]} for r in pool[:n_unlabeled]]
    return {"labeled": labeled, "unlabeled": unlabeled, "test": test, "test_full": test_full}


# --- numeric columns (precomputed teacher scores) ------------------------------------------------


class _Columns(typing.NamedTuple):
    """What a row reader needs of a spec: the columns to read."""

    columns: tuple[str, ...]


def _number(path: Path, where: str, column: str, value) -> float:
    """A finite number: an int or float (JSON, Parquet), or a CSV field that parses as one."""
    if isinstance(value, str) and value.strip():
        try:
            number = float(value)
        except ValueError:
            number = None
    else:  # bool is an int subclass: true is no score
        number = float(value) if type(value) in (int, float) or isinstance(value, np.floating) else None
    if number is None:
        shown = "empty" if value is None or (isinstance(value, str) and not value.strip()) else f"holds {value!r}"
        raise UserError(f"{path}: {where}: column {column!r} is {shown}; expected a number")
    if not np.isfinite(number):
        raise UserError(f"{path}: {where}: column {column!r} holds {value!r}; expected a finite number")
    return number


def read_columns(path: Path | str, columns: Sequence[str], id_column: str | None = None,
                 numeric: Sequence[str] = ()) -> tuple[list[str], dict[str, list]]:
    """(ids, {column: values}) of a table's rows, as read_table reads tables (the same formats, ids and
    errors); the `numeric` columns as finite floats, the others as given (strings and integers).

    Ids: the id column's (a string or an integer, each once), or row-1, row-2, ... without one.
    """
    path = Path(path)
    fmt = _format(path)
    wanted = tuple(dict.fromkeys([*columns, *([id_column] if id_column else [])]))
    ids: list[str] = []
    values: dict[str, list] = {c: [] for c in columns}
    first_row: dict[str, str] = {}
    for where, row in _READERS[fmt](path, _Columns(wanted)):
        if id_column is None:
            record_id = f"row-{len(ids) + 1}"
        else:
            record_id = _key(path, where, id_column, row[id_column], "an id")
            if record_id in first_row:
                raise UserError(f"{path}: {where}: id {record_id!r} in column {id_column!r} is also on "
                                f"{first_row[record_id]}; expected each id once")
            first_row[record_id] = where
        ids.append(record_id)
        for column in columns:
            value = row[column]
            values[column].append(_number(path, where, column, value) if column in numeric
                                  else _key(path, where, column, value, "a value"))
    if not ids:
        raise UserError(f"{path}: the table has no rows")
    return ids, values
