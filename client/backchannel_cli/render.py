"""All output in one place: human text by default, JSON with --json."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import click


def emit_json(value: Any) -> None:
    click.echo(json.dumps(value, ensure_ascii=False))


def when(ms: int) -> str:
    if ms <= 0:
        return "unknown time"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def message_lines(message: dict[str, Any]) -> str:
    arrow = f"from {message['from']}" if message["to"] == "me" else f"to {message['to']}"
    head = (
        f"[{message['id'][:12]}] {message['kind']} {arrow}, {when(message['sent_at'])} "
        f"({message['status']}; {message['verified']})"
    )
    reply = f"\n  in reply to {message['in_reply_to'][:12]}" if message.get("in_reply_to") else ""
    body = "\n".join("  " + line for line in str(message["text"]).splitlines() or [""])
    return f"{head}{reply}\n{body}"
