"""The student as an HTTP service: POST /predict, GET /health, GET /model."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bert2lr.serving.deploy import load_student, predictions


class BadRequest(Exception):
    def __init__(self, status: int, message: str):
        self.status, self.message = status, message


def default_max_body_bytes(max_batch: int, max_chars: int) -> int:
    """Room for a full batch of the longest texts in plain ASCII, with the JSON around them.

    Texts in other scripts take 2-4 bytes a character in UTF-8 (6 when \\u-escaped), so a full batch
    of the longest such texts needs --max-body-bytes raised; the character limit is still checked.
    """
    return max_batch * (max_chars + 16) + 4096


async def send_error(send: Send, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


class BodyTooLarge(Exception):
    def __init__(self, limit: int):
        self.limit = limit


class BodyLimit:
    """Refuse a request body over `limit` bytes before it is read.

    A declared Content-Length over the limit is answered 413 at once, without reading a byte; a body
    without one (chunked) is counted as it streams in and cut off as soon as it passes the limit.
    """

    def __init__(self, app: ASGIApp, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await send_error(send, 413, f"the body has {int(declared)} bytes; at most {self.limit} "
                                        "(the server's --max-body-bytes)")
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise BodyTooLarge(self.limit)
            return message

        await self.app(scope, counted, send)


def create_app(model_path: Path, allow_ungated: bool = False, max_batch: int = 256,
               max_chars: int = 100_000, max_body_bytes: int | None = None) -> FastAPI:
    """Load the student once and serve it; limits bound the work one request can ask for."""
    model, lineage = load_student(model_path, allow_ungated)
    if max_body_bytes is None:
        max_body_bytes = default_max_body_bytes(max_batch, max_chars)
    card = {k: v for k, v in lineage.items() if k != "reviews"}  # the id lists are for `audit`
    app = FastAPI(title="bert2lr student", version=lineage["versions"].get("bert2lr") or "unknown")
    app.add_middleware(BodyLimit, limit=max_body_bytes)

    @app.exception_handler(BadRequest)
    async def bad_request(_, exc: BadRequest):
        return JSONResponse({"error": exc.message}, status_code=exc.status)

    @app.exception_handler(BodyTooLarge)
    async def too_large(_, exc: BodyTooLarge):
        return JSONResponse({"error": f"the body is over {exc.limit} bytes (the server's --max-body-bytes)"},
                            status_code=413, headers={"connection": "close"})

    @app.exception_handler(RequestValidationError)
    async def invalid(_, exc: RequestValidationError):
        return JSONResponse({"error": "; ".join(e["msg"] for e in exc.errors())}, status_code=422)

    @app.exception_handler(HTTPException)
    async def http_error(_, exc: HTTPException):  # unknown paths, wrong methods
        return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception):
        # Starlette logs the traceback on the server's stderr after this; the client gets no trace.
        return JSONResponse({"error": "internal error; the server's log has the details"}, status_code=500)

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    @app.get("/model")
    async def model_card():
        return card

    def texts_of(body: bytes) -> list[str]:
        if not body:
            raise BadRequest(400, 'empty body; expected JSON {"texts": ["...", ...]}')
        try:
            payload = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise BadRequest(400, f"invalid JSON: {exc}") from None
        except RecursionError:
            raise BadRequest(400, "invalid JSON: nested too deeply") from None
        except ValueError:  # Python refuses to convert longer integers (a CPU-time guard)
            raise BadRequest(400, f"invalid JSON: a number of more than {sys.get_int_max_str_digits()} "
                                  "digits") from None
        texts = payload.get("texts") if isinstance(payload, dict) else None
        if not isinstance(texts, list):
            raise BadRequest(422, 'expected a JSON object with "texts", a list of strings')
        if not texts:
            raise BadRequest(422, '"texts" is empty; send at least one text')
        if len(texts) > max_batch:
            raise BadRequest(413, f'"texts" holds {len(texts)} texts; at most {max_batch} per request')
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise BadRequest(422, f'"texts"[{i}] is {type(text).__name__}; expected a string')
            if len(text) > max_chars:
                raise BadRequest(413, f'"texts"[{i}] has {len(text)} characters; at most {max_chars}')
        return texts

    def score(body: bytes) -> dict:
        return {"predictions": predictions(model, texts_of(body))}

    @app.post("/predict")
    async def predict(request: Request):
        body = await request.body()  # bounded by BodyLimit
        # Parsing and scoring are CPU-bound: off the event loop, so /health answers meanwhile.
        return await run_in_threadpool(score, body)

    return app
