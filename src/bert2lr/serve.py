"""The student as an HTTP service: POST /predict, GET /health, GET /model."""

from __future__ import annotations

import json
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from bert2lr.deploy import load_student, predictions


class BadRequest(Exception):
    def __init__(self, status: int, message: str):
        self.status, self.message = status, message


def create_app(model_path: Path, allow_ungated: bool = False, max_batch: int = 256,
               max_chars: int = 100_000) -> FastAPI:
    """Load the student once and serve it; limits bound the work one request can ask for."""
    model, lineage = load_student(model_path, allow_ungated)
    card = {k: v for k, v in lineage.items() if k != "reviews"}  # the id lists are for `audit`
    app = FastAPI(title="bert2lr student", version=lineage["versions"].get("bert2lr") or "unknown")

    @app.exception_handler(BadRequest)
    async def bad_request(_, exc: BadRequest):
        return JSONResponse({"error": exc.message}, status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def invalid(_, exc: RequestValidationError):
        return JSONResponse({"error": "; ".join(e["msg"] for e in exc.errors())}, status_code=422)

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    @app.get("/model")
    async def model_card():
        return card

    @app.post("/predict")
    async def predict(request: Request):
        body = await request.body()
        if not body:
            raise BadRequest(400, 'empty body; expected JSON {"texts": ["...", ...]}')
        try:
            payload = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise BadRequest(400, f"invalid JSON: {exc}") from None
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
        return {"predictions": predictions(model, texts)}

    return app
