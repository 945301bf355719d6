"""The after-action review's page: facts in, one self-contained HTML document out (no I/O).

`report.py` gathers what the relay's store holds and the verified exports; this module merges
them into one timeline (an item two exports hold shows once, with both named as its source),
draws the traffic charts as SVG, and renders everything through `html.escape`: names, titles,
letters and injects are participants' and controllers' text. No script, no external asset: the
page opens from disk anywhere, and a CSP meta tag forbids anything else.
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from html import escape
from typing import Any

from backchannel.bundle import Bundle
from backchannel.content import Letter, LetterAcknowledgement
from backchannel.encoding import Reader
from backchannel.errors import BackchannelError
from backchannel.exercise import Clock, scenario_time_text
from backchannel.mediation import Introduction
from backchannel.proposals import Reveal, StatementKind
from backchannel.records import Export, ProposalRecord, verify_export

HOUR_MS = 3_600_000
MATCH_MS = 120_000
"""An envelope row (no message id) is an exported letter between the same two, this close in
wall time (the report is posted just before the letter, PROTOCOL.md §16.11)."""
MAX_BUCKETS = 168
"""Bars per chart: a longer exercise is drawn with several scenario hours per bar."""
MAX_SERIES = 60
"""Rows per chart (pairs); the rest are summed into one row."""
SEES_MEANS = {
    "content": "its text, who wrote to whom and when",
    "envelope": "who wrote to whom and when, never the text",
    "existence": "only how many, never who or when",
    "nothing": "nothing at all, not even a count",
}
HIDDEN = {
    "content": "nothing hidden from control",
    "envelope": "the text (shown here only where an export holds it)",
    "existence": "who, to whom and when (shown here only where an export holds it)",
    "nothing": "that it happened at all (shown here only where an export holds it)",
}


@dataclass(slots=True)
class Event:
    """One row of the timeline."""

    key: tuple[Any, ...]
    kind: str
    summary: str
    wall: int | None
    scenario: int | None
    who: str = ""
    text: str | None = None
    sources: list[str] = field(default_factory=list)
    pair: tuple[str, str] | None = None
    channel_class: str = ""

    def source(self, name: str) -> None:
        if name not in self.sources:
            self.sources.append(name)


@dataclass(frozen=True, slots=True)
class ClockHistory:
    """The scenario clock as control set it over wall time: scenario time of any moment."""

    changes: tuple[tuple[int, Clock], ...]
    """(wall ms, the clock from then on), in order; the first is the clock as loaded."""

    def scenario_at(self, wall: int | None) -> int | None:
        if wall is None:
            return None
        current = self.changes[0][1]
        for at, clock in self.changes:
            if at > wall:
                break
            current = clock
        return current.now(wall)

    def wall_when(self, scenario: int, now: int) -> int | None:
        """The first wall time the clock stood at or past `scenario` (an inject's delivery)."""
        for index, (start, clock) in enumerate(self.changes):
            end = self.changes[index + 1][0] if index + 1 < len(self.changes) else now
            if index == 0:
                continue  # loaded paused, at the start: nothing is delivered before a change
            if clock.now(start) >= scenario:
                return start
            if not clock.paused and clock.now(end) >= scenario:
                return clock.wall_ms + int((scenario - clock.anchor_ms) / clock.speed)
        return None


def clock_history(
    start_ms: int, speed: float, actions: Sequence[Mapping[str, Any]]
) -> ClockHistory:
    changes: list[tuple[int, Clock]] = [(-(2**62), Clock(start_ms, 0, speed, True))]
    for action in actions:
        if action.get("action") != "clock":
            continue
        try:
            changes.append((int(action["at"]), Clock.from_json(action["detail"])))
        except (KeyError, TypeError, ValueError):
            continue
    return ClockHistory(tuple(changes))


# --- merging ------------------------------------------------------------------------------------


@dataclass(slots=True)
class Model:
    facts: Mapping[str, Any]
    history: ClockHistory
    events: dict[tuple[Any, ...], Event] = field(default_factory=dict)
    proposals: dict[str, dict[str, Any]] = field(default_factory=dict)
    records: dict[str, ProposalRecord] = field(default_factory=dict)
    exported_letters: set[str] = field(default_factory=set)

    def add(self, event: Event, source: str) -> Event:
        found = self.events.get(event.key)
        if found is None:
            self.events[event.key] = found = event
        elif found.text is None and event.text is not None:
            found.text = event.text
        found.source(source)
        return found

    def at(self, wall: int | None) -> int | None:
        return self.history.scenario_at(wall)


def build(facts: Mapping[str, Any], exports: Sequence[tuple[str, Bundle]]) -> Model:
    """The timeline and the proposals from the relay's facts and the verified exports."""
    model = Model(facts, clock_history(facts["start_ms"], facts["speed"], facts["actions"]))
    _relay_events(model)
    for name, bundle in exports:
        for item in bundle.items:
            _exported(model, name, bundle, item)
    _traffic_events(model)
    _proposal_states(model)
    return model


def _relay_events(model: Model) -> None:
    facts = model.facts
    for role in facts["roles"]:
        if role.get("registered_at") is not None:
            wall = int(role["registered_at"])
            model.add(Event(("registered", role["name"]), "registration",
                            f"{role['name']} registered ({role['kind']}: {role['title']})",
                            wall, model.at(wall), who=role["name"]), "relay")  # fmt: skip
    for action in facts["actions"]:
        detail = action.get("detail") or {}
        what = action["action"]
        if what == "clock":
            change = detail.get("change", "")
            value = detail.get("value")
            shown = f"clock {change}"
            if change == "speed" and value is not None:
                shown += f" {value:g}x"
            elif change == "set" and isinstance(value, (int, float)):
                shown += f" to {scenario_time_text(int(value), facts['offset_minutes'])}"
            summary = f"{shown} (by {action['by']})"
        elif what in ("release", "skip", "edit", "add"):
            verb = {"release": "released", "skip": "skipped", "edit": "edited", "add": "added"}
            summary = f"inject {detail.get('number')} {verb[what]} by {action['by']}"
        elif what == "invite":
            summary = f"a new invite for {detail.get('role')} issued by {action['by']}"
        else:
            summary = f"{what} by {action['by']}"
        wall = int(action["at"])
        model.add(Event(("action", action["id"]), "control", summary, wall, model.at(wall),
                        who=str(action["by"])), "relay")  # fmt: skip
    for inject in facts["injects"]:
        if inject["status"] != "released":
            continue
        released: int | None = inject.get("released_at")
        if released is None:
            released = model.history.wall_when(int(inject["at"]), facts["built_at"])
        to = ", ".join(inject["to"])
        model.add(Event(("inject", inject["number"]), "inject",
                        f"inject {inject['number']} delivered to {to}: {inject['title']}",
                        released, int(inject["at"]), who="control", text=inject["text"]),
                  "relay")  # fmt: skip
    for said in facts["communiques"]:
        wall = int(said["at"])
        model.add(Event(("communique", said["author"], wall), "communique",
                        f"communiqué {said['number']} by {said['author']} to every role",
                        wall, model.at(wall), who=said["author"], text=said["text"],
                        channel_class="communique"), "relay")  # fmt: skip


def _traffic_events(model: Model) -> None:
    """Control's own rows, as each class allows; a row whose letter an export holds is that
    letter (by message id, or for an envelope row by sender, recipient and time)."""
    exported = [e for e in model.events.values() if e.kind == "letter"]
    for index, row in enumerate(model.facts["traffic"]["letters"]):
        wall = int(row["at"])
        pair = (row["from"], row["to"])
        mid = row.get("message_id")
        if mid is not None and ("letter", mid) in model.events:
            model.events[("letter", mid)].source("control")
            continue
        if mid is None:
            match = next((e for e in exported if e.pair == pair and "control" not in e.sources
                          and e.wall is not None and abs(e.wall - wall) < MATCH_MS),
                         None)  # fmt: skip
            if match is not None:
                match.source("control")
                continue
        text = row.get("text") if row.get("verified") == "signed" else None
        summary = f"{row['class']} letter {row['from']} to {row['to']}"
        if "verified" in row and row["verified"] != "signed":
            summary += f" ({row['verified']})"
        key = ("letter", mid) if mid is not None else ("row", index)
        model.add(Event(key, "letter", summary, wall, model.at(wall), who=row["from"], text=text,
                        pair=pair, channel_class=row["class"]), "control")  # fmt: skip


def _exported(model: Model, name: str, bundle: Bundle, item: Mapping[str, Any]) -> None:
    import base64

    kind = item["kind"]
    source = f"export:{name}"
    if kind == "proposal":
        record = ProposalRecord.from_json(item["record"])
        digest = record.digest.hex()
        held = model.records.get(digest)
        if held is None or len(record.statements) > len(held.statements):
            model.records[digest] = record
        model.proposals.setdefault(digest, {"sources": []})["sources"].append(name)
        _proposal_events(model, record, source)
        return
    signed = base64.b64decode(item["signed"]) if "signed" in item else b""
    wall = item.get("wall_at")
    if kind == "letter":
        letter = _read(Letter.read, signed)
        mid = letter.message_id.hex()
        model.exported_letters.add(mid)
        model.add(Event(("letter", mid), "letter",
                        f"{item.get('class', 'record')} letter {letter.sender} to "
                        f"{letter.recipient}", letter.sent_at_ms, model.at(letter.sent_at_ms),
                        who=letter.sender, text=letter.text, pair=(letter.sender, letter.recipient),
                        channel_class=str(item.get("class", "record"))), source)  # fmt: skip
    elif kind == "acknowledgement":
        ack = _read(LetterAcknowledgement.read, signed)
        model.add(Event(("ack", hashlib.sha256(signed).hexdigest()), "acknowledgement",
                        f"{ack.acknowledger} acknowledges {ack.author}'s letter "
                        f"{ack.letter_id.hex()[:12]}", ack.at_ms, model.at(ack.at_ms),
                        who=ack.acknowledger), source)  # fmt: skip
    elif kind == "introduction":
        intro = _read(Introduction.read, signed)
        model.add(Event(("intro", hashlib.sha256(signed).hexdigest()), "introduction",
                        f"{intro.introducer.name} introduces {intro.subject} to "
                        f"{intro.recipient.name}", intro.at_ms, model.at(intro.at_ms),
                        who=intro.introducer.name), source)  # fmt: skip
    elif kind == "forward":
        text = None
        if item.get("form") == "letter":
            letter = _read(Letter.read, signed)
            what, text = f"{letter.sender}'s letter to {letter.recipient}", letter.text
            key = hashlib.sha256(signed).hexdigest()
        else:
            record = ProposalRecord.from_json(item.get("record"))
            what = f"{record.sealed.proposal.author.name}'s proposal"
            key = record.digest.hex()
        relay_at = item.get("relay_at")
        model.add(Event(("forward", key, bundle.participant), "forward",
                        f"{what}, forwarded by {item['mediator']} to {bundle.participant} "
                        "with the author's consent", relay_at, model.at(relay_at),
                        who=str(item["mediator"]), text=text), source)  # fmt: skip
    elif kind == "inject":
        number = Reader(signed, "inject")
        number.var8(64, "exercise")
        found = model.events.get(("inject", number.u32()))
        if found is not None:
            found.source(source)
    elif kind == "communique":
        reader = Reader(signed, "communiqué")
        reader.var8(64, "exercise")
        author = reader.var8(64, "author").decode()
        at = reader.i64()
        found = model.events.get(("communique", author, at))
        if found is not None:
            found.source(source)
        else:
            text = reader.var32(8_000, "text").decode()
            model.add(Event(("communique", author, at), "communique",
                            f"communiqué by {author} to every role", at, model.at(at),
                            who=author, text=text, channel_class="communique"), source)  # fmt: skip
    _ = wall


def _proposal_events(model: Model, record: ProposalRecord, source: str) -> None:
    proposal = record.sealed.proposal
    entry = record.receipt.entry
    to = ", ".join(a.name for a in proposal.addressees)
    model.add(Event(("notary", entry.seq), "proposal",
                    f"proposal {proposal.title!r} by {proposal.author.name} to {to} notarised "
                    f"(entry {entry.seq})", entry.at_ms, model.at(entry.at_ms),
                    who=proposal.author.name), source)  # fmt: skip
    for notarised in record.statements:
        statement = notarised.signed.statement
        entry = notarised.receipt.entry
        verb = StatementKind(statement.kind).name.lower()
        model.add(Event(("notary", entry.seq), "proposal",
                        f"{statement.author.name}: {verb} {proposal.title!r} (entry {entry.seq})",
                        entry.at_ms, model.at(entry.at_ms), who=statement.author.name,
                        text=statement.reason or None), source)  # fmt: skip


def _proposal_states(model: Model) -> None:
    if not model.records:
        return
    digests = list(model.records)
    records = tuple(model.records[d] for d in digests)
    notary = model.facts["keys"]["notary_key"]
    try:
        verdicts = verify_export(Export(notary, records), model.facts["built_at"], notary)
    except BackchannelError as exc:
        for digest in digests:
            model.proposals[digest]["state"] = f"not checked: {exc}"
        return
    for digest, verdict in zip(digests, verdicts, strict=True):
        shown = model.proposals[digest]
        if verdict.replayed is None:
            shown["state"] = f"invalid: {verdict.error}"
            continue
        shown["state"] = verdict.replayed.status.name.lower()
        shown["agreement"] = verdict.agreement.agreement.value if verdict.agreement else None


def _read(parse: Any, data: bytes) -> Any:
    reader = Reader(data, "item")
    value = parse(reader)
    reader.finish()
    return value


# --- the charts ---------------------------------------------------------------------------------


def bar_chart(title: str, series: Mapping[str, Counter[int]], bucket_ms: int, first: int,
              buckets: int, offset_minutes: int) -> str:  # fmt: skip
    """Small multiples: one row of bars per series, one bar per bucket of scenario time."""
    width, label_w, row_h, top = 900, 190, 34, 28
    bar_w = max(1.0, (width - label_w - 10) / max(buckets, 1))
    peak = max((max(c.values(), default=0) for c in series.values()), default=0) or 1
    height = top + row_h * max(len(series), 1) + 24
    out = [f'<svg role="img" width="{width}" '
           f'height="{height}" viewBox="0 0 {width} {height}" class="chart">',
           f"<title>{escape(title)}</title>",
           f'<text x="0" y="16" class="ct">{escape(title)} (peak {peak} per bar)</text>',
           ]  # fmt: skip
    for row, (name, counts) in enumerate(series.items()):
        y = top + row * row_h
        out.append(f'<text x="0" y="{y + row_h - 12}" class="cl">{escape(name)} '
                   f"({sum(counts.values())})</text>")  # fmt: skip
        out.append(f'<line x1="{label_w}" y1="{y + row_h - 6}" x2="{width - 10}" '
                   f'y2="{y + row_h - 6}" class="ax"/>')  # fmt: skip
        for bucket, count in sorted(counts.items()):
            h = max(1.0, (row_h - 10) * count / peak)
            x = label_w + bucket * bar_w
            when = scenario_time_text(first + bucket * bucket_ms, offset_minutes)
            out.append(f'<rect x="{x:.1f}" y="{y + row_h - 6 - h:.1f}" '
                       f'width="{max(bar_w - 1, 1):.1f}" '
                       f'height="{h:.1f}" class="bar"><title>{escape(name)}: {count} from '
                       f"{escape(when)}</title></rect>")  # fmt: skip
    if not series:
        out.append(f'<text x="{label_w}" y="{top + 20}" class="cl">nothing to draw</text>')
    first_text = scenario_time_text(first, offset_minutes)
    last_text = scenario_time_text(first + buckets * bucket_ms, offset_minutes)
    out.append(f'<text x="{label_w}" y="{height - 6}" class="cl">{escape(first_text)}</text>')
    out.append(f'<text x="{width - 10}" y="{height - 6}" text-anchor="end" class="cl">'
               f"{escape(last_text)} ({bucket_ms // HOUR_MS} h per bar)</text>")  # fmt: skip
    out.append("</svg>")
    return "".join(out)


def charts(model: Model) -> str:
    letters = [e for e in model.events.values()
               if e.kind in ("letter", "communique") and e.scenario is not None]  # fmt: skip
    offset = model.facts["offset_minutes"]
    if not letters:
        return "<p>No letter or communiqué with a known time: nothing to draw.</p>"
    first = min(e.scenario for e in letters if e.scenario is not None)
    first -= first % HOUR_MS
    last = max(e.scenario for e in letters if e.scenario is not None)
    hours = (last - first) // HOUR_MS + 1
    per_bar = max(1, -(-hours // MAX_BUCKETS))
    bucket_ms = per_bar * HOUR_MS
    buckets = -(-hours // per_bar)
    pairs: dict[str, Counter[int]] = defaultdict(Counter)
    classes: dict[str, Counter[int]] = defaultdict(Counter)
    for event in letters:
        assert event.scenario is not None
        bucket = (event.scenario - first) // bucket_ms
        classes[event.channel_class or "record"][bucket] += 1
        if event.pair is not None:
            pairs[" → ".join(event.pair)][bucket] += 1
    shown = dict(sorted(pairs.items())[:MAX_SERIES])
    rest: Counter[int] = Counter()
    for _name, counts in sorted(pairs.items())[MAX_SERIES:]:
        rest.update(counts)
    if rest:
        shown["(other pairs)"] = rest
    return (bar_chart("Letters per pair, by scenario time", shown, bucket_ms, first, buckets,
                      offset)
            + bar_chart("Traffic per class, by scenario time", dict(sorted(classes.items())),
                        bucket_ms, first, buckets, offset))  # fmt: skip


# --- the page -----------------------------------------------------------------------------------

CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'none'"
"""No script, nothing fetched: the page and its one inline stylesheet are all there is."""
STYLE = """
body{font:15px/1.45 system-ui,sans-serif;margin:0 auto;max-width:1100px;padding:1em;color:#111}
h1{font-size:1.6em;margin:.2em 0}h2{border-bottom:1px solid #999;margin-top:1.6em}
.limits h2{margin-top:.2em}
table{border-collapse:collapse;width:100%;margin:.5em 0}td,th{border:1px solid #ccc;
padding:.25em .4em;vertical-align:top;text-align:left}th{background:#eee}
.limits{border:2px solid #a40;background:#fff6ee;padding:.6em 1em}
.text{white-space:pre-wrap;font-family:Georgia,serif}.muted{color:#555;font-size:.9em}
.chart{display:block;margin:.8em 0}.bar{fill:#36c}.ax{stroke:#999}.ct{font-weight:bold}
.cl,.ct{font-size:12px}code{font-size:.9em}
"""


def _t(value: object) -> str:
    return escape(str(value), quote=True)


def _time(model: Model, scenario: int | None) -> str:
    if scenario is None:
        return "—"
    return _t(scenario_time_text(scenario, model.facts["offset_minutes"]))


def _wall(ms: int | None) -> str:
    if ms is None:
        return "—"
    from datetime import UTC, datetime

    return _t(datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC"))


def _limits(model: Model, exports: Sequence[tuple[str, Bundle]]) -> str:
    facts = model.facts
    sees = facts["control_sees"]
    counts = facts["traffic"]["counts"]
    rows = []
    for cls, value in sees["classes"].items():
        counted = counts.get(cls)
        note = f"; control counted {counted}" if counted is not None else ""
        hidden = HIDDEN.get(value, "")
        if cls == "off_the_record":  # no export ever holds it: nothing here recovers it
            hidden = "what was said and who said it, in no export either" + (
                "; not even a count" if value == "nothing" else "")  # fmt: skip
        rows.append(f"<tr><td>{_t(cls.replace('_', ' '))}</td><td>{_t(value)}</td>"
                    f"<td>{_t(SEES_MEANS.get(value, value))}</td>"
                    f"<td>{_t(hidden)}{_t(note)}</td></tr>")  # fmt: skip
    for pair in sees.get("pairs", []):
        differs = ", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in pair.items()
                            if k != "between")  # fmt: skip
        rows.append(f"<tr><td colspan=4>between {_t(' and '.join(pair['between']))}: "
                    f"{_t(differs)}</td></tr>")  # fmt: skip
    known = [e for e in model.events.values() if e.kind == "letter"]
    unexported = [e for e in known if not any(s.startswith("export:") for s in e.sources)]
    exported_names = {b.participant for _, b in exports}
    missing = [r["name"] for r in facts["roles"]
               if r.get("registered") and r["name"] not in exported_names]  # fmt: skip
    otr = counts.get("off_the_record")
    otr_line = (f"control counted {otr} off-the-record channel(s) opened, naming no one"
                if otr is not None else "control kept no count of them")  # fmt: skip
    unexported_proposals = facts["notary"]["unexported_proposals"]
    return f"""<section class="limits" id="limits"><h2>What this report cannot contain</h2>
<ul>
<li><strong>Nothing said off the record, nor who spoke off the record.</strong> Those channels are
deniable by design: no export holds them and the relay keeps no trace of their content or their
speakers ({_t(otr_line)}).</li>
<li><strong>What each channel class hid from control</strong>, unless a participant's export
holds it:
<table><tr><th>class</th><th>control sees</th><th>that is</th><th>hidden from control</th></tr>
{"".join(rows)}</table></li>
<li><strong>Letters nobody exported:</strong> {len(unexported)} letter(s) control knows of are in
no export (shown below only as control saw them); letters of a class control only counts or does
not see are here only if an export holds them. Proposals notarised by the exercise's roles that
no export holds: {_t(unexported_proposals)} (their entries are links in the notary log).</li>
<li><strong>Participants without an export:</strong> {_t(", ".join(missing) or "none")}.</li>
</ul>
<p class="muted">Exports included: {
        _t(", ".join(f"{n} ({b.participant})" for n, b in exports) or "none")
    }. Each was verified (every signature, notary
receipt and hash chain) before this page was written; check the whole bundle with
<code>backchannel verify-report DIR</code>.</p></section>"""


def _timeline(model: Model) -> str:
    def order(e: Event) -> tuple[int, int, str]:
        big = 2**62
        return (e.scenario if e.scenario is not None else big,
                e.wall if e.wall is not None else big, e.summary)  # fmt: skip

    rows = []
    for e in sorted(model.events.values(), key=order):
        text = f'<div class="text">{_t(e.text)}</div>' if e.text else ""
        rows.append(f'<tr class="ev ev-{_t(e.kind)}"><td>{_time(model, e.scenario)}</td>'
                    f"<td>{_wall(e.wall)}</td><td>{_t(e.kind)}</td>"
                    f"<td>{_t(e.summary)}{text}</td>"
                    f"<td class=muted>{_t(', '.join(e.sources))}</td></tr>")  # fmt: skip
    return ('<table id="timeline"><tr><th>scenario time</th><th>wall time</th><th>kind</th>'
            "<th>what</th><th>source</th></tr>" + "".join(rows) + "</table>")  # fmt: skip


def _proposals(model: Model) -> str:
    if not model.records:
        return "<p>No export holds a proposal.</p>"
    rows = []
    exchanges: dict[str, list[str]] = defaultdict(list)
    for digest, record in model.records.items():
        proposal = record.sealed.proposal
        shown = model.proposals[digest]
        steps = [f"notarised {_wall(record.receipt.entry.at_ms)} (entry "
                 f"{record.receipt.entry.seq})"]  # fmt: skip
        for n in record.statements:
            st = n.signed.statement
            steps.append(f"{_t(StatementKind(st.kind).name.lower())} by {_t(st.author.name)} "
                         f"{_wall(n.receipt.entry.at_ms)} (entry "
                         f"{n.receipt.entry.seq})")  # fmt: skip
        terms = "".join(f"<li>{_t(t)}</li>" for t in proposal.terms)
        agreement = shown.get("agreement")
        final = _t(shown.get("state", "?")) + (f" ({_t(agreement)})" if agreement else "")
        rows.append(f'<tr class="proposal"><td>{_t(proposal.title)}<br><span class=muted>'
                    f"{_t(digest[:16])}</span></td><td>{_t(proposal.author.name)} to "
                    f"{_t(', '.join(a.name for a in proposal.addressees))}</td><td><ul>{terms}"
                    f"</ul></td><td>{'<br>'.join(steps)}</td>"
                    f'<td class="final">{final}</td></tr>')  # fmt: skip
        if proposal.reveal == Reveal.SIMULTANEOUS and proposal.exchange_id is not None:
            exchanges[proposal.exchange_id.hex()].append(
                f"{proposal.author.name}: {proposal.title} ({shown.get('state', '?')})"
            )
    table = ("<table><tr><th>proposal</th><th>from, to</th><th>terms</th><th>lifecycle "
             "(notarised)</th><th>final state</th></tr>" + "".join(rows) + "</table>")  # fmt: skip
    if exchanges:
        items = "".join(f"<li>exchange {_t(k[:16])}: {_t('; '.join(v))}</li>"
                        for k, v in sorted(exchanges.items()))  # fmt: skip
        table += f'<h3 id="exchanges">Simultaneous exchanges</h3><ul>{items}</ul>'
    else:
        table += '<h3 id="exchanges">Simultaneous exchanges</h3><p>None in the exports.</p>'
    return table


def _injects(model: Model) -> str:
    rows = []
    for i in model.facts["injects"]:
        by = i.get("by") or ("the clock" if i["status"] == "released" else "")
        extra = []
        if i.get("edited_by"):
            extra.append(f"edited by {i['edited_by']}")
        if i.get("added"):
            extra.append("added during the exercise")
        rows.append(f'<tr class="inject"><td>{_t(i["number"])}</td><td>{_time(model, i["at"])}'
                    f"</td><td>{_t(', '.join(i['to']))}</td><td>{_t(i['title'])}"
                    f'<div class="text">{_t(i["text"])}</div></td><td>{_t(i["status"])}</td>'
                    f"<td>{_t(by)}{'<br>' + _t(', '.join(extra)) if extra else ''}</td>"
                    f"<td>{_wall(i.get('released_at'))}</td></tr>")  # fmt: skip
    return ("<table><tr><th>#</th><th>scenario time</th><th>to</th><th>title and text</th>"
            "<th>status</th><th>by</th><th>released (wall)</th></tr>"
            + "".join(rows) + "</table>")  # fmt: skip


def _roles(model: Model) -> str:
    rows = []
    for r in model.facts["roles"]:
        at = r.get("registered_at")
        rows.append(f"<tr><td>{_t(r['name'])}</td><td>{_t(r['kind'])}</td><td>{_t(r['title'])}"
                    f"</td><td>{_wall(at)}</td><td>{_time(model, model.at(at))}</td>"
                    "</tr>")  # fmt: skip
    return ("<table><tr><th>role</th><th>kind</th><th>title</th><th>registered (wall)</th>"
            "<th>(scenario)</th></tr>" + "".join(rows) + "</table>")  # fmt: skip


def render(model: Model, exports: Sequence[tuple[str, Bundle]]) -> str:
    """The whole page. Every interpolated value goes through `_t` (html.escape)."""
    facts = model.facts
    keys = facts["keys"]
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{CSP}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>After-action review: {_t(facts["title"])}</title><style>{STYLE}</style></head><body>
<h1>After-action review: {_t(facts["title"])}</h1>
<p class="muted">Exercise <code>{_t(facts["exercise"])}</code>; built {_wall(facts["built_at"])}
with the scenario clock at {_time(model, facts["scenario_now"])}. Notary key
<code>{_t(_b64(keys["notary_key"]))}</code>, control key
<code>{_t(_b64(keys["control_key"]))}</code>.</p>
{_limits(model, exports)}
<h2 id="timeline-h">Timeline</h2>
<p class="muted">In scenario time, with wall time beside it. An item two exports hold is shown
once, with both as its source; <em>control</em> is what control itself recorded.</p>
{_timeline(model)}
<h2 id="traffic">Traffic over time</h2>{charts(model)}
<h2 id="proposals">Proposals</h2>{_proposals(model)}
<h2 id="injects">Injects (the MSEL)</h2>{_injects(model)}
<h2 id="roles">Who registered when</h2>{_roles(model)}
<p class="muted">Evidence beside this page: <code>evidence/notary-log.json</code>,
<code>evidence/exports/</code>, <code>evidence/manifest.json</code>.</p>
</body></html>
"""


def _b64(data: bytes | None) -> str:
    import base64

    return base64.b64encode(data).decode() if data else "none"


def exported_commitments(exports: Iterable[tuple[str, Bundle]]) -> set[bytes]:
    """The notary subjects (commitments) of every proposal an export holds, also forwarded."""
    found: set[bytes] = set()
    for _, bundle in exports:
        for item in bundle.items:
            raw = item.get("record")
            if item.get("kind") in ("proposal", "forward") and isinstance(raw, dict):
                found.add(ProposalRecord.from_json(raw).sealed.commitment)
    return found
