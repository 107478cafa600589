"""The student as an HTTP service: POST /predict, GET /health, GET /model."""

# No `from __future__ import annotations`: FastAPI reads the endpoint's annotations at runtime, and
# PredictRequest is built inside create_app, where a string annotation could not be resolved.

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field, StrictStr, create_model
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bert2lr.serving.deploy import load_student, predictions


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


def too_large(limit: int) -> str:
    return f"the body is over {limit} bytes (the server's --max-body-bytes)"


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


class JSONBodyRequest(Request):
    """The request FastAPI reads /predict's body from: a body over the limit is a 413, every way JSON can
    fail to parse is invalid JSON.

    FastAPI turns a json.JSONDecodeError into a `json_invalid` validation error, but answers any other
    parse failure (JSON nested too deeply, a number too long for Python, bytes that are no Unicode text)
    with a bare 400 "There was an error parsing the body". Raising them all as JSONDecodeError, with a
    message saying what is wrong, gives the client that message through the one validation handler.
    """

    async def body(self) -> bytes:
        try:
            return await super().body()
        except BodyTooLarge as exc:  # FastAPI answers any other exception while reading the body with a 400
            raise HTTPException(413, too_large(exc.limit), headers={"connection": "close"}) from None

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            try:
                self._json = json.loads(body)
            except json.JSONDecodeError as exc:
                raise json.JSONDecodeError(str(exc), "", exc.pos) from exc
            except UnicodeDecodeError as exc:
                raise json.JSONDecodeError(str(exc), "", exc.start) from exc
            except RecursionError:
                raise json.JSONDecodeError("nested too deeply", "", 0) from None
            except ValueError as exc:  # Python refuses to convert longer integers (a CPU-time guard)
                raise json.JSONDecodeError(f"a number of more than {sys.get_int_max_str_digits()} digits",
                                           "", 0) from exc
        return self._json


class JSONBodyRoute(APIRoute):
    def get_route_handler(self) -> Callable:
        handler = super().get_route_handler()

        async def parse_with_json_body_request(request: Request) -> Response:
            return await handler(JSONBodyRequest(request.scope, request.receive))

        return parse_with_json_body_request


def response_model(classes: tuple[str, ...]) -> type[BaseModel]:
    """PredictResponse for the served student's classes (its model file names them, by label id).

    Two classes keep the fields of the two-class service (probability of the second class, logit)
    beside every class's probability; K > 2 classes give the label and the probabilities.
    """
    label = Annotated[Literal[classes], Field(description="the class of the highest probability")]
    probabilities = Annotated[dict[str, float], Field(
        description=f"each class's probability ({', '.join(classes)}), rounded to 6 places")]
    fields = {"label": (label, ...)}
    if len(classes) == 2:
        fields["probability"] = (Annotated[float, Field(
            ge=0, le=1, description=f"P({classes[1]}), the sigmoid of the logit, rounded to 6 places")], ...)
        fields["logit"] = (Annotated[float, Field(description="the student's raw score, rounded to 6 places")], ...)
    fields["probabilities"] = (probabilities, ...)
    prediction = create_model("Prediction", **fields)
    return create_model("PredictResponse", predictions=(
        Annotated[list[prediction], Field(description="one per text, in the request's order")], ...))


class ErrorResponse(BaseModel):
    error: str = Field(description="what is wrong, in one sentence")


def request_model(max_batch: int, max_chars: int) -> type[BaseModel]:
    """The body of POST /predict under this server's limits (which are runtime options, hence built here).

    Strict strings (a number is not a text); unknown fields are refused, so a client that sends an option
    this service does not have (a threshold, a model name) learns so instead of having it silently ignored.
    """
    text = Annotated[StrictStr, Field(max_length=max_chars)]
    texts = Annotated[list[text], Field(min_length=1, max_length=max_batch,
                                        description=f"1 to {max_batch} texts of at most {max_chars} characters")]
    return create_model("PredictRequest", __config__=ConfigDict(extra="forbid"), texts=(texts, ...))


