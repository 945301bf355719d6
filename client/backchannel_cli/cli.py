"""`backchannel`: the participant's command line.

Commands are grouped by what the user is doing (identity, letters); each one unlocks the profile,
calls the service, and renders. Heavy modules are imported inside commands so `--help` stays fast.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from .agent_cli import agent
from .commandline import (
    DURATION_UNITS,
    Context,
    ask_passphrase,
    duration_ms,
    guard,
    internal,
    json_option,
    pass_ctx,
)
from .errors import ABORTED, CliError, error_code
from .render import hint, say
from .report_check import verify_report

if TYPE_CHECKING:
    from .service import Participant
    from .shown import Shown

T = TypeVar("T")


def _run(ctx: Context, work: Callable[[Participant], Coroutine[Any, Any, T]]) -> T:
    """Unlock the profile, run `work` against it, and close everything."""
    import asyncio

    from .profile import OPEN_KEYSTORES, keystore_needs_passphrase, read_info, unlock
    from .render import note
    from .service import Participant

    def action() -> T:
        directory = ctx.directory
        read_info(directory)  # a missing profile is named as such before any passphrase prompt
        unlocked = OPEN_KEYSTORES.get(directory.resolve())
        if unlocked is None:
            passphrase = ask_passphrase(False) if keystore_needs_passphrase(directory) else None
            unlocked = unlock(directory, passphrase)
        participant = Participant(unlocked)

        async def main() -> T:
            try:
                result = await work(participant)
            finally:
                await participant.close()
            for text in participant.take_notes():  # what catching up met
                note(text)
            return result

        return asyncio.run(main())

    return guard(ctx, action)


JSON_META = "backchannel.json"
"""Set in click's context when the command line asks for `--json`: errors are JSON then too."""


def _asks_json(args: list[str]) -> bool:
    return "--json" in (args[: args.index("--")] if "--" in args else args)


class JsonError(click.ClickException):
    """Any error of a `--json` command: `{"error": CODE, "message": ...}` on standard output, with
    the exit code the error has without `--json` (`JsonUsageError`: a usage mistake's)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code

    def show(self, file: Any = None) -> None:
        from .render import json_error

        click.echo(json_error(self.code, self.message))


class JsonUsageError(JsonError):
    exit_code = click.UsageError.exit_code


def _json_error(code: str, message: str, exit_code: int) -> JsonError:
    return (JsonUsageError if exit_code == JsonUsageError.exit_code else JsonError)(code, message)


class OneLineGroup(click.Group):
    """Every error ends a command the same way, whichever command (and whoever wrote it): one
    line, `Error: ...` (usage mistakes too; `--help` still shows the usage), command suggestions
    naming the profile in use; with `--json` on the command line, a JSON object instead. A bug
    is one line too (`internal error: ...`), with a traceback only under `--debug`."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if _asks_json(args):
            ctx.meta[JSON_META] = True
        try:
            return super().parse_args(ctx, args)
        except click.ClickException as exc:
            raise _one_line(ctx, exc) from None

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (JsonError, click.exceptions.Exit):
            raise
        except click.ClickException as exc:
            raise _one_line(ctx, exc) from None
        except (click.Abort, KeyboardInterrupt, EOFError):
            if ctx.meta.get(JSON_META):
                raise JsonError(ABORTED, "Aborted!") from None
            raise
        except Exception as exc:  # a bug outside any command's guard
            context = ctx.find_object(Context)
            bug = internal(exc, context is not None and context.debug)
            raise _one_line(ctx, bug) from None


def _one_line(ctx: click.Context, exc: click.ClickException) -> click.ClickException:
    if isinstance(exc, (JsonError, click.exceptions.NoArgsIsHelpError)):
        return exc
    if isinstance(exc, click.UsageError):
        exc.ctx = None
    if isinstance(exc, CliError):
        exc.shown = hint(exc.message)
    if ctx.meta.get(JSON_META):
        return _json_error(error_code(exc), exc.format_message(), exc.exit_code)
    return exc



@click.group(cls=OneLineGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--home",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="BACKCHANNEL_HOME",
    help="Where profiles live (default: per-user data directory).",
)
@click.option(
    "--profile",
    default="default",
    show_default=True,
    envvar="BACKCHANNEL_PROFILE",
    help="Which participant on this machine.",
)
@click.option("--debug", is_flag=True, help="Show tracebacks for internal errors.")
@click.pass_context
def main(click_ctx: click.Context, home: Path | None, profile: str, debug: bool) -> None:
    """Backchannel: secure backchannel messaging for crisis-diplomacy exercises."""
    from .profile import default_home
    from .render import PROFILE_META

    click_ctx.meta[PROFILE_META] = profile
    click_ctx.obj = Context(home or default_home(), profile, debug)



# --- identity --------------------------------------------------------------------------------


@main.command()
@click.argument("name")
@click.option("--relay", required=True, metavar="URL", help="The relay, e.g. http://127.0.0.1:8470")
@click.option("--no-passphrase", is_flag=True, help="Store keys unencrypted (explicitly).")
@json_option
@pass_ctx
def init(ctx: Context, name: str, relay: str, no_passphrase: bool, as_json: bool) -> None:
    """Create identity keys and prekeys for NAME in this profile."""
    from .profile import ProfileInfo, create
    from .render import command, emit_json
    from .service import Participant

    if not 0 < len(name.encode("utf-8")) <= 64:
        raise click.BadParameter("a name is 1 to 64 bytes of UTF-8", param_hint="NAME")
    if not relay.startswith(("http://", "https://")):
        raise click.BadParameter(
            "the relay URL starts with http:// or https://", param_hint="--relay"
        )
    passphrase = None if no_passphrase else ask_passphrase(True)

    def action() -> str:
        unlocked = create(ctx.directory, ProfileInfo(name, relay.rstrip("/")), passphrase)
        participant = Participant(unlocked)
        try:
            participant.create_prekeys()
            return participant.fingerprint()
        finally:
            participant.store.close()

    fingerprint = guard(ctx, action)
    if as_json:
        emit_json(
            {
                "name": name,
                "relay": relay,
                "profile": ctx.profile,
                "fingerprint": fingerprint,
                "encrypted": passphrase is not None,
            }
        )
    else:
        say(f"Created {name} in profile {ctx.profile!r} ({ctx.directory}).")
        say(f"Fingerprint: {fingerprint}")
        say(f"Next: {command('register INVITE')}")


@main.command()
@click.argument("invite")
@json_option
@pass_ctx
def register(ctx: Context, invite: str, as_json: bool) -> None:
    """Register with the relay using the INVITE from exercise control."""
    from .errors import RelayRefusedError
    from .render import command, emit_json

    async def work(participant: Participant) -> dict[str, Any]:
        try:
            return await participant.register(invite)
        except RelayRefusedError as refusal:
            await _registered_already(participant)
            raise refusal from None

    result = _run(ctx, work)
    if as_json:
        emit_json(result)
    else:
        say(f"Registered {result['name']} as {result['role']}.")
        say(f"Next: {command('directory')}")


@main.command()
@json_option
@pass_ctx
def logout(ctx: Context, as_json: bool) -> None:
    """End this profile's session at the relay: its token is revoked there and deleted here.

    The next command logs in afresh (with the identity key, as always)."""
    from .render import emit_json

    async def work(participant: Participant) -> dict[str, Any]:
        return {"revoked": await participant.logout()}

    result = _run(ctx, work)
    if as_json:
        emit_json(result)
    elif result["revoked"]:
        say("Logged out: the session token is revoked at the relay and deleted here.")
    else:
        say("No session was open; nothing to revoke.")


async def _registered_already(participant: Participant) -> None:
    """After a refused registration: say so if the name is registered already, with this
    profile's key or (a profile created again) another one."""
    from .hints import name_taken
    from .relay import RelayRequestError, RelayUnreachable

    name, relay = participant.name, participant.relay.base_url
    try:
        await participant.relay.login(participant.me.identity, name)  # a fresh proof, no token
    except RelayRequestError as exc:
        if exc.code == "bad_proof":
            raise name_taken(name, relay) from None
        return
    except RelayUnreachable:
        return
    raise CliError(
        f"this profile is registered already: {name} at {relay}; nothing to do",
        "already_registered",
    )


