"""`python -m backchannel_relay`: what `make run` starts.

The relay itself is the next milestone (issue 3). Until it lands this entry point says what it
will do, so `make run` already proves the install works from a fresh clone.
"""

from __future__ import annotations

import sys

from backchannel import PROTOCOL_VERSION

PLAN = """\
backchannel-relay (protocol v{version}): the relay is not built yet.
When it is, `make run` will start it on http://127.0.0.1:8470 with an embedded SQLite store
in your per-user data directory. Today the protocol core is installed and tested:
  make test                      # unit, property and test-vector suites, ruff, mypy --strict
  .venv/bin/python -m backchannel.bench   # protocol benchmark (see BENCHMARKS.md)
"""


def main() -> int:
    sys.stdout.write(PLAN.format(version=PROTOCOL_VERSION))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
