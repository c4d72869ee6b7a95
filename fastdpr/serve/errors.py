"""Errors a client can cause, and their JSON bodies.

fastdpr's own routes answer ``{"error": "<one line>"}``; the OpenAI-compatible routes (under
:data:`OPENAI_PREFIX`) answer OpenAI's shape, ``{"error": {"message", "type", "param", "code"}}``, which
the ``openai`` client turns into its typed exceptions. Either way the status code says what happened.
"""

from __future__ import annotations

from collections.abc import Mapping

from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

#: Routes under this prefix are OpenAI-compatible, and so are their errors.
OPENAI_PREFIX = "/v1/"


class ClientError(HTTPException):
    """A request the server refuses (4xx) with a one-line message. ``param`` (the request field at fault)
    and ``code`` (e.g. ``model_not_found``) fill the OpenAI error shape."""

    def __init__(self, status_code: int, detail: str, headers: Mapping[str, str] | None = None, *,
                 param: str | None = None, code: str | None = None) -> None:
        super().__init__(status_code, detail, dict(headers) if headers else None)
        self.param = param
        self.code = code


def error_response(path: str, status: int, message: str, headers: Mapping[str, str] | None = None, *,
                   param: str | None = None, code: str | None = None) -> JSONResponse:
    """The error body the route at ``path`` answers with: OpenAI's shape under ``/v1/``, else fastdpr's."""
    if path.startswith(OPENAI_PREFIX):
        kind = "invalid_request_error" if status < 500 else "server_error"
        body: dict[str, object] = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    else:
        body = {"error": message}
    return JSONResponse(body, status_code=status, headers=dict(headers or {}))


def check_text(text: str, what: str = "question", *, blank_ok: bool = False, param: str | None = None) -> str:
    """Text the encoder can take: valid UTF-8 that is not blank (``blank_ok``: a passage title)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:  # a JSON "\\ud800" escape decodes to a lone surrogate
        raise ClientError(400, f"the {what} is not valid UTF-8 text (it holds a lone surrogate)",
                          param=param) from exc
    if not blank_ok and not text.strip():
        raise ClientError(422, f"the {what} is empty", param=param)
    return text


def check_count(count: int, limit: int, what: str, *, param: str | None = None) -> None:
    """1 to ``limit`` items (questions, passages, inputs) in one request."""
    if not 1 <= count <= limit:
        raise ClientError(422, f"{what} must hold 1 to {limit} items, got {count}", param=param)
