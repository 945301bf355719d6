"""The building blocks of the relay's OpenAPI document: JSON schemas and responses.

Shared by `openapi` (the document) and by the control paths merged into it (`control_openapi`,
`control_page`), which is why they live below all three; the underscored helpers are for those
modules only.
"""

from __future__ import annotations

from typing import Any

NAME = {"type": "string", "minLength": 1, "maxLength": 64}
INT = {"type": "integer"}


def _obj(required: list[str], **properties: Any) -> dict[str, Any]:
    return {"type": "object", "required": required, "properties": properties}


ERROR = _obj(["error", "message"], error={"type": "string"}, message={"type": "string"})


def _body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def _ok(schema: dict[str, Any], status: str = "200", description: str = "OK") -> dict[str, Any]:
    return {
        status: {"description": description, "content": {"application/json": {"schema": schema}}}
    }


def _errors(*statuses: int) -> dict[str, Any]:
    reasons = {
        400: "Malformed request",
        401: "Not authenticated",
        403: "Forbidden",
        404: "Unknown name",
        409: "Conflict",
        410: "Gone",
        408: "The body did not arrive within the body timeout (the connection is closed)",
        413: "Too large",
        429: "Rate limited or mailbox full (see Retry-After)",
    }
    return {
        str(s): {"description": reasons[s], "content": {"application/json": {"schema": ERROR}}}
        for s in statuses
    }


def _refused(status: int, description: str) -> dict[str, Any]:
    """One error status whose description names its codes."""
    return {
        str(status): {
            "description": description,
            "content": {"application/json": {"schema": ERROR}},
        }
    }
