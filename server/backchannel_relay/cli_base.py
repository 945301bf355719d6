"""What the `backchannel-relay` command modules build on: the store's options and opening it,
the one-line coded error, and the `exercise` group with its `--exercise` option.

`cli` (which adds the group to `main`), `control_cli` and `report` all take these, so they live
below all three; the underscored helpers are for those modules only.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from .config import RelayConfig, default_data_dir
from .errors import RelayError, StoreUnavailable

if TYPE_CHECKING:
    from .store import Store

T = TypeVar("T")


DRIVERS = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+asyncpg"}
"""The stores the relay runs on, by URL scheme, and the async driver each one needs."""


def _database_url(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    """Accept SQLite and PostgreSQL URLs (with or without the async driver named)."""
    if value is None:
        return None
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        url = make_url(value)
    except ArgumentError:
        raise click.BadParameter(f"{value!r} is not a database URL") from None
    backend = url.get_backend_name()
    wanted = DRIVERS.get(backend)
    if wanted is None or url.drivername not in (backend, wanted):
        raise click.BadParameter(
            f"the relay runs on SQLite or PostgreSQL ({', '.join(DRIVERS.values())}), "
            f"not {url.drivername}"
        )
    return url.set(drivername=wanted).render_as_string(hide_password=False)


_data_dir_option = click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="BACKCHANNEL_RELAY_DATA_DIR",
    default=default_data_dir,
    show_default=True,
    help="Where the SQLite store lives.",
)


def _store_options(command: Callable[..., Any]) -> Callable[..., Any]:
    command = click.option(
        "--database",
        "database_url",
        envvar="BACKCHANNEL_RELAY_DATABASE",
        metavar="URL",
        callback=_database_url,
        help="SQLAlchemy URL, e.g. postgresql+asyncpg://user@host/db (default: SQLite).",
    )(command)
    return _data_dir_option(command)


def _with_store(
    data_dir: Path, database_url: str | None, work: Callable[[Store], Coroutine[Any, Any, T]]
) -> T:
    """Open (and migrate) the store the flags name, run `work` on it, close it. A store that
    cannot be opened is one line naming it (its path, or its URL without the password)."""
    from sqlalchemy.exc import SQLAlchemyError

    from .database import migrate, open_engine, private_data_dir, store_error
    from .store import Limits, Store

    config = RelayConfig(data_dir=data_dir, database_url=database_url)

    async def run() -> T:
        engine = None
        try:
            if database_url is None:
                private_data_dir(data_dir)
            engine = open_engine(config.url)
            await migrate(engine)
        except (OSError, SQLAlchemyError) as exc:
            raise StoreUnavailable(
                f"cannot open the {config.describe_store()}: {store_error(exc)}"
            ) from None
        try:
            return await work(Store(engine, Limits()))
        except (OSError, SQLAlchemyError) as exc:
            raise StoreUnavailable(
                f"the {config.describe_store()} failed: {store_error(exc)}"
            ) from None
        finally:
            await engine.dispose()

    return _run(run)


def _run(make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    import asyncio

    try:
        return asyncio.run(make())
    except RelayError as exc:
        raise CodedError(exc.message, exc.code) from None
    except StoreUnavailable as exc:
        raise CodedError(str(exc), "store_unavailable") from None


def _store_used(data_dir: Path, database_url: str | None, as_json: bool) -> dict[str, str]:
    """Name the store a control command used: a line on stderr (stdout stays what it was),
    or, with --json, the `store` field returned here (the SQLite file's path, or the
    database URL without its password). Control and `serve` must name the same one."""
    config = RelayConfig(data_dir=data_dir, database_url=database_url)
    if not as_json:
        click.echo(f"backchannel-relay: store is the {config.describe_store()}", err=True)
    return {"store": config.store_label()}


class CodedError(click.ClickException):
    """A refusal with a stable code: the relay's own (`name_taken`, `role_conflict`, ...) or
    the command's (`store_unavailable`, `store_in_use`, `unknown_scenario`)."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


@click.group()
def exercise() -> None:
    """Load a scenario, follow who has joined, run its clock (PRODUCT.md §7)."""


def _exercises(
    data_dir: Path, database_url: str | None, work: Callable[[Any], Coroutine[Any, Any, T]]
) -> T:
    from backchannel.keys import SigningKeyPair

    from .exercises import Exercises

    async def run(store: Store) -> T:
        key, _ = await store.meta_secret("control_key", 32)
        return await work(Exercises(store, SigningKeyPair.from_private_bytes(key)))

    return _with_store(data_dir, database_url, run)


exercise_option = click.option(
    "--exercise", "name", metavar="NAME", help="Which exercise (needed when several are loaded)."
)
