"""`python -m backchannel_cli` is `backchannel`."""

from .cli import main

main(prog_name="backchannel")
