"""The HTTP service, run for real: `python -m bert2lr serve` on a free loopback port."""

from __future__ import annotations

import json
import select
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from test_deploy import with_gate

from bert2lr.deploy import load_student, predictions
from bert2lr.serve import create_app, default_max_body_bytes

MAX_BODY = 300_000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def gated(student_dir, tmp_path_factory) -> Path:
    return with_gate(student_dir, tmp_path_factory.mktemp("srv") / "student", True)


def start_server(model: Path, *options: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "bert2lr", "serve", "--host", "127.0.0.1", "--port", str(port), "--model", str(model),
         *options], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return process, url
        except httpx.TransportError:
            if process.poll() is not None:
                break
            time.sleep(0.2)
    process.kill()
    pytest.fail("the server did not start: " + process.stderr.read().decode())


@pytest.fixture(scope="module")
def server_process(gated):
    process, url = start_server(gated, "--max-batch", "8", "--max-chars", "1000", "--max-body-bytes", str(MAX_BODY))
    yield process, url
    process.terminate()
    process.wait(timeout=10)


@pytest.fixture(scope="module")
def server(server_process) -> str:
    return server_process[1]


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def raw_request(url: str, head: str, chunks=(), wait: float = 0.2) -> tuple[int, dict, int]:
    """Send a request by hand, stop sending once the server answers: (status, JSON body, bytes sent)."""
    host, port = url.removeprefix("http://").split(":")
    sent = 0
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(head.encode())
        for chunk in chunks:
            if select.select([sock], [], [], 0)[0]:
                break  # the server has answered
            try:
                sock.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(chunk)
            select.select([sock], [], [], wait)
        response = b""
        while b"\r\n\r\n" not in response or len(response.split(b"\r\n\r\n", 1)[1]) < length_of(response):
            data = sock.recv(65536)
            if not data:
                break
            response += data
    head_part, body = response.split(b"\r\n\r\n", 1)
    return int(head_part.split()[1]), json.loads(body), sent


def length_of(response: bytes) -> int:
    for line in response.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 1 << 62


def test_service_predicts_and_describes_its_model(server, gated):
    response = httpx.post(server + "/predict", json={"texts": ["great film", "awful film"]})
    assert response.status_code == 200
    expected = predictions(load_student(gated)[0], ["great film", "awful film"])
    assert response.json()["predictions"] == expected
    card = httpx.get(server + "/model").json()
    assert card["gate"]["passed"] is True and "accuracy" in card["metrics"] and "reviews" not in card


DEEP = b'{"texts": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"


@pytest.mark.parametrize("body, status, fragment", [
    (b"", 400, "empty body"),
    (b"{not json", 400, "invalid JSON"),
    (b"\xff\xfe\x00", 400, "invalid JSON"),
    (b'["a"]', 422, '"texts", a list of strings'),
    (b'{"texts": []}', 422, '"texts" is empty'),
    (b'{"texts": ["ok", 3]}', 422, '"texts"[1] is int'),
    (b'{"texts": "just a string"}', 422, "a list of strings"),
    (json.dumps({"texts": ["x"] * 9}).encode(), 413, "at most 8 per request"),
    (json.dumps({"texts": ["x" * 1001]}).encode(), 413, "has 1001 characters; at most 1000"),
    (DEEP, 400, "nested too deeply"),
    (b'{"texts": [' + b"9" * 5000 + b"]}", 400, "invalid JSON: a number of more than 4300 digits"),
    (b'{"texts": ["a"]' + b" " * MAX_BODY + b"}", 413, f"at most {MAX_BODY}"),
])
def test_bad_requests_get_a_4xx_and_the_service_keeps_serving(server, body, status, fragment):
    response = httpx.post(server + "/predict", content=body, headers={"content-type": "application/json"})
    assert response.status_code == status
    assert fragment in response.json()["error"]
    assert "Traceback" not in response.text
    assert httpx.get(server + "/health").json() == {"status": "ok"}


def test_unknown_paths_and_methods_get_a_json_error(server):
    assert httpx.get(server + "/nowhere").status_code == 404
    assert httpx.get(server + "/nowhere").json() == {"error": "Not Found"}
    response = httpx.get(server + "/predict")
    assert response.status_code == 405 and response.json() == {"error": "Method Not Allowed"}


def test_a_declared_body_over_the_limit_is_refused_before_it_is_read(server_process):
    process, url = server_process
    before = rss_kib(process.pid)
    head = ("POST /predict HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            "Content-Length: 100000000\r\n\r\n")
    status, body, sent = raw_request(url, head, (b"x" * 65536 for _ in range(1526)), wait=0.05)
    assert status == 413 and "100000000 bytes; at most 300000" in body["error"]
    assert sent < 10_000_000  # answered at once, not after the 100 MB
    assert rss_kib(process.pid) - before < 20_000
    assert httpx.get(url + "/health").status_code == 200


def test_a_chunked_body_is_cut_off_at_the_limit(server_process):
    process, url = server_process
    before = rss_kib(process.pid)
    head = "POST /predict HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    chunk = b"10000\r\n" + b" " * 65536 + b"\r\n"
    status, body, sent = raw_request(url, head, (chunk for _ in range(1526)))
    assert status == 413 and f"over {MAX_BODY} bytes" in body["error"]
    assert sent < 10_000_000
    assert rss_kib(process.pid) - before < 20_000
    # A chunked body under the limit is served.
    ok = httpx.post(url + "/predict", content=iter([b'{"texts": ', b'["great film"]}']),
                    headers={"content-type": "application/json"})
    assert ok.status_code == 200 and len(ok.json()["predictions"]) == 1


def test_the_default_body_limit_fits_a_full_batch_of_the_longest_texts():
    limit = default_max_body_bytes(256, 100_000)
    full = json.dumps({"texts": ["x" * 100_000] * 256}).encode()
    assert len(full) <= limit < 100_000_000


def test_an_unexpected_error_is_a_json_500_without_a_trace(gated):
    from fastapi.testclient import TestClient

    app = create_app(gated)

    @app.get("/fail")
    def fail():
        raise RuntimeError("a bug, with secrets in its traceback")

    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/fail")
    assert response.status_code == 500
    assert response.json() == {"error": "internal error; the server's log has the details"}
    assert "secrets" not in response.text and "Traceback" not in response.text
    # The exception still reaches the server, which logs its traceback on stderr.
    with TestClient(app) as client, pytest.raises(RuntimeError, match="a bug"):
        client.get("/fail")

