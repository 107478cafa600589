import io
import json
import random
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer
from sklearn.linear_model import Ridge

from bert2lr import _featurize, limits
from bert2lr.errors import UserError
from bert2lr.linear import LinearTextModel, PythonScorer

WORDS = ["good", "bad", "Film", "the", "İstanbul", "naïve", "x", "ÉTÉ", "don't", "a_b", "١٢٣", "日本語",
         "straße", "Ω", "na\u0308ive", "ǅemal", "ﬁne", "😀", "<br />", "--", "3d", "I"]


def corpus(n=300, seed=0):
    rng = random.Random(seed)
    texts = [" ".join(rng.choices(WORDS, k=rng.randint(0, 25))) for _ in range(n)]
    return texts + ["", "a", "x y z", "😀😀 ok"], np.array([rng.gauss(0, 1) for _ in range(n + 4)])


@pytest.mark.parametrize("vectorizer", [
    CountVectorizer(ngram_range=(1, 3)),
    TfidfVectorizer(ngram_range=(1, 3), sublinear_tf=True, min_df=2),
    TfidfVectorizer(ngram_range=(2, 2), max_features=50),
])
def test_compiled_scoring_equals_scikit_learn(vectorizer):
    texts, y = corpus()
    X = vectorizer.fit_transform(texts)
    ridge = Ridge(alpha=0.3).fit(X, y)
    model = LinearTextModel.from_sklearn(vectorizer, ridge.coef_, ridge.intercept_)
    unseen, _ = corpus(seed=1)
    for batch in (texts, unseen):
        np.testing.assert_allclose(model.decision_function(batch), ridge.predict(vectorizer.transform(batch)),
                                   rtol=0, atol=1e-9)


def test_save_load_round_trip(tmp_path):
    texts, y = corpus()
    vectorizer = TfidfVectorizer(ngram_range=(1, 2))
    ridge = Ridge().fit(vectorizer.fit_transform(texts), y)
    model = LinearTextModel.from_sklearn(vectorizer, ridge.coef_, ridge.intercept_)
    model.save(tmp_path / "model.npz")
    loaded = LinearTextModel.load(tmp_path)
    np.testing.assert_array_equal(loaded.decision_function(texts), model.decision_function(texts))
    assert set(loaded.predict(texts)) <= {0, 1}
    proba = loaded.predict_proba(texts)  # (n, 2): [1 - p, p]
    assert np.all((proba[:, 1] > 0.5) == (loaded.predict(texts) == 1))


