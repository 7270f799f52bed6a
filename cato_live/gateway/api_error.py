"""The gateway's one error: an HTTP status and an OpenAI-style JSON body."""

from __future__ import annotations

import json


class ApiError(Exception):
    """Answered as ``{"error": {"message": ..., "type": ...}}`` with ``status``."""

    def __init__(self, status: int, message: str, type_: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.type = status, message, type_

    def payload(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "code": self.status}}

    def sse(self) -> bytes:
        """The error as a server-sent event, for a stream that has already begun."""
        return b"data: " + json.dumps(self.payload()).encode() + b"\n\ndata: [DONE]\n\n"