@main.command()
@json_option
@pass_ctx
def directory(ctx: Context, as_json: bool) -> None:
    """Participants, roles, fingerprints, and whether you verified them."""
    from .render import emit_json

    entries = _run(ctx, lambda p: p.directory())
    if as_json:
        emit_json(
            [
                {k: e[k] for k in ("name", "role", "fingerprint", "verified", "key_changed", "me")}
                for e in entries
            ]
        )
        return
    for e in entries:
        mark = (
            "me"
            if e["me"]
            else (
                "KEY CHANGED"
                if e["key_changed"]
                else ("verified" if e["verified"] else "not verified")
            )
        )
        say(f"{e['name']:<24} {e['role']:<9} {e['fingerprint']}  [{mark}]")


@main.command()
@click.argument("name")
@click.option("--yes", is_flag=True, help="Mark verified without asking (you compared already).")
@json_option
@pass_ctx
def verify(ctx: Context, name: str, yes: bool, as_json: bool) -> None:
    """Show the safety number with NAME; mark NAME verified when it matches theirs."""
    from backchannel.identity import format_safety_number

    from .render import emit_json

    async def work(participant: Participant) -> None:
        # One unlock for showing and marking (one passphrase prompt), and only the key whose
        # number was shown can be marked verified.
        number, contact = await participant.safety_number(name)
        compared = contact.changed_identity or contact.identity
        changed = contact.changed_identity is not None
        if as_json and not yes:
            emit_json(
                {
                    "name": name,
                    "safety_number": number,
                    "key_changed": changed,
                    "verified": contact.verified and not changed,
                }
            )
            return
        if not as_json:
            if changed:
                say(f"WARNING: {name}'s identity key has CHANGED since you first saw it.")
            say(f"Safety number with {name}:\n  {format_safety_number(number)}")
            say("Compare it with theirs, aloud or in person.")
        try:
            matches = yes or click.confirm("Does it match?", default=False)
        except click.Abort:  # Ctrl-C at the question, or no answer to read (no terminal)
            if sys.stdin.isatty():
                raise
            raise CliError(
                f"there is no terminal to confirm on: run `backchannel verify {name} --yes` "
                "once you have compared the numbers",
                "no_terminal",
            ) from None
        if matches:
            participant.mark_verified(name, compared)
            if as_json:
                emit_json({"name": name, "safety_number": number, "verified": True})
            else:
                say(f"{name} is now verified.")
        elif not as_json:
            say(f"{name} is NOT verified.")

    _run(ctx, work)


# --- letters ---------------------------------------------------------------------------------


@main.command()
@click.argument("name", required=False)
@click.argument("text", required=False)
@click.option(
    "--to", "to", metavar="NAME", help="The recipient, instead of NAME ('all': every role)."
)
@click.option(
    "--file", "file", type=click.File("r", encoding="utf-8"), help="Read TEXT from a file."
)
@click.option("--reply-to", metavar="ID", help="The message this letter answers.")
@click.option(
    "--may-forward",
    metavar="TO",
    help="NAME is a mediator, and may forward this letter verbatim to TO ('anyone': their choice).",
)
@click.option("--yes", is_flag=True, help="With NAME 'all': send without asking.")
@json_option
@pass_ctx
def send(
    ctx: Context,
    name: str | None,
    text: str | None,
    to: str | None,
    file: Any,
    reply_to: str | None,
    may_forward: str | None,
    yes: bool,
    as_json: bool,
) -> None:
    """Send a signed letter to NAME, or --to NAME (TEXT, --file, or standard input).

    NAME 'all' sends it to every role of your exercise you may write to, one letter each,
    after asking (or --yes). A letter holds at most 65536 bytes (64 KiB) of UTF-8 text."""
    from .render import emit_json

    if to is not None:  # `send --to NAME [TEXT]`: the one positional is the text
        if text is not None:
            raise click.UsageError("name the recipient once: NAME or --to NAME")
        name, text = to, name
    if not name:
        raise click.UsageError(
            "a letter needs a recipient: send NAME TEXT, or send --to all TEXT for every "
            "role you may write to (nothing is ever sent to everyone by default)"
        )
    if text is not None and file is not None:
        raise click.UsageError("give TEXT or --file, not both")
    source = file or sys.stdin
    try:
        body: str = text if text is not None else source.read()
        body.encode("utf-8")
    except UnicodeError:
        raise CliError("the letter is not valid UTF-8 text") from None
    if not body.strip():
        raise CliError("the letter is empty")
    if may_forward is not None and not may_forward.strip():
        raise click.BadParameter(
            "name whom the letter may go to, or 'anyone'", param_hint="--may-forward"
        )

    if name == ALL_ROLES:
        if reply_to is not None or may_forward is not None:
            raise click.UsageError("a letter to all takes neither --reply-to nor --may-forward")

        async def send_all(participant: Participant) -> list[Any]:
            recipients = await _everyone(participant, "send all")
            _confirm_broadcast(ctx, f"Send this letter to {', '.join(recipients)}?", yes,
                               "send all ... --yes")  # fmt: skip
            return [await participant.send_letter(to, body, None) for to in recipients]

        letters = _run(ctx, send_all)
        if as_json:
            emit_json([shown.as_json() for shown in letters])
        else:
            for shown in letters:
                say(f"Sent letter {shown.id} to {shown.peer} ({shown.status}).")
        return

    async def send_it(participant: Participant) -> Any:
        answers = participant.reply_target(reply_to) if reply_to is not None else None
        shown = await participant.send_letter(name, body, answers)
        if may_forward is not None:
            await participant.mediation.consent(shown.id, _consent_to(may_forward))
        return shown

    shown = _run(ctx, send_it)
    if as_json:
        emit_json(shown.as_json())
    else:
        say(f"Sent letter {shown.id} to {name} ({shown.status}).")
        if may_forward is not None:
            say(f"{name} may forward it verbatim to {may_forward}.")


def _text(text: str | None, what: str) -> str:
    """TEXT, or standard input without it: valid UTF-8 and not blank."""
    try:
        body = text if text is not None else sys.stdin.read()
        body.encode("utf-8")
    except UnicodeError:
        raise CliError(f"the {what} is not valid UTF-8 text") from None
    if not body.strip():
        raise CliError(f"the {what} is empty")
    return body


@main.command()
@click.argument("text", required=False)
@click.option("--yes", is_flag=True, help="Publish without asking.")
@json_option
@pass_ctx
def communique(ctx: Context, text: str | None, yes: bool, as_json: bool) -> None:
    """Publish a signed communiqué (TEXT or standard input) to every role of your exercise.

    It is public: every role and exercise control read it, and your signature proves you
    wrote it. At most 8000 bytes; it asks first (or --yes)."""
    from .render import emit_json

    body = _text(text, "communiqué")

    async def publish(participant: Participant) -> dict[str, Any]:
        await _everyone(participant, "a communiqué")
        _confirm_broadcast(ctx, "Publish this communiqué to every role of the exercise?", yes,
                           "communique ... --yes")  # fmt: skip
        return await participant.exercise.communique(body)

    published = _run(ctx, publish)
    if as_json:
        emit_json(published)
    else:
        say(f"Published communiqué {published['number']} to every role of "
            f"{published['exercise']} (communique; control sees content).")  # fmt: skip


ALL_ROLES = "all"
"""`send all`: the one recipient name that broadcasts (a scenario role may not be named so)."""


async def _everyone(participant: Participant, what: str) -> list[str]:
    """Every role the exercise lets us write to (directly or through a mediator)."""
    view = await participant.exercise.refresh()
    if view is None:
        raise CliError(f"{what} writes to the roles of an exercise, and this profile has none; "
                       "name the recipient", "no_exercise")  # fmt: skip
    recipients = sorted(view["channels"])
    if not recipients:
        raise CliError("the exercise gives you no one to write to", "policy_forbids")
    return recipients


