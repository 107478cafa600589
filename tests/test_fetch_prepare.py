import gzip
import hashlib
import http.server
import io
import json
import tarfile
import threading

import pytest
from conftest import make_archive

from bert2lr.errors import UserError
from bert2lr.stages.fetch import fetch
from bert2lr.params import SplitParams
from bert2lr.stages.prepare import clean, prepare


def read(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_fetch_takes_the_first_reachable_source(tmp_path, archive):
    out = tmp_path / "raw" / "aclImdb_v1.tar.gz"
    used = fetch([(str(tmp_path / "missing.tar.gz"), None), (str(archive), None)], out)
    assert used == str(archive)
    assert out.read_bytes() == archive.read_bytes()
    assert [p.name for p in out.parent.iterdir()] == [out.name]  # no temporary left behind


def test_fetch_lists_what_it_tried(tmp_path):
    with pytest.raises(UserError) as info:
        fetch([(str(tmp_path / "a.tar.gz"), None), ("http://127.0.0.1:9/aclImdb_v1.tar.gz", None)],
              tmp_path / "out.tar.gz")
    message = str(info.value)
    assert "a.tar.gz" in message and "127.0.0.1:9" in message and "fetch.sources" in message
    assert not (tmp_path / "out.tar.gz").exists()


def test_splits_are_disjoint_seeded_and_keep_identity(tmp_path, archive):
    p = SplitParams(seed=3, n_labeled=10, n_unlabeled=12, n_test=8)
    counts = prepare(archive, tmp_path / "splits", p)
    assert counts == {"labeled": 10, "unlabeled": 12, "test": 8, "test_full": 20}
    splits = {name: read(tmp_path / "splits" / f"{name}.jsonl") for name in counts}
    ids = {name: {r["id"] for r in rows} for name, rows in splits.items()}
    assert not ids["labeled"] & ids["unlabeled"]
    assert ids["test"] <= ids["test_full"]
    assert all(i.startswith("train/") for i in ids["labeled"] | ids["unlabeled"])
    assert all(i.startswith("test/") for i in ids["test_full"])
    assert all("label" not in r for r in splits["unlabeled"])
    assert all(r["label"] == int(r["id"].split("/")[1] == "pos") for r in splits["labeled"])
    texts = [r["text"] for rows in splits.values() for r in rows]
    assert not any("<br" in t for t in texts)
    assert any("★" in t for t in texts)  # non-ASCII text survives
    again = prepare(archive, tmp_path / "again", p)
    assert counts == again
    assert (tmp_path / "splits" / "test.jsonl").read_bytes() == (tmp_path / "again" / "test.jsonl").read_bytes()


def test_growing_the_transfer_set_keeps_the_smaller_one(tmp_path, archive):
    small = prepare(archive, tmp_path / "a", SplitParams(n_labeled=10, n_unlabeled=5, n_test=4))
    assert small["unlabeled"] == 5
    prepare(archive, tmp_path / "b", SplitParams(n_labeled=10, n_unlabeled=35, n_test=4, unlabeled_pool="train+unsup"))
    a = [r["id"] for r in read(tmp_path / "a" / "unlabeled.jsonl")]
    b = [r["id"] for r in read(tmp_path / "b" / "unlabeled.jsonl")]
    assert b[:5] == a
    assert any(i.startswith("train/unsup/") for i in b)
    for name in ("labeled", "test"):  # the pool changes the transfer set only
        assert (tmp_path / "a" / f"{name}.jsonl").read_bytes() == (tmp_path / "b" / f"{name}.jsonl").read_bytes()


def test_empty_review_is_kept(tmp_path, archive):
    prepare(archive, tmp_path / "s", SplitParams(n_labeled=30, n_unlabeled=11, n_test=1))
    train = read(tmp_path / "s" / "labeled.jsonl") + read(tmp_path / "s" / "unlabeled.jsonl")
    assert {r["id"]: r["text"] for r in train}["train/neg/999_2"] == ""


def test_clean_strips_html_breaks():
    assert clean("a<br />b<br/>c<BR>d") == "a b c d"


@pytest.mark.parametrize(
    "p, message",
    [
        (SplitParams(n_labeled=100), "split.n_labeled=100 is larger than the 41 labeled train reviews"),
        (SplitParams(n_labeled=10, n_unlabeled=40, n_test=4, unlabeled_pool="train"),
         "split.n_unlabeled=40 is larger than the 31 reviews"),
        (SplitParams(n_labeled=10, n_unlabeled=5, n_test=21), "split.n_test=21 is larger than the 20 test"),
        # params refuse n_labeled 0 on load; prepare still refuses an empty split on its own
        (SplitParams.model_construct(n_labeled=0, n_unlabeled=5, n_test=2), "split 'labeled' would be empty"),
    ],
)
def test_sizes_beyond_the_pool(tmp_path, archive, p, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(")):
        prepare(archive, tmp_path / "s", p)
    assert not (tmp_path / "s").exists()


def test_missing_corrupt_and_incomplete_archives(tmp_path):
    with pytest.raises(UserError, match="archive not found"):
        prepare(tmp_path / "none.tar.gz", tmp_path / "s", SplitParams())
    corrupt = tmp_path / "corrupt.tar.gz"
    corrupt.write_bytes(b"\x1f\x8b\x08\x00garbage" * 10)
    with pytest.raises(UserError, match="not a readable tar archive"):
        prepare(corrupt, tmp_path / "s", SplitParams())
    no_test = make_archive(tmp_path / "no_test.tar.gz", with_test=False)
    with pytest.raises(UserError, match="no aclImdb/test/pos or aclImdb/test/neg reviews"):
        prepare(no_test, tmp_path / "s", SplitParams(n_labeled=2, n_unlabeled=2, n_test=2))
    assert not (tmp_path / "s").exists()


def test_truncated_archive(tmp_path, archive):
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(UserError, match="cut.tar.gz: not a readable tar archive"):
        prepare(cut, tmp_path / "s", SplitParams())


@pytest.mark.parametrize(
    "name, data, message",
    [
        ("aclImdb/train/pos/12_3.txt", b"text", "12_3.txt: malformed review name"),
        ("aclImdb/test/neg/notes.txt", b"text", "notes.txt: malformed review name"),
        ("aclImdb/train/pos/13_9.txt", b"\xff\xfe bad", "13_9.txt: not UTF-8 text"),
    ],
)
def test_malformed_reviews_are_named(tmp_path, name, data, message):
    bad = make_archive(tmp_path / "bad.tar.gz", extra={name: data})
    with pytest.raises(UserError, match=message):
        prepare(bad, tmp_path / "s", SplitParams(n_labeled=2, n_unlabeled=2, n_test=2))


def test_original_layout_with_feat_files(tmp_path):
    original = make_archive(tmp_path / "orig.tar.gz", extra={
        "aclImdb/train/unsupBow.feat": b"0:1 2:3\n", "aclImdb/test/labeledBow.feat": b"9 0:1\n",
        "aclImdb/imdb.vocab": b"the\n"})
    with tarfile.open(original) as tar:
        assert "aclImdb/train/unsupBow.feat" in tar.getnames()
    counts = prepare(original, tmp_path / "s", SplitParams(n_labeled=4, n_unlabeled=4, n_test=4))
    assert counts["test_full"] == 20


# --- fetch checks what it copies -------------------------------------------------------------

def digest(path, algorithm="sha256"):
    return f"{algorithm}:" + hashlib.new(algorithm, path.read_bytes()).hexdigest()


@pytest.fixture
def http_source(archive):
    """A real HTTP server on 127.0.0.1: /archive, /cut (half the bytes of a longer announced body), /readme."""
    body = archive.read_bytes()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            data = {"/archive": body, "/cut": body, "/readme": b"# Data\nnot an archive\n"}.get(self.path)
            if data is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: len(data) // 2] if self.path == "/cut" else data)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def test_fetch_checks_the_hash_while_copying(tmp_path, archive):
    out = tmp_path / "raw" / "a.tar.gz"
    for expected in (digest(archive), digest(archive, "md5"), digest(archive).upper().replace("SHA256", "sha256")):
        assert fetch([(str(archive), expected)], out) == str(archive)
        assert out.read_bytes() == archive.read_bytes()


def test_a_wrong_file_is_rejected_like_a_missing_one(tmp_path, archive):
    readme = tmp_path / "README.md"
    readme.write_text("# Data\n")
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(archive.read_bytes()[:1000])
    out = tmp_path / "raw" / "a.tar.gz"
    # A source that does not match is skipped; the next one that does is used.
    assert fetch([(str(readme), digest(archive)), (str(archive), digest(archive))], out) == str(archive)
    assert out.read_bytes() == archive.read_bytes()
    out.unlink()
    with pytest.raises(UserError) as info:
        fetch([(str(readme), digest(archive)), (str(cut), digest(archive, "md5")),
               (str(tmp_path / "missing.tar.gz"), None)], out)
    message = str(info.value)
    assert len(message.splitlines()) == 1
    sha = hashlib.sha256(b"# Data\n").hexdigest()
    assert f"README.md (sha256 {sha[:12]}… but expected {digest(archive)[7:19]}…)" in message
    md5 = hashlib.md5(cut.read_bytes()).hexdigest()
    assert f"cut.tar.gz (md5 {md5[:12]}… but expected {digest(archive, 'md5')[4:16]}…)" in message
    assert "missing.tar.gz (No such file or directory)" in message
    assert list(out.parent.iterdir()) == []  # neither the output nor a temporary


@pytest.mark.parametrize("expected", ["sha256:abc", "sha1:" + "0" * 40, "md5:" + "g" * 32, "db2068a1"])
def test_a_malformed_hash_is_a_parameter_error(tmp_path, archive, expected):
    with pytest.raises(UserError, match=f"hash '{expected}' is not 'sha256:<64 hex digits>'"):
        fetch([(str(archive), expected)], tmp_path / "a.tar.gz")
    assert not (tmp_path / "a.tar.gz").exists()


def test_downloads_are_checked_too(tmp_path, archive, http_source):
    out = tmp_path / "a.tar.gz"
    assert fetch([(f"{http_source}/archive", digest(archive))], out) == f"{http_source}/archive"
    assert out.read_bytes() == archive.read_bytes()
    out.unlink()
    with pytest.raises(UserError) as info:
        fetch([(f"{http_source}/cut", None), (f"{http_source}/readme", digest(archive)),
               (f"{http_source}/gone", None)], out)
    message = str(info.value)
    half = archive.stat().st_size // 2
    assert f"/cut ({half} bytes of the {archive.stat().st_size} announced: cut short)" in message
    assert "/readme (sha256 " in message and "/gone (Not Found)" in message
    assert not out.exists()


# --- prepare reads the whole archive, or refuses it --------------------------------------------

def tar_bytes(path):
    return gzip.decompress(path.read_bytes())


def header_offsets(data):
    """Byte offsets of the members' headers in an uncompressed tar."""
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {m.name: m.offset for m in tar.getmembers()}


def test_every_flipped_byte_run_in_the_compressed_stream_is_refused(tmp_path, archive):
    data = archive.read_bytes()
    for offset in range(20, len(data) - 8, max(1, len(data) // 25)):
        bad = tmp_path / f"flip-{offset}.tar.gz"
        bad.write_bytes(data[:offset] + bytes(b ^ 0xFF for b in data[offset: offset + 16]) + data[offset + 16:])
        with pytest.raises(UserError, match=f"flip-{offset}.tar.gz: not a readable tar archive"):
            prepare(bad, tmp_path / "s", SplitParams(n_labeled=2, n_unlabeled=2, n_test=2))
    assert not (tmp_path / "s").exists()


def test_a_wrong_crc_is_refused(tmp_path, archive):
    data = bytearray(archive.read_bytes())
    data[-8] ^= 0xFF  # the gzip trailer: CRC-32, then the length
    bad = tmp_path / "crc.tar.gz"
    bad.write_bytes(bytes(data))
    with pytest.raises(UserError, match="crc.tar.gz: not a readable tar archive .*CRC check failed"):
        prepare(bad, tmp_path / "s", SplitParams(n_labeled=2, n_unlabeled=2, n_test=2))


@pytest.mark.parametrize("garbage", [b"garbage", b"\x1f\x8b" + b"\0" * 30, gzip.compress(b"more", mtime=0)])
def test_bytes_after_the_archive_are_refused(tmp_path, archive, garbage):
    bad = tmp_path / "tail.tar.gz"
    bad.write_bytes(archive.read_bytes() + garbage)
    with pytest.raises(UserError, match="tail.tar.gz: not a readable tar archive"):
        prepare(bad, tmp_path / "s", SplitParams(n_labeled=2, n_unlabeled=2, n_test=2))


def test_a_damaged_header_is_not_taken_for_the_end(tmp_path, archive):
    """tarfile stops quietly at a bad header after the first; the reviews behind it must not be lost."""
    data = bytearray(tar_bytes(archive))
    at = header_offsets(bytes(data))["aclImdb/train/pos/20_7.txt"]
    data[at + 148: at + 156] = b"0000000\0"  # a wrong header checksum, as a flipped bit would make
    bad = tmp_path / "header.tar.gz"
    bad.write_bytes(gzip.compress(bytes(data)))  # an intact gzip stream around a damaged tar
    with pytest.raises(UserError, match=f"header.tar.gz: not a readable tar archive \\(a damaged tar header at byte {at}\\)"):
        prepare(bad, tmp_path / "s", SplitParams(n_labeled=2, n_unlabeled=2, n_test=2))
    zeroed = bytearray(tar_bytes(archive))
    zeroed[at: at + 512] = bytes(512)  # a header wiped to zeros looks like the end-of-archive marker
    bad.write_bytes(gzip.compress(bytes(zeroed)))
    with pytest.raises(UserError, match="data after the end-of-archive marker"):
        prepare(bad, tmp_path / "s", SplitParams(n_labeled=2, n_unlabeled=2, n_test=2))


def test_a_tar_without_its_end_marker_is_refused(tmp_path, archive):
    data = tar_bytes(archive)
    end = max(header_offsets(data).values()) + 1024  # the last member's header and data block
    bad = tmp_path / "cut.tar.gz"
    bad.write_bytes(gzip.compress(data[:end]))
    with pytest.raises(UserError, match="without the end-of-archive marker: truncated"):
        prepare(bad, tmp_path / "s", SplitParams(n_labeled=2, n_unlabeled=2, n_test=2))


def test_a_review_twice_in_the_archive_is_refused(tmp_path, archive):
    data = tar_bytes(archive)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = [(m, tar.extractfile(m).read() if m.isfile() else None) for m in tar.getmembers()]
    bad = tmp_path / "twice.tar.gz"
    with tarfile.open(bad, "w:gz") as tar:
        for member, content in members:
            tar.addfile(member, io.BytesIO(content) if content is not None else None)
        again = tarfile.TarInfo("./aclImdb/train/pos/0_7.txt")  # the same review, under another spelling
        again.size = 4
        tar.addfile(again, io.BytesIO(b"good"))
    with pytest.raises(UserError, match="twice.tar.gz: ./aclImdb/train/pos/0_7.txt: appears twice in the archive"):
        prepare(bad, tmp_path / "s", SplitParams(n_labeled=2, n_unlabeled=2, n_test=2))
