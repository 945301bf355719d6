"""`python -m backchannel_cli` is `backchannel` (through the profile's agent when one runs)."""

from .entry import main

main()
