"""All output in one place: human text by default, JSON with --json.

Times in JSON: every one is an integer field named `..._at`, in milliseconds since the epoch;
`emit_json` adds a sibling `..._at_iso` (ISO 8601 in UTC, `2026-12-02T18:01:02.345Z`; null for
none), so no command has to remember it. Human text passes through `safe`, so control characters
in what others wrote (a bell, an escape sequence) never reach the terminal; JSON escapes them.
"""

from __future__ import annotations

import json
import re
import shlex
from datetime import UTC, datetime, timedelta
from typing import Any

import click

PROFILE_META = "backchannel.profile"
"""Where the command's profile is kept in click's context, for hints that name it."""
DEFAULT_PROFILE = "default"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

_BIDI = [0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A)]
_UNSAFE = [c for c in range(0x20) if c not in (0x09, 0x0A)] + list(range(0x7F, 0xA0)) + _BIDI
_VISIBLE = {c: (f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}") for c in _UNSAFE}
_JSON_ESCAPED = {c: f"\\u{c:04x}" for c in [*range(0x7F, 0xA0), *_BIDI, 0x2028, 0x2029]}
"""What json.dumps leaves raw (it escapes only U+0000-U+001F) but a terminal may act on."""


def safe(text: str) -> str:
    """`text` with every control character but newline and tab shown as an escape (`\\x1b`)."""
    return text.translate(_VISIBLE)


def say(text: str, err: bool = False) -> None:
    """Print human text (made safe: it may hold what a peer, the relay or control wrote)."""
    click.echo(safe(text), err=err)


def note(text: str) -> None:
    """A note on standard error, its command suggestions naming the profile in use."""
    say(hint(f"Note: {text}"), err=True)


# --- hints ---------------------------------------------------------------------------------------


def _profile() -> str:
    ctx = click.get_current_context(silent=True)
    profile = ctx.meta.get(PROFILE_META, DEFAULT_PROFILE) if ctx is not None else DEFAULT_PROFILE
    return str(profile)


def command(args: str) -> str:
    """`backchannel ARGS` as the user should type it: with `--profile NAME` unless default."""
    profile = _profile()
    if profile == DEFAULT_PROFILE:
        return f"backchannel {args}"
    return f"backchannel --profile {shlex.quote(profile)} {args}"


def hint(text: str) -> str:
    """Every command suggested in backquotes (`` `backchannel verify X` ``) with the profile."""
    profile = _profile()
    if profile == DEFAULT_PROFILE:
        return text
    return re.sub(
        r"`backchannel (?!--profile )", f"`backchannel --profile {shlex.quote(profile)} ", text
    )


# --- JSON ----------------------------------------------------------------------------------------


def iso(ms: int | None) -> str | None:
    """ISO 8601 in UTC with milliseconds; None for no time (0 or None)."""
    if not ms:
        return None
    moment = EPOCH + timedelta(milliseconds=ms)
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + f".{moment.microsecond // 1000:03d}Z"


def with_iso_times(value: Any) -> Any:
    """`value` with an `..._at_iso` sibling after every `..._at` time (milliseconds or null)."""
    if isinstance(value, list):
        return [with_iso_times(item) for item in value]
    if not isinstance(value, dict):
        return value
    out: dict[str, Any] = {}
    for key, item in value.items():
        out[key] = with_iso_times(item)
        is_time = item is None or (isinstance(item, int) and not isinstance(item, bool))
        if isinstance(key, str) and key.endswith("_at") and is_time and f"{key}_iso" not in value:
            out[f"{key}_iso"] = iso(item)
    return out


def json_text(value: Any) -> str:
    return json.dumps(with_iso_times(value), ensure_ascii=False).translate(_JSON_ESCAPED)


def emit_json(value: Any) -> None:
    click.echo(json_text(value))


def json_error(code: str, message: str) -> str:
    """What `--json` prints for an error, on standard output."""
    return json_text({"error": code, "message": message})


# --- text ----------------------------------------------------------------------------------------


def when(ms: int | None) -> str:
    if not ms or ms <= 0:
        return "unknown time"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def amount(seconds: float, unit: str) -> str:
    """A duration in the unit the user gave it in (`24h` for 86400 seconds and unit `h`)."""
    per = {"s": 1, "m": 60, "h": 3600, "d": 86400}.get(unit, 1)
    value = seconds / per
    text = f"{value:.0f}" if value == int(value) else f"{value:.2f}".rstrip("0")
    return f"{text}{unit if unit in ('s', 'm', 'h', 'd') else 's'}"


def message_lines(message: dict[str, Any], full: bool = False) -> str:
    """A message as `inbox` shows it; `full` (for `show`) adds when the relay received it."""
    arrow = f"from {message['from']}" if message["to"] == "me" else f"to {message['to']}"
    scenario = f" [scenario {message['scenario_time']}]" if message.get("scenario_time") else ""
    head = (
        f"[{message['id'][:12]}] {message['kind']} {arrow}, {when(message['sent_at'])}{scenario} "
        f"({message['status']}; {message['verified']}){_class_text(message)}"
    )
    reply = f"\n  in reply to {message['in_reply_to'][:12]}" if message.get("in_reply_to") else ""
    if full and message.get("relay_received_at"):
        relay_scenario = message.get("relay_scenario_time")
        reply += f"\n  relay received it {when(message['relay_received_at'])}" + (
            f" [scenario {relay_scenario}]" if relay_scenario else ""
        )
    if full and message.get("proven"):
        reply += "\n  " + _proven_text(message["proven"], message.get("claimed") or {})
    if message.get("refusal"):
        reply += f"\n  REFUSED by the relay: {message['refusal']}"
    body = "\n".join("  " + line for line in str(message["text"]).splitlines() or [""])
    return f"{head}{reply}\n{body}"


def proposal_lines(view: dict[str, Any], full: bool = False) -> str:
    """One proposal: a line for `proposals`, with terms and history for `show`."""
    title = view["title"]
    if title is None:
        title = f"(sealed until {when(view['reveal_at'])})"
    to = ", ".join(view["to"])
    head = f"[{view['id'][:12]}] proposal from {view['from']} to {to}: {title}"
    head += f" [{view['status'].upper()}]"
    if view.get("agreement") not in (None, "none"):
        head += f" {view['agreement'].upper()}"
    if not full:
        return head
    lines = [head]
    if view.get("agreement_note"):
        lines.append(f"  {view['agreement']}: {view['agreement_note']}")
    lines += [f"  {i}. {term}" for i, term in enumerate(view["terms"], 1)]
    if view["conditions"]:
        lines.append("  only together with: " + ", ".join(c[:12] for c in view["conditions"]))
        if view.get("allow_understood"):
            lines.append("  (a clause only understood off the record may meet these)")
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
    lines.append(f"  notarised: entry {notary['seq']} at {when(notary['notarised_at'])}{relay}")
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


def history_line(message: dict[str, Any]) -> str:
    """One message on one line: when, direction, peer, kind, id, status, what it answers."""
    incoming = message["to"] == "me"
    peer = message["from"] if incoming else message["to"]
    scenario = f" [{message['scenario_time']}]" if message.get("scenario_time") else ""
    reply = f" re {message['in_reply_to'][:12]}" if message.get("in_reply_to") else ""
    lines = str(message["text"]).splitlines() or [""]
    first = lines[0] if len(lines[0]) <= 60 and len(lines) == 1 else lines[0][:57] + "..."
    agreement = message.get("agreement")
    state = f"; {agreement}" if agreement not in (None, "none") else ""
    return (
        f"{when(message['sent_at'])}{scenario} {'<-' if incoming else '->'} {peer} "
        f"{message['kind']} [{message['id'][:12]}] ({message['status']}; "
        f"{message['verified']}{state}){_class_text(message)}{reply}: {first}"
    )


def _proven_text(proven: dict[str, Any], claimed: dict[str, Any]) -> str:
    """What the keys prove of its author, then what is only claimed (`show`)."""
    if proven["deniable"]:
        said = "proven: nothing a third party could check (deniable)"
    elif proven["signed_by"]:
        said = f"proven: {proven['signed_by']}'s key signed it"
    else:
        said = "proven: nothing (no valid signature)"
    if proven.get("via"):
        said += f"; came through {proven['via']}"
    if claimed.get("speaks_for"):
        said += f"; claimed, not proven: speaks as {claimed['speaks_for']}"
    return said


def _class_text(message: dict[str, Any]) -> str:
    """` [record; control sees envelope]`: the channel class and what exercise control sees."""
    if "class" not in message:
        return ""
    return f" [{message['class'].replace('_', ' ')}; control sees {message['control_sees']}]"
