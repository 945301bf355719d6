"""`backchannel-relay`: serve, migrate, and hand out invites."""

from __future__ import annotations

import contextlib
import json
import logging
import signal
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

# Only light modules here: aiohttp, SQLAlchemy and the relay's own machinery are imported by
# the commands that need them, so a Ctrl-C in the first second of `serve` meets its handler.
from .cli_base import (
    CodedError,
    _data_dir_option,
    _exercises,
    _run,
    _store_options,
    _store_used,
    _with_store,
    exercise,
    exercise_option,
)
from .config import DEFAULT_HOST, DEFAULT_MAX_OTR_TTL, DEFAULT_PORT, RelayConfig
from .errors import StoreUnavailable
from .names import ROLES, text_problem

if TYPE_CHECKING:
    from .store import Store


def _interrupted(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def _error_code(exc: click.ClickException) -> str:
    if isinstance(exc, CodedError):
        return exc.code
    if isinstance(exc, click.BadParameter):
        return "invalid_argument"
    return "usage" if isinstance(exc, click.UsageError) else "error"


JSON_ERRORS = "backchannel_relay.json_errors"


class OneLineGroup(click.Group):
    """Every error is one line, `Error: ...` on stderr (usage mistakes too: `Error: No such
    option '--x'.`); with --json, `{"error": CODE, "message": ...}` on stdout as well."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ctx.meta[JSON_ERRORS] = "--json" in (args[: args.index("--")] if "--" in args else args)
        return super().parse_args(ctx, args)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.ClickException as exc:
            if isinstance(exc, click.UsageError):
                exc.ctx = None
            if ctx.meta.get(JSON_ERRORS):
                click.echo(json.dumps({"error": _error_code(exc), "message": exc.format_message()}))
            raise


@click.group(cls=OneLineGroup, context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """The Backchannel relay: stores and forwards end-to-end encrypted envelopes."""


def _proxies(_: click.Context, __: click.Parameter, values: tuple[str, ...]) -> tuple[str, ...]:
    """Each `--trusted-proxy` is an IP address or a CIDR block (checked here, one line if not)."""
    from ipaddress import ip_network

    for value in values:
        try:
            ip_network(value, strict=False)
        except ValueError:
            raise click.BadParameter(f"{value!r} is not an IP address or CIDR block") from None
    return values


@main.command()
@click.option("--host", envvar="BACKCHANNEL_RELAY_HOST", default=DEFAULT_HOST, show_default=True)
@click.option(
    "--port",
    envvar="BACKCHANNEL_RELAY_PORT",
    type=click.IntRange(0, 65535),
    default=DEFAULT_PORT,
    show_default=True,
)
@_store_options
@click.option(
    "--no-access-log",
    is_flag=True,
    envvar="BACKCHANNEL_RELAY_NO_ACCESS_LOG",
    help="Log no line per request at all.",
)
@click.option(
    "--rate-burst",
    type=click.FloatRange(min=1),
    default=60.0,
    show_default=True,
    envvar="BACKCHANNEL_RELAY_RATE_BURST",
    help="Requests per identity in a burst.",
)
@click.option(
    "--rate-per-second",
    type=click.FloatRange(min=0.001),
    default=1.0,
    show_default=True,
    envvar="BACKCHANNEL_RELAY_RATE_PER_SECOND",
    help="Requests per identity per second, sustained.",
)
@click.option(
    "--send-burst",
    type=click.FloatRange(min=1),
    default=256.0,
    show_default=True,
    envvar="BACKCHANNEL_RELAY_SEND_BURST",
    help="Envelopes per identity in a burst (also the most in one request).",
)
@click.option(
    "--send-per-second",
    type=click.FloatRange(min=0.001),
    default=1.0,
    show_default=True,
    envvar="BACKCHANNEL_RELAY_SEND_PER_SECOND",
    help="Envelopes per identity per second, sustained.",
)
@click.option(
    "--read-burst",
    type=click.FloatRange(min=1),
    default=1000.0,
    show_default=True,
    envvar="BACKCHANNEL_RELAY_READ_BURST",
    help="Mailbox reads and acknowledgements per identity in a burst.",
)
@click.option(
    "--read-per-second",
    type=click.FloatRange(min=0.001),
    default=20.0,
    show_default=True,
    envvar="BACKCHANNEL_RELAY_READ_PER_SECOND",
    help="Mailbox reads and acknowledgements per identity per second, sustained.",
)
@click.option(
    "--sender-share-envelopes",
    type=click.IntRange(min=1),
    default=1_250,
    show_default=True,
    envvar="BACKCHANNEL_RELAY_SENDER_SHARE_ENVELOPES",
    help="Envelopes one sender may have waiting in one recipient's mailbox.",
)
@click.option(
    "--sender-share-bytes",
    type=click.IntRange(min=1),
    default=8 * 1024 * 1024,
    show_default=True,
    envvar="BACKCHANNEL_RELAY_SENDER_SHARE_BYTES",
    help="Bytes one sender may have waiting in one recipient's mailbox.",
)
@click.option(
    "--public-rate-burst",
    type=click.FloatRange(min=1),
    default=300.0,
    show_default=True,
    envvar="BACKCHANNEL_RELAY_PUBLIC_RATE_BURST",
    help="Unauthenticated requests (register, login, admin, notary log) per client address "
    "in a burst; a refused request costs 5 more.",
)
@click.option(
    "--public-rate-per-second",
    type=click.FloatRange(min=0.001),
    default=5.0,
    show_default=True,
    envvar="BACKCHANNEL_RELAY_PUBLIC_RATE_PER_SECOND",
    help="Unauthenticated requests per client address per second, sustained.",
)
@click.option(
    "--trusted-proxy",
    "trusted_proxies",
    multiple=True,
    callback=_proxies,
    envvar="BACKCHANNEL_RELAY_TRUSTED_PROXY",
    metavar="ADDR_OR_CIDR",
    help="A reverse proxy whose X-Forwarded-For names the client (repeatable; in the "
    "environment, separated by spaces). Without one the header is ignored.",
)
@click.option(
    "--max-rate-keys",
    type=click.IntRange(min=1),
    default=100_000,
    show_default=True,
    envvar="BACKCHANNEL_RELAY_MAX_RATE_KEYS",
    help="Client addresses (and drops) each in-memory limit remembers at most.",
)
@click.option(
    "--body-timeout",
    type=click.FloatRange(min=0.1),
    default=30.0,
    show_default=True,
    envvar="BACKCHANNEL_RELAY_BODY_TIMEOUT",
    help="Seconds a client has to send a request body (then 408).",
)
@click.option(
    "--body-memory",
    type=click.IntRange(min=1024 * 1024),
    default=64 * 1024 * 1024,
    show_default=True,
    envvar="BACKCHANNEL_RELAY_BODY_MEMORY",
    help="Bytes of request bodies the process holds at once (then 429 relay_busy).",
)
@click.option(
    "--sweep-interval",
    type=click.FloatRange(min=0.1),
    default=60.0,
    show_default=True,
    envvar="BACKCHANNEL_RELAY_SWEEP_INTERVAL",
    help="Seconds between expiry sweeps.",
)
@click.option(
    "--max-otr-ttl",
    type=click.IntRange(min=1),
    default=DEFAULT_MAX_OTR_TTL,
    show_default=True,
    envvar="BACKCHANNEL_RELAY_MAX_OTR_TTL",
    help="The longest an off-the-record channel (its drops) may live, in seconds.",
)
@click.option(
    "--drops-per-participant",
    type=click.IntRange(min=1),
    default=200,
    show_default=True,
    envvar="BACKCHANNEL_RELAY_DROPS_PER_PARTICIPANT",
    help="Off-the-record drops one participant may open within the longest a drop lives.",
)
@click.option(
    "--prekey-fetch-burst",
    type=click.FloatRange(min=1),
    default=64.0,
    show_default=True,
    envvar="BACKCHANNEL_RELAY_PREKEY_FETCH_BURST",
    help="Prekey bundles one participant may fetch, and others may fetch of one participant, "
    "in a burst.",
)
@click.option(
    "--prekey-fetch-pair-burst",
    type=click.FloatRange(min=1),
    default=4.0,
    show_default=True,
    envvar="BACKCHANNEL_RELAY_PREKEY_FETCH_PAIR_BURST",
    help="Prekey bundles of one participant another may fetch in a burst.",
)
@click.option(
    "--allow-unsafe-commit",
    is_flag=True,
    envvar="BACKCHANNEL_RELAY_ALLOW_UNSAFE_COMMIT",
    help="Serve PostgreSQL with fsync or synchronous_commit off: receipts would then leave "
    "before the envelope is on disk (refused without this flag).",
)
def serve(
    host: str,
    port: int,
    data_dir: Path,
    database_url: str | None,
    no_access_log: bool,
    rate_burst: float,
    rate_per_second: float,
    send_burst: float,
    send_per_second: float,
    read_burst: float,
    read_per_second: float,
    sender_share_envelopes: int,
    sender_share_bytes: int,
    public_rate_burst: float,
    public_rate_per_second: float,
    trusted_proxies: tuple[str, ...],
    max_rate_keys: int,
    body_timeout: float,
    body_memory: int,
    sweep_interval: float,
    max_otr_ttl: int,
    drops_per_participant: int,
    prekey_fetch_burst: float,
    prekey_fetch_pair_burst: float,
    allow_unsafe_commit: bool,
) -> None:
    """Run the relay on HOST:PORT until interrupted (Ctrl-C or SIGTERM: it closes every
    WebSocket as going away and exits 0). One SQLite store is served by one process."""
    signal.signal(signal.SIGTERM, _interrupted)  # until the relay's own handlers are set
    try:
        from .access import BundleLimits
        from .drops import DropLimits
        from .limits import RateLimit
        from .store import Limits

        config = RelayConfig(
            host=host,
            port=port,
            data_dir=data_dir,
            database_url=database_url,
            access_log=not no_access_log,
            rate=RateLimit(rate_burst, rate_per_second),
            send_rate=RateLimit(send_burst, send_per_second),
            read_rate=RateLimit(read_burst, read_per_second),
            limits=Limits(
                max_share_envelopes=sender_share_envelopes, max_share_bytes=sender_share_bytes
            ),
            public_rate=RateLimit(public_rate_burst, public_rate_per_second),
            trusted_proxies=trusted_proxies,
            max_rate_keys=max_rate_keys,
            body_timeout=body_timeout,
            body_memory=body_memory,
            sweep_interval=sweep_interval,
            drops=DropLimits(max_ttl=max_otr_ttl, max_opened=drops_per_participant),
            bundles=BundleLimits.with_bursts(prekey_fetch_burst, prekey_fetch_pair_burst),
            allow_unsafe_commit=allow_unsafe_commit,
        )
        _serve(config)
    except KeyboardInterrupt:  # Ctrl-C (or SIGTERM) before the relay's own handlers were set
        pass
    click.echo("backchannel-relay: stopped.")


def _serve(config: RelayConfig) -> None:
    """Hold the store's lock (SQLite), run the relay until a signal, and close everything."""
    from aiohttp import web

    from .app import SHUTDOWN_TIMEOUT, TemplateAccessLogger, create_app
    from .database import StoreInUse, private_data_dir, serving_lock, store_error

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    with contextlib.ExitStack() as held:
        try:
            if config.database_url is None:
                private_data_dir(config.data_dir)
            held.enter_context(serving_lock(config.url))
        except StoreInUse as exc:
            raise CodedError(str(exc), "store_in_use") from None
        except OSError as exc:
            raise CodedError(
                f"cannot open the {config.describe_store()}: {store_error(exc)}",
                "store_unavailable",
            ) from None
        click.echo(f"backchannel-relay: store is the {config.describe_store()}")
        address = f"{config.host}:{config.port}"
        try:
            web.run_app(
                create_app(config),
                host=config.host,
                port=config.port,
                # Called once the store is open and the socket bound: only then is it true.
                print=lambda _: click.echo(f"backchannel-relay: listening on http://{address}"),
                access_log=logging.getLogger("backchannel_relay.access")
                if config.access_log
                else None,
                access_log_class=TemplateAccessLogger,
                # On SIGINT or SIGTERM the sockets are closed at once (`on_shutdown`); requests
                # still running get this long, so the relay is gone within 2 s.
                shutdown_timeout=SHUTDOWN_TIMEOUT,
            )
        except StoreUnavailable as exc:
            raise CodedError(str(exc), "store_unavailable") from None
        except OSError as exc:
            raise click.ClickException(f"cannot listen on {address}: {exc.strerror}") from None


@main.command("migrate")
@_store_options
def migrate_command(data_dir: Path, database_url: str | None) -> None:
    """Bring the store's schema up to date (serve does this on start too)."""
    config = RelayConfig(data_dir=data_dir, database_url=database_url)

    async def nothing_more(_store: Store) -> None:  # opening the store migrates it
        return None

    _with_store(data_dir, database_url, nothing_more)
    click.echo(f"schema is up to date in the {config.describe_store()}")


@main.command()
@click.argument("name")
@click.option("--role", type=click.Choice(ROLES), required=True)
@click.option(
    "--ttl",
    "ttl_hours",
    type=click.FloatRange(min=0.01),
    default=168.0,
    show_default=True,
    help="Hours until the invite expires.",
)
@_store_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def invite(
    name: str, role: str, ttl_hours: float, data_dir: Path, database_url: str | None, as_json: bool
) -> None:
    """Create a single-use invite for NAME."""
    problem = text_problem(name) if name else "is empty"
    if problem is not None:
        raise click.BadParameter(f"the name {problem}", param_hint="NAME")

    async def work(store: Store) -> tuple[str, int]:
        return await store.create_invite(name, role, int(ttl_hours * 3600))

    code, expires_at = _with_store(data_dir, database_url, work)
    store = _store_used(data_dir, database_url, as_json)
    if as_json:
        answer = {"name": name, "role": role, "invite": code, "expires_at": expires_at, **store}
        click.echo(json.dumps(answer))
    else:
        click.echo(f"invite for {name} ({role}): {code}")


@main.command()
@click.option(
    "--relays",
    "--relay",
    "relay_urls",
    metavar="URL[,URL...]",
    help="Drive these running relays (sharing one store) instead of starting one.",
)
@click.option(
    "--processes",
    type=click.IntRange(1, 16),
    default=1,
    show_default=True,
    help="Relay processes to start on --database (several only on PostgreSQL).",
)
@click.option(
    "--idle-connections",
    type=click.IntRange(1, 100_000),
    default=5_000,
    show_default=True,
    help="WebSockets the idle phase holds open (run it with --phase idle).",
)
@click.option(
    "--admin-token",
    envvar="BACKCHANNEL_RELAY_ADMIN_TOKEN",
    help="With --relay (or a --database that was used before): to create the participants.",
)
@click.option(
    "--database",
    "database_url",
    metavar="URL",
    help="Start the relay on this SQLAlchemy URL (default: SQLite in a temporary directory).",
)
@click.option("--senders", type=click.IntRange(1, 1000), default=50, show_default=True)
@click.option(
    "--recipients",
    type=click.IntRange(1, 1000),
    default=None,
    help="Recipients draining over WebSockets [default: as many as senders].",
)
@click.option(
    "--duration",
    type=click.FloatRange(min=0.1),
    default=10.0,
    show_default=True,
    help="Seconds measured in the throughput and ceiling phases (after a warm-up).",
)
@click.option("--warmup", type=click.FloatRange(min=0), default=2.0, show_default=True)
@click.option(
    "--batch",
    type=click.IntRange(1, 256),
    default=64,
    show_default=True,
    help="Envelopes per send request in the throughput phase.",
)
@click.option(
    "--rate",
    type=click.FloatRange(min=1),
    default=1000.0,
    show_default=True,
    help="Envelopes per second in the latency phase (one per request).",
)
@click.option("--latency-duration", type=click.FloatRange(min=0.1), default=10.0, show_default=True)
@click.option(
    "--fill",
    type=click.IntRange(1000),
    default=100_000,
    show_default=True,
    help="Envelopes stored in other mailboxes for the second mailbox-fetch timing.",
)
@click.option(
    "--phase",
    "phases",
    type=click.Choice(["throughput", "latency", "fetch", "ceiling", "idle", "abuse"]),
    multiple=True,
    help="Run only these phases (repeatable) [default: all but idle and abuse].",
)
@click.option(
    "--abuse-scale",
    type=click.FloatRange(0.001, 1.0),
    default=1.0,
    show_default=True,
    help="The abuse phase's attacks and samples, as a fraction of their full size.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def bench(
    relay_urls: str | None,
    processes: int,
    idle_connections: int,
    admin_token: str | None,
    database_url: str | None,
    senders: int,
    recipients: int | None,
    duration: float,
    warmup: float,
    batch: int,
    rate: float,
    latency_duration: float,
    fill: int,
    phases: tuple[str, ...],
    abuse_scale: float,
    as_json: bool,
) -> None:
    """Measure throughput, delivery latency and mailbox-fetch cost with simulated clients;
    with `--phase abuse`, a legitimate participant's latency while the relay is attacked."""
    import asyncio
    from dataclasses import asdict, replace

    from rich.console import Console

    from .bench import (
        ALL_PHASES,
        BenchSettings,
        Report,
        machine_description,
        report_table,
        run_bench,
    )
    from .bench_abuse import abuse_phase, abuse_rows, scaled

    settings = BenchSettings(
        senders=senders,
        recipients=recipients,
        duration=duration,
        warmup=warmup,
        batch=batch,
        rate=rate,
        latency_duration=latency_duration,
        fill=fill,
        phases=phases or ALL_PHASES,
        idle_connections=idle_connections,
    )
    urls = [u.strip().rstrip("/") for u in (relay_urls or "").split(",") if u.strip()]
    for url in urls:
        if not url.startswith(("http://", "https://")):
            raise click.BadParameter(
                f"{url!r} is not an http:// or https:// URL", param_hint="--relays"
            )
    if relay_urls is not None and not urls:
        raise click.BadParameter("name at least one relay URL", param_hint="--relays")
    if "abuse" in settings.phases and urls:
        raise click.BadParameter("the abuse phase starts a relay of its own", param_hint="--relays")
    console = Console(stderr=as_json)
    others = tuple(phase for phase in settings.phases if phase != "abuse")
    try:
        abuse = {}
        if others != settings.phases:
            abuse = asyncio.run(abuse_phase(database_url, scaled(abuse_scale)))
        if others:
            report = asyncio.run(
                run_bench(replace(settings, phases=others), urls, admin_token, database_url,
                          console, processes)
            )  # fmt: skip
        else:
            report = Report("a relay started for the phase", database_url or "SQLite",
                            machine_description(), asdict(settings))  # fmt: skip
    except (RuntimeError, OSError) as exc:
        raise click.ClickException(str(exc)) from None
    report.abuse = abuse
    if as_json:
        click.echo(json.dumps(report.to_json(), indent=2))
        return
    table = report_table(report)
    for row in abuse_rows(abuse) if abuse else ():
        table.add_row(*row)
    console.print(table)


# --- exercises ---------------------------------------------------------------------------------


main.add_command(exercise)  # in `cli_base`: `control_cli` and `report` add to it too


def _scenario_source(file_or_name: str) -> str:
    """A scenario file's text, or a shipped scenario's (`cuba-1962`)."""
    from importlib.resources import files

    path = Path(file_or_name)
    if path.is_file():
        try:
            return path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise CodedError(f"cannot read {path}: {exc}", "unreadable_scenario") from None
    shipped = files("backchannel_relay") / "scenarios"
    if not shipped.is_dir():
        raise CodedError(f"no scenario file {file_or_name!r}", "unknown_scenario")
    names = sorted(
        p.name.removesuffix(".toml") for p in shipped.iterdir() if p.name.endswith(".toml")
    )
    if file_or_name in names:
        return (shipped / f"{file_or_name}.toml").read_text(encoding="utf-8")
    raise CodedError(
        f"{file_or_name!r} is neither a scenario file nor a shipped scenario ({', '.join(names)})",
        "unknown_scenario",
    )


def _when(ms: int, offset_minutes: int) -> str:
    from backchannel.exercise import scenario_time_text

    return scenario_time_text(ms, offset_minutes)


def _clock_line(clock: dict[str, Any]) -> str:
    now = _when(clock["scenario_now"], clock["utc_offset_minutes"])
    state = "paused" if clock["paused"] else f"running at {clock['speed']:g}x"
    return f"scenario time {now}, {state}"


@exercise.command("load")
@click.argument("scenario", metavar="FILE|NAME")
@click.option(
    "--ttl",
    "ttl_hours",
    type=click.FloatRange(min=0.01),
    default=168.0,
    show_default=True,
    help="Hours until the invites expire.",
)
@_store_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def exercise_load(
    scenario: str, ttl_hours: float, data_dir: Path, database_url: str | None, as_json: bool
) -> None:
    """Create the exercise of a scenario (a TOML file, or a shipped one such as cuba-1962) and
    print an invite for each role. Its clock starts paused at the scenario's start.

    A role whose name has registered already is bound to that participant (its registered
    role must be the role's kind). Loading the same scenario again prints the roles still open
    with new invites, which replace the earlier unused ones; the clock is left as it is."""
    from .exercises import Loaded

    source = _scenario_source(scenario)

    async def work(exercises: Any) -> Loaded:
        loaded: Loaded = await exercises.load(source, int(ttl_hours * 3600))
        return loaded

    loaded = _exercises(data_dir, database_url, work)
    store = _store_used(data_dir, database_url, as_json)
    played = loaded.scenario
    codes = dict(loaded.invites)
    if as_json:
        roles = [
            {
                "name": r.name,
                "kind": r.kind,
                "title": r.title,
                "registered": r.name in loaded.bound,
                "invite": codes.get(r.name),
            }
            for r in played.roles
        ]
        click.echo(
            json.dumps(
                {
                    "exercise": played.name,
                    "title": played.title,
                    **store,
                    "loaded_before": loaded.again,
                    "clock": loaded.clock,
                    "roles": roles,
                    "bound": loaded.bound,
                    "invites_expire_at": loaded.expires_at if codes else None,
                    "injects": len(played.injects),
                }
            )
        )
        return
    if loaded.again:
        click.echo(f"exercise {played.name}: {played.title} (loaded already)")
        click.echo(_clock_line(loaded.clock))
    else:
        start = _when(loaded.clock["anchor_ms"], played.offset_minutes)
        click.echo(f"exercise {played.name}: {played.title}")
        click.echo(
            f"clock paused at {start}, speed {loaded.clock['speed']:g}x; start it with "
            f"`backchannel-relay exercise clock resume`"
        )
    for role in played.roles:
        what = f"{role.name} ({role.kind}, {role.title})"
        if role.name in loaded.bound:
            click.echo(f"{what}: registered already; bound to the role")
        else:
            click.echo(f"invite for {what}: {codes[role.name]}")
    if loaded.again and codes:
        click.echo("(invites printed earlier for these roles no longer work: hand out these)")
    elif not codes:
        click.echo("every role is registered: no invites are needed")


@exercise.command("status")
@exercise_option
@_store_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def exercise_status(
    name: str | None, data_dir: Path, database_url: str | None, as_json: bool
) -> None:
    """Who has registered, the clock, and the injects delivered and pending."""

    async def work(exercises: Any) -> Any:
        return await exercises.status(await exercises.pick(name))

    status = _exercises(data_dir, database_url, work)
    store = _store_used(data_dir, database_url, as_json)
    if as_json:
        click.echo(json.dumps({**status, **store}))
        return
    offset = status["clock"]["utc_offset_minutes"]
    click.echo(f"exercise {status['exercise']}: {status['title']}")
    click.echo(_clock_line(status["clock"]))
    for role in status["roles"]:
        joined = "registered" if role["registered"] else "not registered yet"
        click.echo(f"  {role['name']} ({role['kind']}, {role['title']}): {joined}")
    click.echo(_sees_line("control sees", status["control_sees"]["classes"]))
    for pair in status["control_sees"]["pairs"]:
        sees = {k: v for k, v in pair.items() if k != "between"}
        click.echo(_sees_line(f"  between {' and '.join(pair['between'])}", sees))
    for said in status["communiques"]:  # public: control reads them whole
        text = "".join(c if c.isprintable() else " " for c in said["text"])  # no escapes
        signed = datetime.fromtimestamp(said["at"] / 1000, UTC).strftime("%Y-%m-%d %H:%M")
        click.echo(f"  communiqué {said['number']} from {said['author']} "
                   f"(signed {signed} UTC): {text}")  # fmt: skip
    for inject in status["injects"]:
        state = "delivered" if inject["delivered"] else "pending"
        click.echo(f"  inject {inject['number']} at {_when(inject['at'], offset)}: "
                   f"{inject['title']} [{state}]")  # fmt: skip


@exercise.command("traffic")
@exercise_option
@_store_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def exercise_traffic(
    name: str | None, data_dir: Path, database_url: str | None, as_json: bool
) -> None:
    """What control may see of the letters: their text (copies opened, signatures checked)
    where it sees content, who wrote to whom and when where it sees the envelope, counts
    where it sees existence, and nothing where it sees nothing."""

    async def work(exercises: Any) -> Any:
        return await exercises.traffic(await exercises.pick(name))

    seen = _exercises(data_dir, database_url, work)
    store = _store_used(data_dir, database_url, as_json)
    if as_json:
        click.echo(json.dumps({**seen, **store}))
        return
    click.echo(f"exercise {seen['exercise']}: letters as control may see them")
    for entry in seen["letters"]:
        when = datetime.fromtimestamp(entry["at"] / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")
        line = f"  {when} UTC {entry['class']} {entry['from']} -> {entry['to']}"
        if "verified" in entry:
            text = entry["text"]
            shown = "".join(c if c.isprintable() else " " for c in text) if text else ""
            line += f" [{entry['verified']}]: {shown}"
        click.echo(line)
    for channel_class, count in sorted(seen["counts"].items()):
        what = "channel(s) opened" if channel_class == "off_the_record" else "letter(s)"
        click.echo(f"  {channel_class.replace('_', ' ')}: {count} {what}, no more known")
    if not seen["letters"] and not seen["counts"]:
        click.echo("  nothing")


def _sees_line(lead: str, sees: dict[str, str]) -> str:
    """`lead`: record envelope, off the record existence, ... (class names as people say them)."""
    return f"{lead}: " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in sees.items())


@exercise.command("observe")
@click.argument("observer")
@click.option("--as", "party", metavar="PARTY", help="The party whose traffic it may see.")
@click.option("--stop", is_flag=True, help="End the observer's view.")
@exercise_option
@_store_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def exercise_observe(
    observer: str, party: str | None, stop: bool, name: str | None, data_dir: Path,
    database_url: str | None, as_json: bool,
) -> None:  # fmt: skip
    """Let an observer see what control sees of one party's traffic (--as PARTY), or end it
    (--stop). Never more than that party's channel classes let control see."""
    if stop == (party is not None):
        raise CodedError("give --as PARTY or --stop", "invalid_field")

    async def work(exercises: Any) -> Any:
        from .observing import grant, revoke

        exercise = await exercises.pick(name)
        if party is None:
            return {"exercise": exercise, "observer": observer,
                    "stopped": await revoke(exercises, exercise, observer)}  # fmt: skip
        return await grant(exercises, exercise, observer, party)

    done = _exercises(data_dir, database_url, work)
    store = _store_used(data_dir, database_url, as_json)
    if as_json:
        click.echo(json.dumps({**done, **store}))
    elif party is None:
        had = "no longer sees" if done["stopped"] else "had no view of"
        click.echo(f"{observer} {had} a party's traffic in {done['exercise']}")
    else:
        click.echo(f"{observer} now sees what control sees of {party}'s traffic "
                   f"in {done['exercise']}")  # fmt: skip


@exercise.command("clock")
@click.argument("action", type=click.Choice(["pause", "resume", "set", "speed"]))
@click.argument("value", required=False)
@click.option("--as", "by", metavar="NAME", help="The controller's name for the log.")
@exercise_option
@_store_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def exercise_clock(
    action: str,
    value: str | None,
    by: str | None,
    name: str | None,
    data_dir: Path,
    database_url: str | None,
    as_json: bool,
) -> None:
    """pause | resume | set TIME (ISO 8601 with offset) | speed FACTOR."""
    from datetime import datetime

    argument: float | None = None
    if action in ("set", "speed") and value is None:
        raise click.UsageError(f"`clock {action}` needs a value")
    if action == "set":
        assert value is not None
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            moment = None
        if moment is None or moment.tzinfo is None:
            raise click.BadParameter(
                "a time with its UTC offset, like 1962-10-27T09:00:00-04:00", param_hint="TIME"
            )
        argument = moment.timestamp() * 1000
    elif action == "speed":
        assert value is not None
        try:
            argument = float(value)
        except ValueError:
            raise click.BadParameter("a number, like 60", param_hint="FACTOR") from None
    elif value is not None:
        raise click.UsageError(f"`clock {action}` takes no value")

    from .control_cli import _controller

    controller = _controller(click.get_current_context(), click.Option(["--as"]), by)

    async def work(exercises: Any) -> Any:
        from .control import change_clock

        picked = await exercises.pick(name)
        await change_clock(exercises, picked, action, argument, controller)  # recorded
        return (await exercises.status(picked))["clock"]

    clock = _exercises(data_dir, database_url, work)
    store = _store_used(data_dir, database_url, as_json)
    click.echo(json.dumps({**clock, **store}) if as_json else _clock_line(clock))


# --- wipe --------------------------------------------------------------------------------------


@main.command("wipe")
@_store_options
@click.option(
    "--exercise",
    "exercise_name",
    metavar="NAME",
    help="Wipe only if the store holds nothing but this exercise (the notary log is shared).",
)
@click.option("--yes", is_flag=True, help="Destroy without asking.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def wipe_command(
    data_dir: Path, database_url: str | None, exercise_name: str | None, yes: bool, as_json: bool
) -> None:
    """Destroy everything in the store for good, once the exercise is over.

    Envelopes, drops, registrations, invites, tokens, prekeys, the notary log and keys, the
    control key and the exercises. Stop every relay serving the store first: a SQLite store a
    relay holds is refused, and so is a PostgreSQL database other sessions are connected to."""
    import sys

    from sqlalchemy.exc import SQLAlchemyError

    from .database import StoreInUse, open_engine, serving_lock, sqlite_file, store_error
    from .wipe import RESIDUE_NOTE, Wiped, other_sessions, wipe_store

    config = RelayConfig(data_dir=data_dir, database_url=database_url)
    store = config.describe_store()
    path = sqlite_file(config.url)
    if path is not None and not path.exists():
        raise CodedError(f"there is no store to wipe: no SQLite file {path}", "no_store")
    with contextlib.ExitStack() as held:
        try:
            held.enter_context(serving_lock(config.url))  # and no relay starts meanwhile
        except StoreInUse as exc:
            raise CodedError(f"{exc}; nothing was wiped", "store_in_use") from None
        except OSError as exc:
            raise CodedError(
                f"cannot open the {store}: {store_error(exc)}", "store_unavailable"
            ) from None
        if not yes:
            if not sys.stdin.isatty():
                raise CodedError(
                    "there is no terminal to confirm on: run `backchannel-relay wipe --yes` "
                    "to destroy the store",
                    "no_terminal",
                )
            click.confirm(f"Destroy everything in the {store} for good?", abort=True)

        async def run() -> Wiped:
            engine = open_engine(config.url)
            try:
                sessions = await other_sessions(engine)
                if sessions:
                    raise CodedError(
                        f"{sessions} other session(s) are connected to the {store}: stop every "
                        "relay serving it first; nothing was wiped",
                        "store_in_use",
                    )
                return await wipe_store(engine, exercise_name)
            except (OSError, SQLAlchemyError) as exc:
                raise StoreUnavailable(f"the {store} failed: {store_error(exc)}") from None
            finally:
                await engine.dispose()

        wiped = _run(run)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "store": config.store_label(),
                    "exercise": exercise_name,
                    "destroyed": wiped.destroyed,
                    "vacuumed": wiped.vacuumed,
                    "note": RESIDUE_NOTE,
                }
            )
        )
        return
    click.echo(f"Wiped the {store}:")
    for kind, count in sorted(wiped.destroyed.items()):
        click.echo(f"  {kind}: {count}")
    click.echo(f"Note: {RESIDUE_NOTE}.")