def _at_terminal() -> bool:
    return sys.stdin.isatty()


def _confirm_broadcast(ctx: Context, question: str, yes: bool, command: str) -> None:
    """A broadcast goes out only when asked for twice: on a terminal, or with --yes."""
    if yes:
        return
    if not _at_terminal():
        raise CliError(
            f"a broadcast needs confirming and there is no terminal to confirm on: run "
            f"`backchannel --profile {ctx.profile} {command}`", "no_terminal",
        )  # fmt: skip
    if not click.confirm(question, default=False):
        raise CliError("nothing was sent", "cancelled")


def _consent_to(to: str) -> str:
    from backchannel.mediation import ANYONE

    return ANYONE if to.strip().lower() == "anyone" else to.strip()


keep_option = click.option(
    "--keep",
    is_flag=True,
    help="Keep a local copy of off-the-record messages (marked unverifiable); default: none.",
)


@main.command()
@click.option("--watch", is_flag=True, help="Stay connected and show letters as they arrive.")
@click.option("--no-read-receipts", is_flag=True, help="Do not tell senders you read them.")
@keep_option
@click.option(
    "--hold",
    is_flag=True,
    help="Mediators: hold simultaneous exchanges for `backchannel exchange release`.",
)
@json_option
@pass_ctx
def inbox(
    ctx: Context, watch: bool, no_read_receipts: bool, keep: bool, hold: bool, as_json: bool
) -> None:
    """Fetch, decrypt, store and acknowledge new messages, then show them.

    Off-the-record messages are shown and forgotten (nothing of them is stored unless --keep).
    """
    from .render import emit_json, message_lines

    watching = False

    def show(batch: list[Any]) -> None:
        if as_json and not watch:
            emit_json([m.as_json() for m in batch])
            return
        for message in batch:
            if as_json:
                emit_json(message.as_json())
            else:
                say(message_lines(message.as_json()))

    def notice(line: str) -> None:
        if line.startswith("Note: cannot reach the relay"):
            return  # an outage is told once, by the connection that waits for the relay
        say(hint(line), err=True)

    async def work(participant: Participant) -> None:
        nonlocal watching
        participant.hold_exchanges = hold
        participant.read_receipts = not no_read_receipts
        synced = await participant.sync()
        shown: list[Shown] | None = None

        def show_all(batch: list[Shown]) -> None:  # once: the mailbox's, then the drops'
            nonlocal shown
            shown = batch
            show(batch)

        # A message counts as shown only once printed (committed after `show_all` returns): a
        # crash while the drops are read leaves the stored letters to the next run.
        try:
            await participant.offrecord.receive_all(show_all, keep, unshown=True)
        finally:
            if shown is None:  # the drops could not be read: show what the mailbox held
                shown = participant.show_unshown(show)
        await participant.send_receipts()  # the read receipts showing them owed
        if not watch:
            if synced.held:
                raise CliError(_held(synced.held))
            if not shown and not as_json:
                say("No new messages.")
            return
        if synced.held:
            notice(f"Warning: {_held(synced.held)}")
        watching = True
        await participant.watch(show, notice=notice, keep=keep)

    try:
        _run(ctx, work)
    except click.Abort:
        if not watching:
            raise
        say("Stopped watching.", err=True)  # Ctrl-C is how a watch ends: not a failure


def _held(held: dict[str, int]) -> str:
    return "; ".join(
        f"{name}'s identity key has changed: {count} message{'s' if count > 1 else ''} from "
        f"them wait on the relay until you compare safety numbers and run "
        f"`backchannel verify {name}`"
        for name, count in sorted(held.items())
    )


@main.command()
@click.argument("message_id", metavar="ID")
@click.option("--no-read-receipts", is_flag=True, help="Do not tell the sender you read it.")
@json_option
@pass_ctx
def show(ctx: Context, message_id: str, no_read_receipts: bool, as_json: bool) -> None:
    """One message with its status, signature verification and the thread it belongs to.

    Receipts waiting on the relay are fetched first, so a letter's status is current (when the
    relay cannot be reached, the status last known is shown, with a note).
    """
    from .render import emit_json, history_line, message_lines

    async def work(
        participant: Participant,
    ) -> tuple[Shown | dict[str, Any], list[Shown], str | None]:
        note = None
        try:
            await participant.sync()
        except CliError as exc:
            note = exc.message
        found = participant.find(message_id, "message", "proposal")
        if found.kind == "proposal":
            return await _opened(participant, found.id, no_read_receipts), [], note
        shown = participant.show(found.id)
        unread = shown.direction == "in" and shown.kind == "letter" and shown.status == "delivered"
        if unread and not no_read_receipts:
            try:
                await participant.send_read_receipts([shown])
                shown = participant.show(shown.id)
            except CliError as exc:
                note = exc.message
        return shown, participant.thread(shown.id), note

    shown, thread, note = _run(ctx, work)
    if note is not None:
        say(hint(f"Note: the status shown is the last one known here; {note}"), err=True)
    if isinstance(shown, dict):
        _show_proposal(shown, as_json)
    elif as_json:
        emit_json({**shown.as_json(), "thread": [m.as_json() for m in thread]})
    else:
        say(message_lines(shown.as_json(), full=True))
        if len(thread) > 1:
            say("Thread:")
            for message in thread:
                mark = "*" if message.id == shown.id else " "
                say(f" {mark} {history_line(message.as_json())}")


# --- proposals ---------------------------------------------------------------------------------

def _time_ms(text: str, param: str) -> int:
    """An ISO 8601 time (local time unless it names a zone), or a duration from now."""
    import time
    from datetime import datetime

    if text[:1].isdigit() and text[-1:].lower() in DURATION_UNITS and "-" not in text:
        return int(time.time() * 1000) + duration_ms(text, param)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise CliError(
            f"{param}: {text!r} is neither a time like 2026-10-27T16:00 nor a duration like 2h"
        ) from None
    at = int(moment.timestamp() * 1000)
    if at <= time.time() * 1000:
        raise CliError(f"{param}: {text} is in the past")
    return at


def _terms(terms: tuple[str, ...], file: Any) -> list[str]:
    collected = [t.strip() for t in terms]
    if file is not None:
        try:
            collected += [line.strip() for line in file.read().splitlines() if line.strip()]
        except UnicodeError:
            raise CliError("the terms file is not valid UTF-8 text") from None
    if not collected or not all(collected):
        raise CliError("a proposal needs at least one non-empty --term (or --file)")
    return collected


def _show_proposal(view: dict[str, Any], as_json: bool, verb: str = "") -> None:
    from .render import emit_json, proposal_lines

    if as_json:
        emit_json(view)
    elif verb:
        say(f"{verb} proposal {view['id'][:12]} ({view['status']}).")
    else:
        say(proposal_lines(view, full=True))


async def _opened(participant: Participant, ident: str, no_read_receipts: bool) -> dict[str, Any]:
    """A proposal by id; the first time one made to us is shown, we state that it was opened
    (the proposal's read receipt, signed and notarised), unless read receipts are off."""
    negotiation = participant.negotiation
    view = negotiation.view(ident)
    if view["direction"] == "in" and not no_read_receipts:
        await negotiation.opened([view["message"]])
        view = negotiation.view(view["id"])
    return view


proposal_options = [
    click.option("--title", required=True, help="What the offer is, in a line."),
    click.option("--term", "terms", multiple=True, metavar="TEXT", help="One term (repeat)."),
    click.option(
        "--file",
        "file",
        type=click.File("r", encoding="utf-8"),
        help="More terms, one per line.",
    ),
    click.option("--expires", metavar="DURATION", help="Unanswerable after this long (2h, 3d)."),
]


def _with_options(options: list[Any]) -> Callable[[Any], Any]:
    def apply(function: Any) -> Any:
        for option in reversed(options):
            function = option(function)
        return function

    return apply


