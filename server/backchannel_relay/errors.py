"""Errors the relay answers with: each a status, a stable code and one readable sentence."""

from __future__ import annotations


class RelayError(Exception):
    """Rendered by the error middleware as `{"error": code, "message": message}`."""

    status = 400
    code = "bad_request"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status: int | None = None,
        extra: dict[str, object] | None = None,
        retry_after: float = 0,
    ):
        super().__init__(message)
        self.message = message
        self.extra = extra or {}
        """More JSON fields for the error body (a conflict's winner, say)."""
        self.retry_after = retry_after
        """Seconds for a `Retry-After` header (0: none)."""
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status


class BadRequest(RelayError):
    status, code = 400, "bad_request"


class Unauthorized(RelayError):
    status, code = 401, "unauthorized"


class Forbidden(RelayError):
    status, code = 403, "forbidden"


class NotFound(RelayError):
    status, code = 404, "not_found"


class Conflict(RelayError):
    status, code = 409, "conflict"


class Gone(RelayError):
    status, code = 410, "gone"


class PayloadTooLarge(RelayError):
    status, code = 413, "payload_too_large"


class RequestTimeout(RelayError):
    """The body did not arrive in time: the connection is closed after the answer."""

    status, code = 408, "body_timeout"


class TooManyRequests(RelayError):
    status, code = 429, "rate_limited"

    def __init__(self, message: str, retry_after: float, *, code: str | None = None):
        super().__init__(message, code=code, retry_after=retry_after)


class MailboxFull(RelayError):
    status, code = 429, "mailbox_full"


class SenderShareFull(RelayError):
    """The sender's own share of a recipient's mailbox is used up: it frees as the recipient
    reads (or the envelopes expire), whatever anyone else sends."""

    status, code = 429, "sender_share_full"


class StoreUnavailable(Exception):
    """The relay cannot start: its store cannot be opened or migrated (one readable line)."""
