"""The admin API's error answer: DESIGN.md's JSON error, with no request id (admin calls have none)."""

from __future__ import annotations

from starlette.responses import JSONResponse


def admin_error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message, "request_id": ""}}, status_code=status)