@main.command()
@click.argument("name")
@_with_options(proposal_options)
@click.option("--if", "conditions", multiple=True, metavar="ID", help="Valid only with ID.")
@click.option(
    "--allow-understood",
    is_flag=True,
    help="Let a clause only understood off the record meet the --if conditions (unprovable).",
)
@click.option("--reveal-at", metavar="TIME", help="Sealed until TIME (ISO time or 2h).")
@click.option(
    "--via",
    metavar="MEDIATOR",
    help="With --simultaneous: the mediator who holds it (else the exercise's, if any).",
)
@click.option(
    "--simultaneous",
    is_flag=True,
    help="One side of a simultaneous exchange: NAME sees it only together with theirs.",
)
@json_option
@pass_ctx
def propose(
    ctx: Context,
    name: str,
    title: str,
    terms: tuple[str, ...],
    file: Any,
    expires: str | None,
    conditions: tuple[str, ...],
    allow_understood: bool,
    reveal_at: str | None,
    via: str | None,
    simultaneous: bool,
    as_json: bool,
) -> None:
    """Make a signed, notarised proposal to NAME.

    With --via MEDIATOR --simultaneous it is sealed to the mediator, who releases it to NAME
    and NAME's offer to you at once, when both are in. Where the exercise routes you to NAME
    through a mediator, the proposal names that mediator and travels through it unread."""
    collected = _terms(terms, file)
    expires_ms = _time_ms(expires, "--expires") if expires else 0
    reveal_ms = _time_ms(reveal_at, "--reveal-at") if reveal_at else 0
    if expires_ms and reveal_ms and reveal_ms >= expires_ms:
        raise CliError("--reveal-at: the reveal time is after the expiry")

    async def work(participant: Participant) -> dict[str, Any]:
        return await participant.negotiation.propose(
            name, title, collected, conditions, expires_ms, reveal_ms,
            via=via, simultaneous=simultaneous, allow_understood=allow_understood,
        )  # fmt: skip

    if allow_understood and not conditions:
        raise CliError("--allow-understood goes with --if ID")
    _show_proposal(_run(ctx, work), as_json, verb="Sent")


@main.command()
@json_option
@pass_ctx
def proposals(ctx: Context, as_json: bool) -> None:
    """Every proposal made or received, with its status."""
    from .render import emit_json, proposal_lines

    async def work(participant: Participant) -> list[dict[str, Any]]:
        try:
            await participant.sync()
        except CliError as exc:
            say(hint(f"Note: the status shown is the last one known here; {exc.message}"), err=True)
        return participant.negotiation.views()

    views = _run(ctx, work)
    if as_json:
        emit_json(views)
    elif not views:
        say("No proposals.")
    for view in [] if as_json else views:
        say(proposal_lines(view))


def _statement_command(name: str, kind_name: str, help_text: str, reason: bool = False) -> None:
    from backchannel.proposals import StatementKind

    kind = StatementKind[kind_name]

    @click.argument("proposal_id", metavar="ID")
    @json_option
    @pass_ctx
    def command(ctx: Context, /, proposal_id: str, as_json: bool, **options: Any) -> None:
        async def work(participant: Participant) -> dict[str, Any] | Shown:
            await participant.sync()
            letters_too = kind_name == "ACKNOWLEDGED"  # `ack` of a letter: signed, its digest
            found = participant.find(proposal_id, *(("message",) if letters_too else ()),
                                     "proposal")  # fmt: skip
            if found.kind == "message":
                return await participant.acknowledge_letter(found.id)
            return await participant.negotiation.state(
                found.id, kind, reason=options.get("reason") or "", sync=False
            )

        done = _run(ctx, work)
        if isinstance(done, dict):
            _show_proposal(done, as_json, verb=kind.name.capitalize())
        elif as_json:
            from .render import emit_json

            emit_json(done.as_json())
        else:
            say(f"Acknowledged letter {done.id} from {done.peer} (signed).")

    command.__doc__ = help_text
    if reason:
        command = click.option("--reason", metavar="TEXT", help="Why, for the record.")(command)
    main.command(name=name)(command)


_statement_command("ack", "ACKNOWLEDGED", "Formally acknowledge a proposal or letter ID (signed).")
_statement_command("reject", "REJECTED", "Reject proposal ID.", reason=True)
_statement_command("withdraw", "WITHDRAWN", "Withdraw your proposal ID (before acceptance).", True)


@main.command()
@click.argument("proposal_id", metavar="ID")
@click.option("--with", "together", multiple=True, metavar="ID", help="Accept ID together.")
@json_option
@pass_ctx
def accept(ctx: Context, proposal_id: str, together: tuple[str, ...], as_json: bool) -> None:
    """Accept proposal ID (and the proposals it depends on, with --with).

    ID's acceptance names the package and is notarised first, then each condition's: the
    notary's order decides, so a condition withdrawn before its acceptance was sequenced
    leaves ID accepted but void (PRODUCT.md §4), and the command says so and fails."""
    from backchannel.proposals import StatementKind

    failed = ("rejected", "countered", "withdrawn", "expired")

    async def work(participant: Participant) -> dict[str, Any]:
        negotiation = participant.negotiation
        await participant.sync()
        for condition in together:
            known = negotiation.view(condition)
            if known["status"] in failed:
                raise CliError(
                    f"proposal {known['id'][:12]} is {known['status']}: a package with it "
                    "would be void"
                )
        view = await negotiation.state(
            proposal_id, StatementKind.ACCEPTED, accepted_with=together, sync=False
        )
        for condition in together:
            if negotiation.view(condition)["status"] == "accepted":
                continue
            try:
                await negotiation.state(condition, StatementKind.ACCEPTED, sync=False)
            except CliError as exc:
                with contextlib.suppress(CliError):  # the winner's statement, to say void
                    await participant.sync()
                after = negotiation.view(view["id"])
                raise CliError(
                    f"{exc.message}; proposal {after['id'][:12]} is accepted but "
                    f"{after['agreement']}",
                    exc.code,
                ) from None
        return negotiation.view(view["id"])

    _show_proposal(_run(ctx, work), as_json, verb="Accepted")


@main.command()
@click.argument("proposal_id", metavar="ID")
@_with_options(proposal_options)
@click.option("--reason", metavar="TEXT", help="Why, for the record.")
@json_option
@pass_ctx
def counter(
    ctx: Context,
    proposal_id: str,
    title: str,
    terms: tuple[str, ...],
    file: Any,
    expires: str | None,
    reason: str | None,
    as_json: bool,
) -> None:
    """Answer proposal ID with a counter-proposal to its author."""
    from backchannel.proposals import StatementKind

    collected = _terms(terms, file)
    expires_ms = _time_ms(expires, "--expires") if expires else 0

    async def work(participant: Participant) -> dict[str, Any]:
        negotiation = participant.negotiation
        await participant.sync()
        original = negotiation.view(proposal_id)
        if original["direction"] != "in":
            raise CliError("you counter a proposal made to you; withdraw your own instead")
        negotiation.check_may(original["id"], StatementKind.COUNTERED)
        made = await negotiation.propose(
            original["from"], title, collected, (), expires_ms, 0, answers=original["id"]
        )
        await negotiation.state(
            original["id"],
            StatementKind.COUNTERED,
            reason=reason or "",
            counter=made["id"],
            sync=False,
        )
        return made

    _show_proposal(_run(ctx, work), as_json, verb="Countered with")