def test_truncated_or_foreign_files_are_refused(tmp_path):
    texts, y = corpus()
    vectorizer = CountVectorizer()
    ridge = Ridge().fit(vectorizer.fit_transform(texts), y)
    LinearTextModel.from_sklearn(vectorizer, ridge.coef_, ridge.intercept_).save(tmp_path / "model.npz")
    data = (tmp_path / "model.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="cut.npz: not a valid bert2lr linear model"):
        LinearTextModel.load(tmp_path / "cut.npz")
    # A pickled object array would need allow_pickle; loading must refuse, not execute it.
    np.savez(tmp_path / "pickled.npz", config=np.array([{"format": "x"}], dtype=object))
    with pytest.raises(UserError, match="pickled.npz: not a valid bert2lr linear model"):
        LinearTextModel.load(tmp_path / "pickled.npz")
    with pytest.raises(UserError, match="model file not found"):
        LinearTextModel.load(tmp_path / "missing.npz")


def test_inconsistent_arrays_are_refused():
    with pytest.raises(ValueError, match="inconsistent"):
        LinearTextModel(vocabulary=np.frombuffer(b"ab", dtype=np.uint8), offsets=np.array([0, 2]),
                        coef=np.zeros(2), idf=np.zeros(0), intercept=0.0, ngram_range=(1, 1),
                        sublinear_tf=False, l2_norm=False)


def test_texts_must_be_strings():
    model = LinearTextModel(vocabulary=np.frombuffer(b"ab", dtype=np.uint8), offsets=np.array([0, 2]),
                            coef=np.ones(1), idf=np.zeros(0), intercept=0.0, ngram_range=(1, 1),
                            sublinear_tf=False, l2_norm=False)
    assert model.decision_function(["ab ab", "AB"]).tolist() == [2.0, 1.0]
    with pytest.raises(TypeError, match="every text must be a str"):
        model.decision_function(["ab", 3])


def test_threads_give_the_same_logits_in_the_same_order():
    texts, y = corpus(n=2000)
    vectorizer = TfidfVectorizer(ngram_range=(1, 3), sublinear_tf=True)
    ridge = Ridge().fit(vectorizer.fit_transform(texts), y)
    model = LinearTextModel.from_sklearn(vectorizer, ridge.coef_, ridge.intercept_)
    model.threads = 1
    one = model.decision_function(texts)
    model.threads = 4
    np.testing.assert_array_equal(model.decision_function(texts), one)
    with pytest.raises(TypeError, match="every text must be a str"):
        model.decision_function(texts[:500] + [None])


def test_the_compiled_scorer_and_the_parameters_agree_on_the_longest_ngram():
    assert _featurize.MAX_NGRAM == limits.MAX_NGRAM


def test_the_compiled_scorer_refuses_a_huge_ngram_range_instead_of_crashing():
    # In a child process: a regression segfaults the child, not pytest.
    code = (
        "import numpy as np; from bert2lr._featurize import LinearModel\n"
        "for low, high in ((1, 2**31 - 1), (0, 1), (2, 1), (1, 9)):\n"
        "    try:\n"
        "        m = LinearModel(b'ab', np.array([0, 2]).tobytes(), np.ones(1).tobytes(), b'', 0.0, low, high,"
        " False, False)\n"
        "    except ValueError as exc:\n"
        "        print(exc)\n"
        "    else:\n"
        "        print(m.decision_function(['']))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "ngram range (1, 2147483647) is not within 1..8", "ngram range (0, 1) is not within 1..8",
        "ngram range (2, 1) is not within 1..8", "ngram range (1, 9) is not within 1..8"]


@pytest.mark.parametrize("scorer", [_featurize.LinearModel, PythonScorer])
def test_a_lower_that_returns_no_str_is_a_type_error(scorer):
    class Shouting(str):
        def lower(self):
            return 3

    model = scorer(b"ab", np.array([0, 2]).tobytes(), np.ones(1).tobytes(), b"", 0.0, 1, 1, False, False)
    with pytest.raises(TypeError, match="text 1: lower\\(\\) returned int, not a str"):
        model.decision_function(["ab", Shouting("AB")])


def test_a_lower_that_empties_the_list_being_scored_does_not_crash():
    texts = []

    class Emptying(str):
        def lower(self):
            texts.clear()
            return "ab"

    texts += [Emptying("AB")] + ["ab ab"] * 200
    model = _featurize.LinearModel(b"ab", np.array([0, 2]).tobytes(), np.ones(1).tobytes(), b"", 0.0, 1, 1,
                                   False, False)
    assert np.frombuffer(model.decision_function(texts, 4)).tolist() == [1.0] + [2.0] * 200


@pytest.mark.parametrize("vectorizer", [
    CountVectorizer(ngram_range=(1, 3)),
    TfidfVectorizer(ngram_range=(1, 3), sublinear_tf=True, min_df=2),
    TfidfVectorizer(ngram_range=(2, 2), max_features=50),
    TfidfVectorizer(ngram_range=(1, 8), norm=None, min_df=2),
])
def test_the_python_scorer_equals_the_compiled_one_and_scikit_learn(vectorizer, monkeypatch):
    texts, y = corpus()
    X = vectorizer.fit_transform(texts)
    ridge = Ridge(alpha=0.3).fit(X, y)
    compiled = LinearTextModel.from_sklearn(vectorizer, ridge.coef_, ridge.intercept_)
    monkeypatch.setenv("BERT2LR_SCORER", "python")
    python = LinearTextModel.from_sklearn(vectorizer, ridge.coef_, ridge.intercept_)
    assert isinstance(python._scorer, PythonScorer) and not isinstance(compiled._scorer, PythonScorer)
    unseen, _ = corpus(seed=1)
    for batch in (texts, unseen):
        logits = python.decision_function(batch)
        np.testing.assert_allclose(logits, ridge.predict(vectorizer.transform(batch)), rtol=0, atol=1e-9)
        np.testing.assert_allclose(logits, compiled.decision_function(batch), rtol=0, atol=1e-9)


def test_without_the_extension_the_python_scorer_is_used_with_a_warning(tmp_path):
    texts, y = corpus()
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
    ridge = Ridge().fit(vectorizer.fit_transform(texts), y)
    model = LinearTextModel.from_sklearn(vectorizer, ridge.coef_, ridge.intercept_)
    model.save(tmp_path / "model.npz")
    (tmp_path / "texts.json").write_text(json.dumps(texts), encoding="utf-8")
    code = (  # None in sys.modules makes the import fail as it does where the extension was not built
        "import sys, json; sys.modules['bert2lr._featurize'] = None\n"
        "from bert2lr.linear import LinearTextModel, PythonScorer\n"
        f"model = LinearTextModel.load({str(tmp_path)!r})\n"
        "assert isinstance(model._scorer, PythonScorer)\n"
        f"texts = json.load(open({str(tmp_path / 'texts.json')!r}, encoding='utf-8'))\n"
        "print(json.dumps(model.decision_function(texts).tolist()))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stderr.startswith("bert2lr: warning: the compiled scorer cannot be imported")
    assert len(result.stderr.splitlines()) == 1
    np.testing.assert_allclose(json.loads(result.stdout), model.decision_function(texts), rtol=0, atol=1e-9)


def saved_arrays(tmp_path) -> dict:
    """The arrays of a valid saved model, to spoil one at a time."""
    texts, y = corpus()
    vectorizer = TfidfVectorizer(ngram_range=(1, 2))
    ridge = Ridge().fit(vectorizer.fit_transform(texts), y)
    LinearTextModel.from_sklearn(vectorizer, ridge.coef_, ridge.intercept_).save(tmp_path / "good.npz")
    with np.load(tmp_path / "good.npz") as npz:
        return {k: npz[k] for k in npz.files}


def spoil_config(**changes):
    def spoil(arrays):
        config = json.loads(str(arrays["config"]))
        arrays["config"] = np.array(json.dumps(config | changes))
    return spoil


def spoil_array(name, value):
    def spoil(arrays):
        arrays[name] = value(arrays[name]) if callable(value) else value
    return spoil


def with_item(index, value):
    def change(array):
        array = array.copy()
        array[index] = value
        return array
    return change


@pytest.mark.parametrize("spoil, what", [
    (spoil_config(ngram_range=[1, 2**31 - 1]), "config.ngram_range is [1, 2147483647], expected [min, max] with "
                                               "1 <= min <= max <= 8"),
    (spoil_config(ngram_range=[1, 9]), "config.ngram_range is [1, 9]"),
    (spoil_config(ngram_range=[True, 2]), "config.ngram_range is [True, 2]"),
    (spoil_config(ngram_range=[1.0, 2]), "config.ngram_range is [1.0, 2]"),
    (spoil_config(ngram_range="1,2"), "config.ngram_range is '1,2'"),
    (spoil_config(sublinear_tf="false"), "config.sublinear_tf is 'false', expected true or false"),
    (spoil_config(l2_norm=1), "config.l2_norm is 1, expected true or false"),
    (spoil_config(format=["bert2lr-linear-text/1"]), "format ['bert2lr-linear-text/1'], expected"),
    (spoil_array("config", np.array([1, 2])), "config is int64 of shape (2,), expected a JSON string"),
    (spoil_array("config", np.array("[1, 2]")), "config is not a JSON object"),
    (spoil_array("coef", with_item(3, np.nan)), "coef[3] is nan"),
    (spoil_array("coef", with_item(0, -np.inf)), "coef[0] is -inf"),
    (spoil_array("idf", with_item(5, np.inf)), "idf[5] is inf"),
    (spoil_array("intercept", np.array(np.nan)), "intercept is nan"),
    (spoil_array("intercept", np.array([0.5])), "intercept float64 of shape (1,)"),
    (spoil_array("coef", lambda a: a.astype(np.float32)), "coef, idf and intercept are float32"),
    (spoil_array("coef", lambda a: a.reshape(1, -1)), "coef, idf and intercept are float64 of shape (1, "),
    (spoil_array("idf", lambda a: a[:-1]), "for 309 coefficients; expected idf of shape (0,) or (309,)"),
    (spoil_array("vocabulary", lambda a: a.astype(np.int64)), "vocabulary is int64 of shape"),
    (spoil_array("offsets", lambda a: a.astype(np.int32)), "offsets is int32 of shape (310,), expected int64"),
    (spoil_array("offsets", lambda a: a[:-1]), "offsets is int64 of shape (309,), expected int64 of shape (310,)"),
    (spoil_array("offsets", with_item(7, 10**12)), "vocabulary offsets are not increasing"),
    (spoil_array("offsets", with_item(-1, 10**12)), "vocabulary offsets do not cover the vocabulary"),
    (spoil_array("vocabulary", with_item(0, 0xC0)), "vocabulary entry 0 is not a 1..2-gram of word tokens"),
])
def test_malformed_model_files_are_refused_with_one_line(tmp_path, spoil, what):
    arrays = saved_arrays(tmp_path)
    assert len(arrays["coef"]) == 309  # the counts in the expected messages
    spoil(arrays)
    assert_refused_with_one_line(tmp_path / "bad.npz", arrays, what)


def assert_refused_with_one_line(path, arrays: dict, what: str) -> None:
    """Saved as `path`, the arrays are refused by load with one line that names the file and says `what`."""
    np.savez(path, **arrays)
    with pytest.raises(UserError) as error:
        LinearTextModel.load(path)
    message = str(error.value)
    assert message.startswith(f"{path}: not a valid bert2lr linear model (")
    assert what in message and "\n" not in message


def crc32_after_zeros(crc: int, n: int) -> int:
    """zlib.crc32(bytes(n), crc) without making n bytes: the register times x^(8n), by squaring."""
    def apply(matrix, vector):
        result = 0
        for column in matrix:
            if vector & 1:
                result ^= column
            vector >>= 1
        return result

    operator = [0xEDB88320] + [1 << i for i in range(31)]  # one zero bit
    for _ in range(3):
        operator = [apply(operator, column) for column in operator]  # one zero byte
    register = crc ^ 0xFFFFFFFF
    while n:
        if n & 1:
            register = apply(operator, register)
        operator = [apply(operator, column) for column in operator]
        n >>= 1
    return register ^ 0xFFFFFFFF


def write_zip(path, members: dict[str, tuple[bytes, int, int, int]]) -> None:
    """A zip of (stored or deflated bytes, method, crc32, unpacked size) per member name."""
    local, central = io.BytesIO(), io.BytesIO()
    for name, (data, method, crc, size) in members.items():
        offset, encoded = local.tell(), name.encode()
        local.write(struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, method, 0, 0x21, crc, len(data), size,
                                len(encoded), 0) + encoded + data)
        central.write(struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, method, 0, 0x21, crc, len(data),
                                  size, len(encoded), 0, 0, 0, 0, 0, offset) + encoded)
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(members), len(members), central.tell(), local.tell(), 0)
    path.write_bytes(local.getvalue() + central.getvalue() + end)


