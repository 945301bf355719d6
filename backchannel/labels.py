"""Every domain-separation string the protocol uses, in one place.

MLS's rule, copied: each label starts with the protocol name and version, so no signature, MAC or
key made for one purpose can be replayed for another, nor for another protocol.
"""

from __future__ import annotations

PREFIX = b"Backchannel v1 "

# Signature contexts: signed bytes are PREFIX ‖ label ‖ 0x00 ‖ body (see `signing_input`).
SIG_IDENTITY = b"identity"
SIG_SIGNED_PREKEY = b"signed prekey"
SIG_KEM_PREKEY = b"kem prekey"
SIG_LETTER = b"letter"
SIG_LETTER_ACK = b"letter acknowledgement"
SIG_RELAY_REGISTER = b"relay register"
SIG_RELAY_LOGIN = b"relay login"
SIG_PROPOSAL = b"proposal"
SIG_STATEMENT = b"proposal statement"
SIG_NOTARY = b"notary receipt"
SIG_INJECT = b"exercise inject"
SIG_COMMUNIQUE = b"exercise communique"
SIG_INTRODUCTION = b"introduction"
SIG_EXCHANGE_RELEASE = b"exchange release"
SIG_FORWARD_CONSENT = b"forward consent"
SIG_CONTROL_KEY = b"exercise control key"

# Hash and KDF info strings.
FINGERPRINT = PREFIX + b"fingerprint"
PQXDH_INFO = PREFIX + b"PQXDH X25519 SHA-256 ML-KEM-768"
RATCHET_ROOT_INFO = PREFIX + b"ratchet root"
MESSAGE_KEYS_INFO = PREFIX + b"message keys"
KEYSTORE_AD = PREFIX + b"keystore"
LETTER_DIGEST = PREFIX + b"letter digest"
PROPOSAL_DIGEST = PREFIX + b"proposal digest"
PROPOSAL_COMMITMENT = PREFIX + b"proposal commitment"
STATEMENT_DIGEST = PREFIX + b"statement digest"
NOTARY_CHAIN = PREFIX + b"notary chain"
NOTARY_ENTRY = PREFIX + b"notary entry"
NOTARY_TERMS = PREFIX + b"notary terms"
OTR_ROOT_INFO = PREFIX + b"otr root"
OTR_MESSAGE_INFO = PREFIX + b"otr message keys"
DROP_ADDRESS = PREFIX + b"drop address"
DROP_READ_KEY = PREFIX + b"drop read key"
CONTROL_COPY_INFO = PREFIX + b"control copy X25519 ML-KEM-768"

# Chain-key step constants (Double Ratchet §5.2, as libsignal).
CHAIN_MESSAGE_KEY = b"\x01"
CHAIN_NEXT = b"\x02"


def signing_input(label: bytes, body: bytes) -> bytes:
    """The exact bytes an Ed25519 signature covers for a statement of type `label`."""
    return PREFIX + label + b"\x00" + body
