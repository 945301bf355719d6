"""The participant CLI (`backchannel`), a thin shell around the protocol core.

Installed as `backchannel_cli`; this folder is a source root so no generic `client` module lands
in site-packages.
"""
