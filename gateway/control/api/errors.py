"""Every error the API returns, mapped in one place: the project's errors by their status,
invalid input as 422 naming each field; never a traceback."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from gateway.errors import SandgateError, Unavailable


class Unauthorized(SandgateError):
    status = 401


class Forbidden(SandgateError):
    status = 403


def install(app: FastAPI) -> None:
    @app.exception_handler(SandgateError)
    async def _error(_request: Request, exc: SandgateError) -> JSONResponse:
        headers = {"retry-after": str(exc.retry_after)} if isinstance(exc, Unavailable) else None
        return JSONResponse(status_code=exc.status,
                            content={"error": type(exc).__name__, "detail": exc.message,
                                     "hint": exc.hint}, headers=headers)

    @app.exception_handler(UnicodeEncodeError)
    async def _not_text(_request: Request, _exc: UnicodeEncodeError) -> JSONResponse:
        # JSON can carry lone surrogates, which are not text; no value reaches a 500
        return JSONResponse(status_code=422, content={
            "error": "invalid_request", "detail": "strings must be valid UTF-8 text"})

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        fields = [{"field": ".".join(str(p) for p in e["loc"]), "message": e["msg"]}
                  for e in exc.errors()]
        return JSONResponse(status_code=422, content={
            "error": "invalid_request", "detail": "; ".join(
                f"{f['field']}: {f['message']}" for f in fields), "fields": fields})
