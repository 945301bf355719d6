"""`python -m backchannel_relay` is `backchannel-relay`."""

from .cli import main

main(prog_name="backchannel-relay")
