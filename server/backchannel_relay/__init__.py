"""The relay: an aiohttp store-and-forward server for end-to-end encrypted envelopes.

Installed as `backchannel_relay` (this folder is a source root, so no generic `server` module
lands in site-packages). It is a thin I/O shell around `backchannel`, the protocol core.
"""
