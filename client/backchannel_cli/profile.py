"""Where a participant's files live, and the keystore that guards them.

`HOME/profiles/PROFILE/` holds `profile.json` (name and relay URL: nothing secret),
`keystore.bcks` (the identity key and the local data key, sealed with the passphrase unless the
user chose `--no-passphrase`) and `state.sqlite3` (contacts, sessions, messages; secret columns
sealed with the data key). Directories are 0700 and files 0600.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path

import platformdirs

from backchannel import keystore
from backchannel.errors import BackchannelError, KeystoreError, WrongPassphraseError
from backchannel.identity import IDENTITY_PRIVATE_SIZE, IdentityKeyPair

from .errors import CliError

DATA_KEY_SIZE = 32
PROFILE_FILE = "profile.json"
KEYSTORE_FILE = "keystore.bcks"
STATE_FILE = "state.sqlite3"


def default_home() -> Path:
    return Path(os.environ.get("BACKCHANNEL_HOME") or platformdirs.user_data_dir("backchannel"))


@dataclass(frozen=True, slots=True)
class ProfileInfo:
    name: str
    relay: str
    fingerprint: str | None = None
    """Hex SHA-256 fingerprint of the identity the keystore must hold (public, so not secret):
    an unprotected keystore has no integrity check of its own, and a damaged one would otherwise
    yield a different identity silently."""


@dataclass(frozen=True, slots=True)
class Unlocked:
    """A profile whose keystore is open."""

    directory: Path
    info: ProfileInfo
    identity: IdentityKeyPair
    data_key: bytes

    @property
    def state_path(self) -> Path:
        return self.directory / STATE_FILE


OPEN_KEYSTORES: dict[Path, Unlocked] = {}
"""Set only in a fork of the profile's agent that runs a command: its directory's open keystore,
so the command neither asks for the passphrase nor runs scrypt."""


def profile_dir(home: Path, profile: str) -> Path:
    if not profile or "/" in profile or profile.startswith("."):
        raise CliError(f"invalid profile name {profile!r}", code="usage")
    return home / "profiles" / profile


def make_private(directory: Path) -> None:
    """Make the home, `profiles/` and the profile's directory 0700 and the profile's files 0600,
    creating the directories if need be and fixing those an earlier version (or the umask) left
    readable to others: the names of one's correspondents are in them."""
    home = directory.parent.parent
    for path in (home, home / "profiles", directory):
        try:
            path.mkdir(exist_ok=True, mode=0o700)
        except OSError as exc:
            raise CliError(f"cannot create {path}: {exc.strerror}") from None
        _chmod(path, 0o700)
    for path in directory.iterdir():
        if stat.S_ISREG(path.lstat().st_mode):
            _chmod(path, 0o600)


def _chmod(path: Path, mode: int) -> None:
    try:
        if stat.S_IMODE(path.lstat().st_mode) != mode:
            os.chmod(path, mode)
    except FileNotFoundError:
        return  # gone meanwhile (SQLite removes its log when the last connection closes)
    except OSError as exc:
        raise CliError(
            f"cannot make {path} private (mode {mode:o}): {exc.strerror}", "not_private"
        ) from None


def _write_private(path: Path, data: bytes) -> None:
    """Write atomically with mode 0600 (a crash leaves the old file or the new, never half)."""
    temp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temp, path)


def create(
    directory: Path,
    info: ProfileInfo,
    passphrase: str | None,
    params: keystore.ScryptParams | None = None,
) -> Unlocked:
    if (directory / KEYSTORE_FILE).exists():
        raise CliError(f"a profile already exists in {directory}", code="profile_exists")
    try:
        directory.parent.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise CliError(f"cannot create {directory}: {exc.strerror}") from None
    make_private(directory)
    identity = IdentityKeyPair.generate()
    data_key = os.urandom(DATA_KEY_SIZE)
    sealed = keystore.seal(
        identity.private_bytes() + data_key, passphrase, params or keystore.ScryptParams()
    )
    info = ProfileInfo(info.name, info.relay, identity.public.fingerprint().hex())
    profile = {"name": info.name, "relay": info.relay, "fingerprint": info.fingerprint}
    _write_private(directory / PROFILE_FILE, json.dumps(profile).encode())
    _write_private(directory / KEYSTORE_FILE, sealed)
    return Unlocked(directory, info, identity, data_key)


def read_info(directory: Path) -> ProfileInfo:
    try:
        raw = json.loads((directory / PROFILE_FILE).read_text())
        fingerprint = raw.get("fingerprint")
        return ProfileInfo(
            str(raw["name"]), str(raw["relay"]), None if fingerprint is None else str(fingerprint)
        )
    except FileNotFoundError:
        raise CliError(
            f"no profile in {directory}; create one with `backchannel init NAME --relay URL`",
            code="no_profile",
        ) from None
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
        raise CliError(f"{directory / PROFILE_FILE} is damaged", code="profile_damaged") from None
    except OSError as exc:
        raise CliError(f"cannot read {directory / PROFILE_FILE}: {exc.strerror}") from None


def keystore_needs_passphrase(directory: Path) -> bool:
    try:
        return keystore.is_protected((directory / KEYSTORE_FILE).read_bytes())
    except FileNotFoundError:
        raise CliError(f"no keystore in {directory}", code="no_keystore") from None
    except OSError as exc:
        raise CliError(f"cannot read {directory / KEYSTORE_FILE}: {exc.strerror}") from None
    except KeystoreError as exc:
        raise CliError(f"the keystore is corrupt: {exc}", code="keystore_corrupt") from None


def unlock(directory: Path, passphrase: str | None) -> Unlocked:
    info = read_info(directory)
    make_private(directory)
    try:
        secret = keystore.open_sealed((directory / KEYSTORE_FILE).read_bytes(), passphrase)
    except FileNotFoundError:
        raise CliError(f"no keystore in {directory}", code="no_keystore") from None
    except OSError as exc:
        raise CliError(f"cannot read {directory / KEYSTORE_FILE}: {exc.strerror}") from None
    except WrongPassphraseError:
        raise CliError(
            "wrong passphrase (or the keystore was altered)", code="wrong_passphrase"
        ) from None
    except KeystoreError as exc:
        raise CliError(f"the keystore is corrupt: {exc}", code="keystore_corrupt") from None
    if len(secret) != IDENTITY_PRIVATE_SIZE + DATA_KEY_SIZE:
        raise CliError("the keystore is corrupt: unexpected contents", code="keystore_corrupt")
    try:
        identity = IdentityKeyPair.from_private_bytes(secret[:IDENTITY_PRIVATE_SIZE])
    except BackchannelError as exc:
        raise CliError(f"the keystore is corrupt: {exc}", code="keystore_corrupt") from None
    if info.fingerprint is not None and identity.public.fingerprint().hex() != info.fingerprint:
        raise CliError(
            "the keystore is corrupt: it holds another identity than this profile's",
            code="keystore_corrupt",
        )
    return Unlocked(directory, info, identity, secret[IDENTITY_PRIVATE_SIZE:])
