"""The exception family of the protocol core.

As in h11, an error says whose fault it was. A `RemoteProtocolError` means bytes that came from
elsewhere (a peer, the relay, a file) are malformed, forged or replayed: the state is untouched and
the input should be dropped or reported. A `LocalProtocolError` means the caller asked for something
the protocol forbids. Every error carries a stable machine-readable `code` so that the relay and the
CLI can render it (HTTP JSON bodies, `--json` output) without matching on message text.
"""

from __future__ import annotations


class BackchannelError(Exception):
    """Base of every error raised by the protocol core."""

    code = "backchannel_error"


class LocalProtocolError(BackchannelError):
    """The caller asked for something the protocol does not allow."""

    code = "local_protocol_error"


class RemoteProtocolError(BackchannelError):
    """Input from outside is malformed, forged or replayed; nothing was changed."""

    code = "remote_protocol_error"


# --- decoding -------------------------------------------------------------------------------


class DecodeError(RemoteProtocolError):
    """Bytes do not follow the documented encoding."""

    code = "decode_error"


class TruncatedError(DecodeError):
    code = "truncated"


class TrailingBytesError(DecodeError):
    code = "trailing_bytes"


class UnknownVersionError(DecodeError):
    code = "unknown_version"


class FieldTooLargeError(DecodeError):
    code = "field_too_large"


class InvalidFieldError(DecodeError):
    code = "invalid_field"


# --- keys and signatures ----------------------------------------------------------------------


class InvalidPublicKeyError(RemoteProtocolError):
    """A public key is non-canonical, of small order, or of the wrong type or length."""

    code = "invalid_public_key"


class SignatureError(RemoteProtocolError):
    """A signature does not verify under the key that should have made it."""

    code = "bad_signature"


class IdentitySignatureError(SignatureError):
    code = "bad_identity_signature"


class BundleSignatureError(SignatureError):
    code = "bad_prekey_signature"


class LetterSignatureError(SignatureError):
    code = "bad_letter_signature"


class ProposalSignatureError(SignatureError):
    code = "bad_proposal_signature"


class NotaryError(SignatureError):
    """A notary receipt whose signature fails, or a notary log whose hash chain is broken."""

    code = "bad_notary_record"


# --- handshake --------------------------------------------------------------------------------


class UnknownPrekeyError(RemoteProtocolError):
    """An initial message names a prekey we never issued, or one already consumed."""

    code = "unknown_prekey"


class PrekeyReusedError(UnknownPrekeyError):
    """An initial message names a one-time prekey that an earlier handshake consumed."""

    code = "prekey_reused"


class HandshakeError(RemoteProtocolError):
    code = "handshake_failed"


class IdentityMismatchError(RemoteProtocolError):
    """A message or session is bound to a different identity than the one expected."""

    code = "identity_mismatch"


# --- ratchet ----------------------------------------------------------------------------------


class DecryptionError(RemoteProtocolError):
    """Authentication failed: tampered header, body or associated data, or the wrong session.

    Header and body tampering deliberately raise this same error so that no oracle tells them apart.
    """

    code = "decryption_failed"


class DuplicateMessageError(RemoteProtocolError):
    """The message was already decrypted (a replay), or its skipped key was evicted."""

    code = "duplicate_message"


class TooManySkippedError(RemoteProtocolError):
    """The header asks us to skip past more message keys than MAX_SKIP allows."""

    code = "too_many_skipped"


class ProposalStateError(RemoteProtocolError):
    """A statement that the proposal's lifecycle does not allow (accepting a withdrawn or
    expired proposal, a withdrawal by someone other than the author, ...)."""

    code = "proposal_state"


class StateError(LocalProtocolError):
    """The session state cannot do what was asked (for example, send before it has a chain)."""

    code = "invalid_state"


# --- keystore ---------------------------------------------------------------------------------


class KeystoreError(BackchannelError):
    code = "keystore_error"


class WrongPassphraseError(KeystoreError):
    """The passphrase does not open the keystore (or the keystore was altered)."""

    code = "wrong_passphrase"


class CorruptKeystoreError(KeystoreError, DecodeError):
    code = "corrupt_keystore"
