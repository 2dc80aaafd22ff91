"""Every error leaves the API as ``{"error": {"code": ..., "message": ...}}``."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import IntegrityError
from starlette.exceptions import HTTPException

from phemeral.errors import PhemeralError, StoreUnavailable

log = logging.getLogger(__name__)
RETRY_AFTER_SECONDS = 2


def error_response(status: int, code: str, message: str) -> JSONResponse:
    headers = {"Retry-After": str(RETRY_AFTER_SECONDS)} if status == 503 else None
    return JSONResponse(
        {"error": {"code": code, "message": message}}, status_code=status, headers=headers
    )


def install_error_handlers(app: FastAPI) -> None:
    async def phemeral_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, PhemeralError)
        if isinstance(exc, StoreUnavailable):
            log.warning("store unavailable: %s", exc.message)
        return error_response(exc.http_status, exc.code, exc.message)

    async def validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        parts = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
            parts.append(f"{where}: {err.get('msg', 'invalid')}" if where else err.get("msg", ""))
        return error_response(422, "invalid_input", "; ".join(parts) or "invalid request")

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return error_response(exc.status_code, code, str(exc.detail))

    async def integrity_error(request: Request, exc: Exception) -> JSONResponse:
        # Two requests raced for the same unique name (PostgreSQL checks at insert time).
        log.info("integrity error on %s %s: %s", request.method, request.url.path, exc)
        return error_response(
            409, "conflict", "a concurrent change took that name or value first; look and retry"
        )

    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, "internal_error", "internal error; the server log has details")

    app.add_exception_handler(PhemeralError, phemeral_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(IntegrityError, integrity_error)
    app.add_exception_handler(Exception, unexpected)
