"""`backchannel`: the participant's command line.

Commands are grouped by what the user is doing (identity, letters); each one unlocks the profile,
calls the service, and renders. Heavy modules are imported inside commands so `--help` stays fast.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from .errors import CliError

if TYPE_CHECKING:
    from .service import Participant, Shown

T = TypeVar("T")
PASSPHRASE_ENV = "BACKCHANNEL_PASSPHRASE"


@dataclass
class Context:
    home: Path
    profile: str
    debug: bool

    @property
    def directory(self) -> Path:
        from .profile import profile_dir

        return profile_dir(self.home, self.profile)


def _passphrase(confirm: bool) -> str:
    from_env = os.environ.get(PASSPHRASE_ENV)
    if from_env is not None:
        return from_env
    if not sys.stdin.isatty():
        raise CliError(
            f"the keystore needs a passphrase: set {PASSPHRASE_ENV} or run in a terminal"
        )
    value: str = click.prompt("Passphrase", hide_input=True, confirmation_prompt=confirm)
    if not value:
        raise CliError("the passphrase must not be empty (use --no-passphrase to go without)")
    return value


def _run(ctx: Context, work: Callable[[Participant], Coroutine[Any, Any, T]]) -> T:
    """Unlock the profile, run `work` against it, and close everything."""
    import asyncio

    from .profile import keystore_needs_passphrase, read_info, unlock
    from .service import Participant

    def action() -> T:
        directory = ctx.directory
        read_info(directory)  # a missing profile is named as such before any passphrase prompt
        passphrase = _passphrase(False) if keystore_needs_passphrase(directory) else None
        participant = Participant(unlock(directory, passphrase))

        async def main() -> T:
            try:
                return await work(participant)
            finally:
                await participant.close()

        return asyncio.run(main())

    return _guard(ctx, action)


def _guard(ctx: Context, action: Callable[[], T]) -> T:
    try:
        return action()
    except (click.ClickException, click.Abort, click.exceptions.Exit):
        raise
    except KeyboardInterrupt:
        raise click.Abort() from None
    except Exception as exc:  # a bug: one line unless --debug
        if ctx.debug:
            traceback.print_exc()
        raise CliError(f"internal error: {type(exc).__name__}: {exc}") from None


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
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

    click_ctx.obj = Context(home or default_home(), profile, debug)


pass_ctx = click.make_pass_decorator(Context)


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
    from .render import emit_json
    from .service import Participant

    if not 0 < len(name.encode("utf-8")) <= 64:
        raise click.BadParameter("a name is 1 to 64 bytes of UTF-8", param_hint="NAME")
    if not relay.startswith(("http://", "https://")):
        raise click.BadParameter(
            "the relay URL starts with http:// or https://", param_hint="--relay"
        )
    passphrase = None if no_passphrase else _passphrase(True)

    def action() -> str:
        unlocked = create(ctx.directory, ProfileInfo(name, relay.rstrip("/")), passphrase)
        participant = Participant(unlocked)
        try:
            participant.create_prekeys()
            return participant.fingerprint()
        finally:
            participant.store.close()

    fingerprint = _guard(ctx, action)
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
        click.echo(f"Created {name} in profile {ctx.profile!r} ({ctx.directory}).")
        click.echo(f"Fingerprint: {fingerprint}")
        click.echo("Next: backchannel register INVITE")


@main.command()
@click.argument("invite")
@json_option
@pass_ctx
def register(ctx: Context, invite: str, as_json: bool) -> None:
    """Register with the relay using the INVITE from exercise control."""
    from .render import emit_json

    result = _run(ctx, lambda p: p.register(invite))
    if as_json:
        emit_json(result)
    else:
        click.echo(f"Registered {result['name']} as {result['role']}.")


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
                {k: e[k] for k in ("name", "role", "fingerprint", "verified", "key_changed")}
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
        click.echo(f"{e['name']:<24} {e['role']:<9} {e['fingerprint']}  [{mark}]")


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
                click.echo(f"WARNING: {name}'s identity key has CHANGED since you first saw it.")
            click.echo(f"Safety number with {name}:\n  {format_safety_number(number)}")
            click.echo("Compare it with theirs, aloud or in person.")
        if yes or click.confirm("Does it match?", default=False):
            participant.mark_verified(name, compared)
            if as_json:
                emit_json({"name": name, "safety_number": number, "verified": True})
            else:
                click.echo(f"{name} is now verified.")
        elif not as_json:
            click.echo(f"{name} is NOT verified.")

    _run(ctx, work)


# --- letters ---------------------------------------------------------------------------------


@main.command()
@click.argument("name")
@click.argument("text", required=False)
@click.option(
    "--file", "file", type=click.File("r", encoding="utf-8"), help="Read TEXT from a file."
)
@click.option("--reply-to", metavar="ID", help="The message this letter answers.")
@json_option
@pass_ctx
def send(
    ctx: Context, name: str, text: str | None, file: Any, reply_to: str | None, as_json: bool
) -> None:
    """Send a signed letter to NAME (TEXT, --file, or standard input)."""
    from .render import emit_json

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
    if reply_to is not None:
        try:
            bytes.fromhex(reply_to)
            if len(reply_to) != 32:
                raise ValueError
        except ValueError:
            raise click.BadParameter(
                "a message id is 32 hex digits", param_hint="--reply-to"
            ) from None
    shown = _run(ctx, lambda p: p.send_letter(name, body, reply_to))
    if as_json:
        emit_json(shown.as_json())
    else:
        click.echo(f"Sent letter {shown.id} to {name} ({shown.status}).")


@main.command()
@click.option("--watch", is_flag=True, help="Stay connected and show letters as they arrive.")
@click.option("--no-read-receipts", is_flag=True, help="Do not tell senders you read them.")
@json_option
@pass_ctx
def inbox(ctx: Context, watch: bool, no_read_receipts: bool, as_json: bool) -> None:
    """Fetch, decrypt, store and acknowledge new messages, then show them."""
    from .render import emit_json, message_lines

    def show(batch: list[Any]) -> None:
        if as_json and not watch:
            emit_json([m.as_json() for m in batch])
            return
        for message in batch:
            if as_json:
                emit_json(message.as_json())
            else:
                click.echo(message_lines(message.as_json()))

    def notice(line: str) -> None:
        click.echo(line, err=True)

    async def work(participant: Participant) -> None:
        fresh, synced = await participant.fetch()
        show(fresh)
        if not no_read_receipts:
            await participant.send_read_receipts(fresh)
        if not watch:
            if synced.held:
                raise CliError(_held(synced.held))
            if not fresh and not as_json:
                click.echo("No new messages.")
            return
        if synced.held:
            notice(f"Warning: {_held(synced.held)}")
        await participant.watch(show, read_receipts=not no_read_receipts, notice=notice)

    _run(ctx, work)


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
    """One message with its status and signature verification.

    Receipts waiting on the relay are fetched first, so a letter's status is current (when the
    relay cannot be reached, the status last known is shown, with a note).
    """
    from .render import emit_json, message_lines

    async def work(participant: Participant) -> tuple[Shown, str | None]:
        note = None
        try:
            await participant.sync()
        except CliError as exc:
            note = exc.message
        shown = participant.show(message_id)
        unread = shown.direction == "in" and shown.kind == "letter" and shown.status != "read"
        if unread and not no_read_receipts:
            try:
                await participant.send_read_receipts([shown])
                shown = participant.show(shown.id)
            except CliError as exc:
                note = exc.message
        return shown, note

    shown, note = _run(ctx, work)
    if note is not None:
        click.echo(f"Note: the status shown is the last one known here; {note}", err=True)
    if as_json:
        emit_json(shown.as_json())
    else:
        click.echo(message_lines(shown.as_json()))