@main.command("backup")
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
@_data_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def backup_command(out: Path, data_dir: Path, as_json: bool) -> None:
    """Copy the SQLite store to OUT (0600) while the relay runs, without off-the-record drops.

    On PostgreSQL use `pg_dump --exclude-table-data=drops --exclude-table-data=drop_messages`
    (deploy/README.md): off-the-record data is never in a backup."""
    import sqlite3

    from .database import sqlite_file, sqlite_url
    from .wipe import backup_sqlite

    store = sqlite_file(sqlite_url(data_dir))
    assert store is not None
    if not store.exists():
        raise CodedError(f"there is no store to back up: no SQLite file {store}", "no_store")
    if out.exists():
        raise CodedError(f"{out} exists already; name a new file", "exists")
    try:
        kept = backup_sqlite(store, out)
    except (OSError, sqlite3.Error) as exc:
        raise CodedError(f"cannot back up {store} to {out}: {exc}", "backup_failed") from None
    if as_json:
        click.echo(json.dumps({"store": str(store), "out": str(out), "rows": kept}))
    else:
        click.echo(f"Backed up {store} to {out} ({sum(kept.values())} rows; no drops).")


from . import control_cli  # noqa: E402, F401  (registers `exercise injects`, `inject`, ...)
from . import report as _report  # noqa: E402, F401  (registers `exercise report`, ...)
