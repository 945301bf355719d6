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
    scenario = f" [scenario {message['scenario_time']}]" if message.get("scenario_time") else ""
    head = (
        f"[{message['id'][:12]}] {message['kind']} {arrow}, {when(message['sent_at'])}{scenario} "
        f"({message['status']}; {message['verified']})"
    )
    reply = f"\n  in reply to {message['in_reply_to'][:12]}" if message.get("in_reply_to") else ""
    body = "\n".join("  " + line for line in str(message["text"]).splitlines() or [""])
    return f"{head}{reply}\n{body}"


def proposal_lines(view: dict[str, Any], full: bool = False) -> str:
    """One proposal: a line for `proposals`, with terms and history for `show`."""
    title = view["title"]
    if title is None:
        title = f"(sealed until {when(view['sealed_until'])})"
    to = ", ".join(view["to"])
    head = f"[{view['id'][:12]}] proposal from {view['from']} to {to}: {title}"
    head += f" [{view['status'].upper()}]"
    if not full:
        return head
    lines = [head]
    lines += [f"  {i}. {term}" for i, term in enumerate(view["terms"], 1)]
    if view["conditions"]:
        lines.append("  only together with: " + ", ".join(c[:12] for c in view["conditions"]))
    if view["answers"]:
        lines.append(f"  counters proposal {view['answers'][:12]}")
    if view["expires_at"]:
        lines.append(f"  expires {when(view['expires_at'])}")
    if view["reveal_at"]:
        lines.append(f"  revealed at {when(view['reveal_at'])}")
    lines.append(f"  digest {view['digest']}")
    lines.append(f"  author's signature: {view['signature']}")
    notary = view["notary"]
    relay = f"; relay: {view['relay']}" if view["relay"] else ""
    lines.append(f"  notarised: entry {notary['seq']} at {when(notary['at'])}{relay}")
    for item in view["history"]:
        extra = f": {item['reason']}" if item.get("reason") else ""
        if item.get("counter"):
            extra += f" (counter-proposal {item['counter'][:12]})"
        if not item["effective"]:
            extra += f" [no effect: {item.get('note', '')}]"
        lines.append(
            f"  #{item['seq']} {item['kind']} by {item['by']}, {when(item['notarised_at'])}{extra}"
        )
    return "\n".join(lines)
