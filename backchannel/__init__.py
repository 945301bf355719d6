"""Backchannel's protocol core: identities, PQXDH handshake, Double Ratchet, envelopes.

Sans-I/O in the manner of h11: every function takes bytes and state in and hands bytes, events
and new state back. Nothing here opens a file, a socket or reads the clock; time and randomness
are parameters, which is what makes the test vectors in PROTOCOL.md reproducible.
"""

PROTOCOL_VERSION = 1