@main.command()
@click.argument("proposal_id", metavar="ID", required=False)
@click.option(
    "--all", "everything", is_flag=True,
    help="Everything attributable this profile holds (letters, acknowledgements, proposals, "
    "introductions, forwards, injects, communiqués), never anything off the record.",
)  # fmt: skip
@click.option("--out", type=click.Path(dir_okay=False, writable=True), help="Write to this file.")
@json_option
@pass_ctx
def export(
    ctx: Context, proposal_id: str | None, everything: bool, out: str | None, as_json: bool
) -> None:
    """Export proposal ID's record (with those it depends on), or with --all every attributable
    item, for `verify-record`.

    The record is JSON: on standard output, or in the --out file (then --json prints where)."""
    import json

    from .render import emit_json

    if everything == (proposal_id is not None):
        raise CliError("export takes a proposal ID or --all, exactly one of the two", "usage")
    if everything:
        _export_all(ctx, out, as_json)
        return

    async def work(participant: Participant) -> dict[str, Any]:
        assert proposal_id is not None
        return participant.negotiation.export(proposal_id)

    record = _run(ctx, work)
    text = json.dumps(record, indent=2) + "\n"
    if out is None:
        click.echo(text, nl=False)
        return
    try:
        Path(out).write_text(text, encoding="utf-8")
    except OSError as exc:
        raise CliError(f"cannot write {out}: {exc.strerror}", "cannot_write") from None
    if as_json:
        emit_json(
            {"out": out, "records": len(record["records"]), "notary_key": record["notary_key"]}
        )
    else:
        say(f"Wrote {out}.", err=True)


def _export_all(ctx: Context, out: str | None, as_json: bool) -> None:
    """`export --all` (PROTOCOL.md §14.8): `--json` says what is in it and what was left out."""
    import json
    from collections import Counter

    from backchannel.bundle import MAX_BUNDLE_BYTES

    from .archive import export_all
    from .render import emit_json

    async def work(participant: Participant) -> dict[str, Any]:
        return export_all(participant)

    document = _run(ctx, work)
    text = json.dumps(document, indent=1) + "\n"
    if len(text.encode()) > MAX_BUNDLE_BYTES:
        raise CliError(f"the export would be larger than {MAX_BUNDLE_BYTES} bytes, which no "
                       "verifier reads; export single proposals with `export ID`")  # fmt: skip
    counts = dict(Counter(item["kind"] for item in document["items"]))
    if out is not None:
        try:
            Path(out).write_text(text, encoding="utf-8")
        except OSError as exc:
            raise CliError(f"cannot write {out}: {exc.strerror}", "cannot_write") from None
    if as_json:
        emit_json({"out": out, "format": document["format"], "items": counts,
                   "left_out": document["left_out"], "relay": document["relay"]}
                  if out is not None else document)  # fmt: skip
        return
    if out is None:
        click.echo(text, nl=False)
        return
    listed = ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items())) or "no items"
    say(f"Wrote {out}: {listed}.", err=True)
    for left in document["left_out"]:
        say(f"Left out {left['count']} {left['kind']}: {left['reason']}.", err=True)


@main.command(name="verify-record")
@click.argument("file", type=click.File("rb"))
@click.option(
    "--notary-key",
    metavar="KEY",
    help="The relay's notary key as you trust it, in base64 (as /v1/info and `notary-log "
    "--json` print it) or hex.",
)
@click.option(
    "--control-key",
    metavar="KEY",
    help="For a full export (--all): the relay's control key as you trust it (base64 or hex).",
)
@json_option
@pass_ctx
def verify_record(
    ctx: Context, file: Any, notary_key: str | None, control_key: str | None, as_json: bool
) -> None:
    """Check an exported record offline: a proposal's (signatures, commitment, notary receipts)
    or a full export's (`export --all`: every item's signature and signer)."""
    import base64
    import time

    from backchannel.bundle import MAX_BUNDLE_BYTES, is_bundle, load_json
    from backchannel.errors import BackchannelError
    from backchannel.records import Export, verify_export

    from .render import emit_json, when

    key = _notary_key(notary_key) if notary_key else None
    data = file.read(MAX_BUNDLE_BYTES + 1)
    try:
        value = load_json(data)
    except BackchannelError as exc:
        raise CliError(f"{file.name} is not a proposal record: {exc}") from None
    if is_bundle(value):
        control = _notary_key(control_key) if control_key else None
        _verify_bundle(file.name, value, key, control, as_json)
        return
    try:
        export = Export.from_json(value)
    except BackchannelError as exc:
        raise CliError(f"{file.name} is not a proposal record: {exc}") from None
    try:
        verdicts = verify_export(export, int(time.time() * 1000), key)
    except BackchannelError as exc:
        raise CliError(f"{file.name}: {exc}") from None
    results: list[dict[str, Any]] = []
    for verdict in verdicts:
        proposal = verdict.record.sealed.proposal
        results.append(
            {
                "digest": verdict.record.digest.hex(),
                "title": proposal.title,
                "from": proposal.author.name,
                "to": [a.name for a in proposal.addressees],
                "valid": verdict.replayed is not None,
                "error": verdict.error or None,
                "status": verdict.replayed.status.name.lower() if verdict.replayed else None,
                # Bound and void are proven by the notarised statements in the file; a clause
                # only understood off the record is in no record, so nothing here proves it.
                "agreement": verdict.agreement.agreement.value if verdict.agreement else None,
                "agreement_note": verdict.agreement.reason or None if verdict.agreement else None,
                "understood_allowed": [c.hex() for c in proposal.allow_understood],
                "notarised_at": verdict.record.receipt.entry.at_ms,
                "statements": len(verdict.record.statements),
            }
        )
    if as_json:
        emit_json({"notary_key": base64.b64encode(key or export.notary_key).decode(),
                   "trusted_key_given": key is not None, "records": results})  # fmt: skip
    else:
        for r in results:
            verdict_text = f"VALID, {r['status']}" if r["valid"] else f"INVALID: {r['error']}"
            if r["agreement"] in ("bound", "void"):
                verdict_text += f", {r['agreement'].upper()} (proven by the notarised statements)"
            elif r["agreement"] not in (None, "none"):
                verdict_text += f", {r['agreement']}"
            say(
                f"{r['digest'][:12]} {r['title']!r} from {r['from']} to {', '.join(r['to'])}: "
                f"{verdict_text} (notarised {when(r['notarised_at'])}, "
                f"{r['statements']} statements)"
            )
            if r["agreement_note"]:
                say(f"  {r['agreement_note']}")
        if any(r["understood_allowed"] for r in results):
            say(
                "Note: a clause only understood off the record is not provable: no record "
                "holds it, and this one proves only what was notarised.",
                err=True,
            )
        if key is None:
            say(
                "Note: checked against the notary key in the file; compare it with the relay's "
                "(`notary_key` at /v1/info) or pass --notary-key.",
                err=True,
            )
    if not all(r["valid"] for r in results):
        raise click.exceptions.Exit(1)  # the reasons are printed above, one per record


def _verify_bundle(
    name: str, value: object, notary: bytes | None, control: bytes | None, as_json: bool
) -> None:
    """A full export's verdicts, one per item; exit 1 with one line when any item fails."""
    import time

    from backchannel.bundle import parse_bundle, verify_bundle
    from backchannel.errors import BackchannelError

    from .render import emit_json

    try:
        bundle = parse_bundle(value)
        verdicts = verify_bundle(bundle, int(time.time() * 1000), notary, control)
    except BackchannelError as exc:
        raise CliError(f"{name} is not a valid full export: {exc}") from None
    failed = [v for v in verdicts if not v.ok]
    line = ""
    if failed:
        first = failed[0]
        line = (f"{name}: {len(failed)} of {len(verdicts)} items do not verify; item "
                f"{first.index} ({first.kind} {first.id[:12]}): {first.reason}")  # fmt: skip
    if as_json:
        emit_json({"format": "backchannel-export-all/1", "participant": bundle.participant,
                   "valid": not failed, "error": line or None,
                   "trusted_keys_given": {"notary": notary is not None,
                                          "control": control is not None},
                   "left_out": list(bundle.left_out),
                   "items": [v.to_json() for v in verdicts]})  # fmt: skip
        if failed:
            raise click.exceptions.Exit(1)
        return
    for v in verdicts:
        head = f"{v.index:>4} {v.kind:<15} {v.id[:12]:<12} {v.signer or '?'}"
        say(f"{head}: VALID, {v.summary}" if v.ok else f"{head}: INVALID: {v.reason}")
    if failed:
        raise CliError(line, "invalid_record")
    say(f"All {len(verdicts)} items of {bundle.participant}'s export verify.", err=True)
    if notary is None or control is None:
        say("Note: checked against the keys in the file; compare them with the relay's "
            "(`notary_key`, `control_key` at /v1/info) or pass --notary-key/--control-key.",
            err=True)  # fmt: skip


