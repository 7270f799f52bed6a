"""Errors as one short line, for records, result tables and error answers.

Shared by the gateway (a replica's failure) and the replayer's client (a server's answer).
"""

from __future__ import annotations

import json

EXCERPT_CHARS = 200


def excerpt(text: str, limit: int = EXCERPT_CHARS) -> str:
    """One line of at most ``limit`` characters."""
    one = " ".join(text.split())
    return one if len(one) <= limit else one[: limit - 3] + "..."


def describe(e: BaseException) -> str:
    """The exception's type and message (HTTP clients' messages can be empty)."""
    text = excerpt(str(e))
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def error_message(text: str) -> str:
    """The message of an OpenAI-style error body (``{"error": {"message": ...}}``, or vLLM's
    ``{"object": "error", "message": ...}``), else the text itself, as one short line."""
    try:
        body = json.loads(text)
    except ValueError:
        return excerpt(text)
    err = body.get("error", body) if isinstance(body, dict) else None
    if isinstance(err, dict) and isinstance(err.get("message"), str):
        return excerpt(err["message"])
    return excerpt(err if isinstance(err, str) else text)