def test_a_zip_bomb_is_refused_before_it_is_unpacked(tmp_path):
    arrays = saved_arrays(tmp_path)
    members = {}
    for name, array in arrays.items():
        buffer = io.BytesIO()
        np.lib.format.write_array(buffer, array, allow_pickle=False)
        data = buffer.getvalue()
        members[f"{name}.npy"] = (data, 0, zlib.crc32(data), len(data))
    # coef: 2 GiB of float64 zeros, deflated: one 16 MiB block of zeros, compressed once and repeated.
    zeros, block = 2**31, 2**24
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False, "shape": (zeros // 8,)})
    header = header.getvalue()
    head = zlib.compressobj(9, zlib.DEFLATED, -15)
    stream = head.compress(header) + head.flush(zlib.Z_FULL_FLUSH)
    repeated = zlib.compressobj(9, zlib.DEFLATED, -15)
    stream += (repeated.compress(bytes(block)) + repeated.flush(zlib.Z_FULL_FLUSH)) * (zeros // block)
    stream += zlib.compressobj(9, zlib.DEFLATED, -15).flush()
    members["coef.npy"] = (stream, 8, crc32_after_zeros(zlib.crc32(header), zeros), len(header) + zeros)
    write_zip(tmp_path / "bomb.npz", members)
    size = (tmp_path / "bomb.npz").stat().st_size
    assert size < 3 * 2**20
    with pytest.raises(UserError) as error:
        LinearTextModel.load(tmp_path / "bomb.npz")
    assert str(error.value) == (f"{tmp_path / 'bomb.npz'}: not a valid bert2lr linear model (coef unpacks to "
                                f"{len(header) + zeros:,} bytes, more than the file's {size:,})")