NOTARY_KEY_BYTES = 32


def _notary_key(text: str) -> bytes:
    """A notary key in base64 or in hex (64 digits; spaces and colons between them allowed)."""
    import base64
    import binascii
    import re

    digits = re.sub(r"[\s:]", "", text)
    try:
        if len(digits) == 2 * NOTARY_KEY_BYTES and re.fullmatch(r"[0-9a-fA-F]+", digits):
            key = bytes.fromhex(digits)
        else:
            key = base64.b64decode(text.strip(), validate=True)
    except (ValueError, binascii.Error):
        key = b""
    if len(key) != NOTARY_KEY_BYTES:
        raise CliError(
            "--notary-key: not a notary key (32 bytes, in base64 as /v1/info gives it, or in "
            "64 hex digits)",
            "bad_key",
        )
    return key


@main.command(name="notary-log")
@json_option
@pass_ctx
def notary_log(ctx: Context, as_json: bool) -> None:
    """Check the relay's whole notary log: chain, signatures, and our receipts in it."""
    import base64

    from .render import emit_json

    async def work(participant: Participant) -> dict[str, Any]:
        checked = await participant.negotiation.check_log()
        key = (await participant.negotiation.notary()).key.raw
        # The key as /v1/info and `verify-record --notary-key` have it; its fingerprint to read.
        return {**checked, "notary_key": base64.b64encode(key).decode(),
                "notary_fingerprint": checked["notary_key"]}  # fmt: skip

    result = _run(ctx, work)
    if as_json:
        emit_json(result)
    else:
        say(
            f"Notary log intact: {result['entries']} entries chained ({result['own_entries']} "
            "about your proposals, signed; the others as links); "
            f"{result['ours_checked']} receipts held here are in it unchanged."
        )


# --- off the record --------------------------------------------------------------------------


@main.group(cls=OneLineGroup)
def otr() -> None:
    """Off-the-record channels: deniable, sealed sender, nothing kept (PRODUCT.md §3).

    Messages are authenticated to the recipient only, with keys both sides hold, so a transcript
    proves nothing to anyone else; the relay stores them without a sender, deletes them on
    delivery or expiry, and logs nothing about them. They arrive with `backchannel inbox`.
    """


@otr.command("open")
@click.argument("name")
@click.option(
    "--ttl",
    default="1h",
    show_default=True,
    help="How long the channel lives (90s, 30m, 2h); the relay caps it.",
)
@json_option
@pass_ctx
def otr_open(ctx: Context, name: str, ttl: str, as_json: bool) -> None:
    """Offer NAME an off-the-record channel (their client answers when it next runs)."""
    from .render import emit_json, when

    ttl_ms = duration_ms(ttl, "--ttl")
    opened = _run(ctx, lambda p: p.offrecord.open(name, ttl_ms, ttl[-1:].lower()))
    if as_json:
        emit_json(opened)
    else:
        say(
            f"Offered {name} an off-the-record channel until {when(opened['expires_at'])}; "
            f"it opens when their client answers (their next `backchannel inbox`). "
            + (
                "Exercise control sees nothing of it (off the record; control sees nothing)."
                if opened["control_sees"] == "nothing"
                else "Exercise control can learn at most that it exists (off the record; "
                "control sees existence)."
            )
        )


@otr.command("send")
@click.argument("name")
@click.argument("text", required=False)
@keep_option
@json_option
@pass_ctx
def otr_send(ctx: Context, name: str, text: str | None, keep: bool, as_json: bool) -> None:
    """Send NAME an off-the-record message (TEXT or standard input)."""
    from .render import emit_json

    body = _text(text, "message")
    shown = _run(ctx, lambda p: p.offrecord.send(name, body, keep))
    if as_json:
        emit_json(shown.as_json())
    else:
        kept = "a copy kept, marked unverifiable" if keep else "nothing kept"
        say(f"Sent off the record to {name} ({kept}).")


@otr.command("propose")
@click.argument("name")
@click.option("--title", required=True, help="What the clause is, in a line.")
@click.option("--term", "terms", multiple=True, metavar="TEXT", help="One term (repeat).")
@json_option
@pass_ctx
def otr_propose(ctx: Context, name: str, title: str, terms: tuple[str, ...], as_json: bool) -> None:
    """Propose a clause to NAME off the record: unsigned, never notarised, deniable.

    Accepted (`otr accept`), it is understood, never bound, and lives only as long as the
    channel. A proposal on the record counts it only with `propose --if ID --allow-understood`."""
    collected = _terms(terms, None)
    made = _run(ctx, lambda p: p.offrecord.propose(name, title, collected))
    _show_clause(made, as_json, "Proposed off the record")


@otr.command("accept")
@click.argument("name")
@click.argument("clause_id", metavar="ID")
@json_option
@pass_ctx
def otr_accept(ctx: Context, name: str, clause_id: str, as_json: bool) -> None:
    """Accept NAME's off-the-record clause ID: it becomes understood, never bound."""
    done = _run(ctx, lambda p: p.offrecord.accept(name, clause_id))
    _show_clause(done, as_json, "Understood")


@otr.command("withdraw")
@click.argument("name")
@click.argument("clause_id", metavar="ID")
@json_option
@pass_ctx
def otr_withdraw(ctx: Context, name: str, clause_id: str, as_json: bool) -> None:
    """Withdraw your off-the-record clause ID to NAME, offered or understood: what counted on
    it (a proposal's --if ... --allow-understood) becomes void."""
    done = _run(ctx, lambda p: p.offrecord.withdraw(name, clause_id))
    _show_clause(done, as_json, "Withdrawn")


def _show_clause(view: dict[str, Any], as_json: bool, verb: str) -> None:
    from .render import emit_json

    if as_json:
        emit_json(view)
    else:
        say(
            f"{verb}: clause {view['id'][:12]} with {view['with']} ({view['title']}). "
            "Deniable: no record holds it and none can prove it."
        )


@otr.command("close")
@click.argument("name")
@json_option
@pass_ctx
def otr_close(ctx: Context, name: str, as_json: bool) -> None:
    """Close the channel with NAME: its keys are wiped here and NAME is told to wipe theirs."""
    from .render import emit_json

    _run(ctx, lambda p: p.offrecord.close(name))
    if as_json:
        emit_json({"with": name, "status": "closed", "keys_wiped": True})
    else:
        say(f"Closed the off-the-record channel with {name}; its keys are wiped.")


@otr.command("list")
@json_option
@pass_ctx
def otr_list(ctx: Context, as_json: bool) -> None:
    """The off-the-record channels open now, and until when."""
    from .render import emit_json, when

    async def work(participant: Participant) -> list[dict[str, Any]]:
        try:
            await participant.sync()  # an answer or a close may be waiting
        except CliError as exc:
            say(hint(f"Note: as last known here; {exc.message}"), err=True)
        return participant.offrecord.listing()

    channels = _run(ctx, work)
    if as_json:
        emit_json(channels)
        return
    if not channels:
        say("No off-the-record channels are open.")
    for channel in channels:
        say(f"{channel['with']}: {channel['status']} until {when(channel['expires_at'])}")


# --- exercises -------------------------------------------------------------------------------