def type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def describe(error: dict, request: Request, max_batch: int, max_chars: int) -> tuple[int, str]:
    """(status, message) for one of pydantic's errors about the /predict body: one sentence naming the
    field, the index and what was expected, under today's status codes (400 the body is no JSON, 413 over
    a limit, 422 the wrong shape)."""
    if tuple(error["loc"])[:1] != ("body",):  # no other route takes parameters; a generic answer all the same
        return 422, f"{'.'.join(map(str, error['loc']))}: {error['msg']}"
    kind, loc, value = error["type"], tuple(error["loc"])[1:], error.get("input")
    if kind == "json_invalid":
        return 400, f"invalid JSON: {error['ctx']['error']}"
    if loc == () and kind == "missing":
        return 400, 'empty body; expected JSON {"texts": ["...", ...]}'
    if loc == () and isinstance(value, bytes):  # FastAPI parses JSON only when the content type says so
        content_type = request.headers.get("content-type")
        return 415, (f'content-type "{content_type}" is not JSON' if content_type else "no content-type") + \
            '; send {"texts": [...]} with content-type: application/json'
    if loc == ():
        return 422, f'the body is {type_name(value)}; expected a JSON object with "texts", a list of strings'
    if loc == ("texts",):
        if kind == "missing":
            return 422, 'the body has no "texts"; expected a JSON object with "texts", a list of strings'
        if kind == "list_type":
            return 422, f'"texts" is {type_name(value)}; expected a list of strings'
        if kind == "too_short":
            return 422, '"texts" is empty; send at least one text'
        if kind == "too_long":
            return 413, f'"texts" holds {error["ctx"]["actual_length"]} texts; at most {max_batch} per request'
    if len(loc) == 2 and loc[0] == "texts" and isinstance(loc[1], int):
        where = f'"texts"[{loc[1]}]'
        if kind == "string_type":
            return 422, f"{where} is {type_name(value)}; expected a string"
        if kind == "string_too_long":
            return 413, f"{where} has {len(value)} characters; at most {max_chars}"
    if len(loc) == 1 and kind == "extra_forbidden":
        return 422, f'unknown field "{loc[0]}"; the body holds only "texts"'
    where = "the body" if not loc else "".join(f"[{part}]" if isinstance(part, int) else f'"{part}"' for part in loc)
    return 422, f"{where}: {error['msg']}"


def create_app(model_path: Path, allow_ungated: bool = False, max_batch: int = 256,
               max_chars: int = 100_000, max_body_bytes: int | None = None) -> FastAPI:
    """Load the student once and serve it; limits bound the work one request can ask for."""
    model, lineage = load_student(model_path, allow_ungated)
    if max_body_bytes is None:
        max_body_bytes = default_max_body_bytes(max_batch, max_chars)
    card = {k: v for k, v in lineage.items() if k != "reviews"}  # the id lists are for `audit`
    app = FastAPI(title="bert2lr student", version=lineage["versions"].get("bert2lr") or "unknown")
    app.router.route_class = JSONBodyRoute
    app.add_middleware(BodyLimit, limit=max_body_bytes)
    PredictRequest = request_model(max_batch, max_chars)
    PredictResponse = response_model(model.classes)

    @app.exception_handler(BodyTooLarge)  # a body read other than by JSONBodyRequest
    async def body_too_large(_, exc: BodyTooLarge):
        return JSONResponse({"error": too_large(exc.limit)}, status_code=413, headers={"connection": "close"})

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        # One message, about the first error: pydantic lists one per bad text, up to --max-batch of them.
        status, message = describe(exc.errors()[0], request, max_batch, max_chars)
        return JSONResponse({"error": message}, status_code=status)

    @app.exception_handler(HTTPException)
    async def http_error(_, exc: HTTPException):  # unknown paths, wrong methods, a chunked body over the limit
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

    errors = {400: "an empty body or invalid JSON",
              413: "a body over --max-body-bytes, more than --max-batch texts or a text over --max-chars",
              415: "a body whose content type is not JSON",
              422: 'a body that is not {"texts": [...]} with 1 or more strings, and nothing else'}

    @app.post("/predict", response_model=PredictResponse,
              responses={status: {"model": ErrorResponse, "description": text} for status, text in errors.items()})
    def predict(body: PredictRequest):  # a plain def: FastAPI runs it in its threadpool, off the event loop
        """Label and every class's probability for each text (with two classes, also P(second) and logit)."""
        return {"predictions": predictions(model, body.texts)}

    return app