@main.command("exercise")
@json_option
@pass_ctx
def exercise_view(ctx: Context, as_json: bool) -> None:
    """Your exercise: its brief, your role, the scenario clock, and whom you may write to."""
    from backchannel.exercise import scenario_time_text

    from .render import emit_json

    async def work(participant: Participant) -> dict[str, Any] | None:
        return await participant.exercise.refresh()

    view = _run(ctx, work)
    if view is None:
        raise CliError("this profile has no role in an exercise on its relay", "no_exercise")
    if as_json:
        emit_json(_exercise_json(view))
        return
    clock, role = view["clock"], view["role"]
    now = scenario_time_text(clock["scenario_now"], clock["utc_offset_minutes"])
    state = "paused" if clock["paused"] else f"running at {clock['speed']:g}x"
    say(f"{view['title']} ({view['exercise']})")
    say(f"Scenario time: {now} ({state})")
    say(f"\nYou are {role['name']}, {role['title']} ({role['kind']}).\n{role['brief']}")
    say(f"\n{view['brief']}\n")
    for name, channel in sorted(view["channels"].items()):
        how = "directly" if channel["direct"] else f"through {channel['via']}"
        letters = channel.get("letters", "record")
        say(f"  you may write to {name} {how}" + (", in confidential letters"
                                                  if letters == "confidential" else ""))
    if "control_sees" in view:  # a relay from before channel classes says nothing of them
        say("\nWhat exercise control sees of each class (content, envelope: who wrote to whom "
            "and when, existence: counts only, or nothing):")  # fmt: skip
        classes = view["control_sees"]["classes"]
        say("  by default: " + _sees_text(classes))
        for name, sees in sorted(view["control_sees"]["peers"].items()):
            if sees != classes:
                say(f"  with {name}: " + _sees_text(sees))


@main.command("observe")
@json_option
@pass_ctx
def observe(ctx: Context, as_json: bool) -> None:
    """An observer's read-only view of the party exercise control named for it: that party's
    letters as control may see them (the text where its class gives control the content, who
    wrote to whom and when where it gives the envelope), never more."""
    from .render import emit_json, when

    async def work(participant: Participant) -> Any:
        return await participant.authed(
            lambda: participant.relay.request("GET", "/v1/exercise/observed")
        )

    seen: dict[str, Any] = _run(ctx, work)
    if as_json:
        emit_json(seen)
        return
    say(f"{seen['party']}'s letters in {seen['exercise']}, as exercise control sees them:")
    if seen["truncated"]:
        say(f"  (the newest {len(seen['letters'])} only)")
    for letter in seen["letters"]:
        line = f"  {when(letter['at'])}: {letter['class']} {letter['from']} -> {letter['to']}"
        if "text" in letter:
            line += f" [{letter['verified']}]: {letter['text'] or ''}"
        say(line)
    if not seen["letters"]:
        say("  none that control may see")
    say("  counted and off-the-record traffic names no party: it is not in this view")


def _sees_text(sees: dict[str, str]) -> str:
    return ", ".join(f"{cls.replace('_', ' ')} {seen}" for cls, seen in sees.items())


def _exercise_json(view: dict[str, Any]) -> dict[str, Any]:
    """The relay's view with its times as every JSON output has them: the clock's now as
    `scenario_at` and `wall_at`, an inject's scenario time as `scenario_at` (milliseconds; the
    scenario's own reading, with its UTC offset, in `scenario_time`)."""
    from backchannel.exercise import scenario_time_text

    clock = view["clock"]
    offset = int(clock["utc_offset_minutes"])
    injects = [
        {**{k: v for k, v in inject.items() if k != "at"}, "scenario_at": inject["at"],
         "scenario_time": scenario_time_text(inject["at"], offset)}
        for inject in view.get("injects", [])
    ]  # fmt: skip
    return {
        **{k: v for k, v in view.items() if k not in ("clock", "injects")},
        "clock": {
            "scenario_at": clock["scenario_now"],
            "scenario_time": scenario_time_text(clock["scenario_now"], offset),
            "wall_at": clock["wall_now"],
            "paused": clock["paused"],
            "speed": clock["speed"],
            "utc_offset_minutes": offset,
        },
        "injects": injects,
    }


# --- mediators ---------------------------------------------------------------------------------


@main.command()
@click.argument("first", metavar="A")
@click.argument("second", metavar="B")
@json_option
@pass_ctx
def introduce(ctx: Context, first: str, second: str, as_json: bool) -> None:
    """Introduce A and B: each gets the other's identity key, signed by you."""
    from .render import emit_json

    sent = _run(ctx, lambda p: p.mediation.introduce(first, second))
    if as_json:
        emit_json(sent)
        return
    for item in sent:
        say(f"Introduced {item['introduces']} ({item['fingerprint']}) to {item['to']}.")


@main.command()
@click.argument("ident", metavar="ID")
@click.option("--to", "to", required=True, metavar="NAME", help="Whom to forward it to.")
@click.option(
    "--as-own",
    is_flag=True,
    help="Re-word it and sign it as your own (the link to the original stays with you).",
)
@click.option("--text", help="With --as-own: the re-worded text (else an editor, or stdin).")
@json_option
@pass_ctx
def forward(
    ctx: Context, ident: str, to: str, as_own: bool, text: str | None, as_json: bool
) -> None:
    """Forward a letter you received, or a proposal, to NAME: verbatim with its author's
    signature, or --as-own."""
    from .render import emit_json

    if as_own and text is None:
        text = _reworded(ctx, ident)
    done = _run(ctx, lambda p: p.mediation.forward(ident, to, as_own, text))
    if as_json:
        emit_json(done)
    elif done["verbatim"]:
        say(
            f"Forwarded {done['author']}'s message {done['original'][:12]} to {to} verbatim, "
            "with its author's signature."
        )
    else:
        say(
            f"Sent {done['id'][:12]} to {to} as your own; its link to {done['original'][:12]} "
            "is kept in your profile only."
        )


@main.command()
@click.argument("ident", metavar="ID")
@click.option("--to", "to", metavar="NAME", help="Whom the mediator may forward it to.")
@click.option("--anyone", is_flag=True, help="The mediator may forward it to whomever it chooses.")
@json_option
@pass_ctx
def consent(ctx: Context, ident: str, to: str | None, anyone: bool, as_json: bool) -> None:
    """Let the mediator you sent letter or proposal ID to forward it verbatim, with your
    signature (by default nothing you tell a mediator is passed on)."""
    from .render import emit_json

    if (to is None) == (not anyone):
        raise click.UsageError("give --to NAME or --anyone")
    given = _run(ctx, lambda p: p.mediation.consent(ident, _consent_to(to or "anyone")))
    if as_json:
        emit_json(given)
    else:
        whom = given["to"] or "anyone they choose"
        say(f"{given['mediator']} may forward {given['original'][:12]} verbatim to {whom}.")


def _reworded(ctx: Context, ident: str) -> str | None:
    """The re-worded text: from an editor on a terminal (starting from the original), else
    standard input; None leaves a proposal's title as it was."""
    if not sys.stdin.isatty():
        body = sys.stdin.read()
        return body if body.strip() else None

    async def original(participant: Participant) -> str:
        try:
            return participant.show(ident).text
        except CliError:
            return ""

    edited = click.edit(_run(ctx, original))
    return edited if edited and edited.strip() else None


@main.group(cls=OneLineGroup)
def exchange() -> None:
    """Simultaneous exchanges you mediate: both sides' sealed offers, released together."""


@exchange.command("list")
@json_option
@pass_ctx
def exchange_list(ctx: Context, as_json: bool) -> None:
    """The exchanges held here, with both sides' offers (which you, the mediator, may read)."""
    from .render import emit_json

    async def work(participant: Participant) -> list[dict[str, Any]]:
        participant.hold_exchanges = True  # looking is not releasing
        await participant.sync()
        return participant.mediation.exchanges()

    found = _run(ctx, work)
    if as_json:
        emit_json(found)
        return
    if not found:
        say("No exchanges are held here.")
    for entry in found:
        say(f"[{entry['id'][:12]}] {' and '.join(entry['sides'])}: {entry['status']}")
        for offer in entry["offers"]:
            say(f"  {offer['from']} -> {offer['to']} (notary entry "
                       f"{offer['notary_seq']}): {offer['title']}")  # fmt: skip


@exchange.command("release")
@click.argument("ident", metavar="ID")
@json_option
@pass_ctx
def exchange_release(ctx: Context, ident: str, as_json: bool) -> None:
    """Release both offers of an exchange at once (ID: the exchange's id, or either offer's)."""
    from .render import emit_json

    async def work(participant: Participant) -> str:
        participant.hold_exchanges = True
        await participant.sync()
        return await participant.mediation.release(ident)

    released = _run(ctx, work)
    if as_json:
        emit_json({"id": released, "status": "released"})
    else:
        say(f"Released the exchange {released[:12]}: each side now has the other's offer.")


# --- reviewing: the outbox and the history ---------------------------------------------------


@main.group(cls=OneLineGroup, invoke_without_command=True)
@json_option
@pass_ctx
@click.pass_context
def outbox(click_ctx: click.Context, ctx: Context, as_json: bool) -> None:
    """What has not reached the relay: queued (it goes out with your next command) or refused
    for good (never sent again by itself: `outbox retry ID` or `outbox cancel ID`)."""
    if click_ctx.invoked_subcommand is not None:
        return
    from .render import emit_json, history_line

    waiting = _run(ctx, lambda p: _no_wait(p.outbox()))
    if as_json:
        emit_json([m.as_json() for m in waiting])
        return
    if not waiting:
        say("The outbox is empty: everything reached the relay.")
    for message in waiting:
        say(history_line(message.as_json()))
        if message.refusal:
            say(f"    refused: {message.refusal}")


async def _no_wait(value: T) -> T:
    return value


@outbox.command("retry")
@click.argument("ident", metavar="ID")
@json_option
@pass_ctx
def outbox_retry(ctx: Context, ident: str, as_json: bool) -> None:
    """Send a refused or queued message ID again (the same envelope, so never twice)."""
    from .render import emit_json

    shown = _run(ctx, lambda p: p.retry(ident))
    if as_json:
        emit_json(shown.as_json())
    else:
        say(f"Sent {shown.kind} {shown.id} to {shown.peer} ({shown.status}).")


@outbox.command("cancel")
@click.argument("ident", metavar="ID")
@json_option
@pass_ctx
def outbox_cancel(ctx: Context, ident: str, as_json: bool) -> None:
    """Take a queued or refused message ID out of the outbox for good."""
    from .render import emit_json

    shown = _run(ctx, lambda p: _no_wait(p.cancel(ident)))
    if as_json:
        emit_json(shown.as_json())
    else:
        say(f"Cancelled {shown.kind} {shown.id} to {shown.peer}; it will not be sent.")


HISTORY_KINDS = (
    "letter", "acknowledgement", "proposal", "statement", "introduction", "forwarded",
    "consent", "exchange", "inject", "carried", "held offer", "otr", "unreadable",
)  # fmt: skip


def _past_ms(text: str, param: str) -> int:
    """An ISO 8601 time (local time unless it names a zone), or a duration ago (`2h`)."""
    import time
    from datetime import datetime

    if text[:1].isdigit() and text[-1:].lower() in DURATION_UNITS and "-" not in text:
        return int(time.time() * 1000) - duration_ms(text, param)
    try:
        return int(datetime.fromisoformat(text).timestamp() * 1000)
    except (ValueError, OverflowError, OSError):
        raise CliError(
            f"{param}: {text!r} is neither a time like 2026-10-27T16:00 nor a duration like 2h"
        ) from None


@main.command()
@click.argument("name", required=False)
@click.option(
    "--kind", "kinds", multiple=True, metavar="KIND",
    help=f"Only this kind (repeat): {', '.join(HISTORY_KINDS)}.",
)  # fmt: skip
@click.option("--since", metavar="TIME", help="Sent at or after TIME (ISO time, or 2h: ago).")
@click.option("--until", metavar="TIME", help="Sent at or before TIME (ISO time, or 2h: ago).")
@json_option
@pass_ctx
def history(
    ctx: Context,
    name: str | None,
    kinds: tuple[str, ...],
    since: str | None,
    until: str | None,
    as_json: bool,
) -> None:
    """Every message held here, sent and received, in order (with NAME: only with NAME).

    Letters, acknowledgements, proposals and their statements, introductions, forwards,
    consents, exchanges and injects, each with its direction, kind, status, verification and
    what it answers. Nothing is fetched or marked read: `inbox` does that."""
    from .render import emit_json, history_line

    unknown = sorted(set(kinds) - set(HISTORY_KINDS))
    if unknown:
        raise CliError(f"--kind: {unknown[0]!r} is not one of {', '.join(HISTORY_KINDS)}")
    start = _past_ms(since, "--since") if since else None
    end = _past_ms(until, "--until") if until else None
    if start is not None and end is not None and start > end:
        raise CliError("--since is after --until")
    found = _run(ctx, lambda p: _no_wait(p.history(name, kinds, start, end)))
    if as_json:
        emit_json([m.as_json() for m in found])
        return
    if not found:
        say("No messages" + (f" with {name}." if name else "."))
    for message in found:
        say(history_line(message.as_json()))


# --- wipe ------------------------------------------------------------------------------------


@main.command()
@click.option("--yes", is_flag=True, help="Destroy without asking.")
@json_option
@pass_ctx
def wipe(ctx: Context, yes: bool, as_json: bool) -> None:
    """Destroy this profile on this machine for good: keys, messages, tokens, every file.

    Each file is overwritten before it is removed; the profile's agent is stopped first. Stop
    `backchannel inbox --watch` on the profile first. The relay keeps your registration until
    control wipes it (`backchannel-relay wipe`)."""
    from .render import emit_json
    from .wipe import RESIDUE_NOTE, wipe_profile

    directory = ctx.directory
    if not directory.is_dir():
        raise CliError(f"there is no profile to wipe in {directory}", "no_profile")
    if not yes:
        if not sys.stdin.isatty():
            raise CliError(
                f"there is no terminal to confirm on: run `backchannel --profile {ctx.profile} "
                "wipe --yes` to destroy the profile",
                "no_terminal",
            )
        click.confirm(f"Destroy the profile {ctx.profile!r} in {directory} for good?", abort=True)
    from .agent_cli import stop_agent

    stop_agent(directory)  # its keys go with it, and it writes nothing more here
    wiped = guard(ctx, lambda: wipe_profile(directory))
    if as_json:
        emit_json(
            {
                "profile": ctx.profile,
                "directory": str(directory),
                "destroyed": {
                    "files": wiped.files,
                    "bytes": wiped.bytes,
                    "directories": wiped.directories,
                },
                "note": RESIDUE_NOTE,
            }
        )
        return
    say(
        f"Wiped the profile {ctx.profile!r}: {wiped.files} file(s), {wiped.bytes} byte(s) "
        f"overwritten and removed, {wiped.directories} director(ies)."
    )
    say(f"Note: {RESIDUE_NOTE}.")


# --- the terminal interface ----------------------------------------------------------------


@main.command()
@click.option("--no-agent", is_flag=True, help="Do not start the profile's agent (poll instead).")
@click.option(
    "--first-screen",
    is_flag=True,
    hidden=True,
    help="Draw the first screen without a terminal, then exit (the benchmark's).",
)
@json_option
@pass_ctx
def tui(ctx: Context, no_agent: bool, first_screen: bool, as_json: bool) -> None:
    """A full-screen terminal interface: conversations, proposals, the exercise, mediation.

    Everything it does runs a `backchannel` command; press ? in it for the keys. (--json makes
    an error before it starts JSON; the screen itself is for people.)"""
    from .profile import read_info

    read_info(ctx.directory)  # a missing profile is named before the screen takes the terminal
    if not first_screen and not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise CliError("the terminal interface needs a terminal; scripts use the commands it "
                       "runs (each with --json)", "no_terminal")  # fmt: skip
    from .tui import BackchannelApp

    app = BackchannelApp(ctx.home, ctx.profile, agent=not no_agent, first_screen=first_screen)
    app.run(headless=first_screen)


main.add_command(verify_report)
main.add_command(agent)
