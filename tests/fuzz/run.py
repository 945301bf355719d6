"""Longer fuzzing runs than `make test` does: `python -m tests.fuzz.run --target NAME --seconds N`.

Under atheris (coverage-guided libFuzzer) when it is installed, else under hypothesis with a
time budget. `--all` runs every target in turn, each in its own process (atheris never returns
from a run). The corpus starts from the target's valid encodings and the crash regressions. The
corpus and any crashing input are kept under `--artifacts` (a temporary directory by default,
printed first); a crashing input goes into `targets.REGRESSIONS` once the decoder is fixed.

    python -m tests.fuzz.run --list
    python -m tests.fuzz.run --target envelope --seconds 300
    python -m tests.fuzz.run --all --seconds 60 --engine hypothesis
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ENGINES = ("auto", "atheris", "hypothesis")


def _engine(requested: str) -> str:
    if requested != "auto":
        return requested
    return "atheris" if importlib.util.find_spec("atheris") is not None else "hypothesis"


def _save(artifacts: Path, name: str, data: bytes) -> Path:
    artifacts.mkdir(parents=True, exist_ok=True)
    path = artifacts / f"crash-{name}-{hashlib.sha256(data).hexdigest()[:16]}"
    path.write_bytes(data)
    return path


def _initial_corpus(name: str, corpus: Path) -> None:
    from .targets import REGRESSIONS, TARGETS

    corpus.mkdir(parents=True, exist_ok=True)
    for data in [*TARGETS[name].seeds(), *REGRESSIONS.get(name, [])]:
        (corpus / hashlib.sha256(data).hexdigest()[:16]).write_bytes(data)


def run_atheris(name: str, seconds: int, corpus: Path, artifacts: Path) -> int:
    import atheris  # type: ignore[import-not-found, import-untyped, unused-ignore]

    # Only the code under test is instrumented for coverage, and it must be imported here.
    with atheris.instrument_imports(include=["backchannel", "backchannel_cli", "tomllib"]):
        from .targets import TARGETS

    if name not in TARGETS:
        print(f"no target {name!r}; --list shows them", file=sys.stderr)
        return 2
    target = TARGETS[name]
    _initial_corpus(name, corpus)
    longest = max(len(seed) for seed in target.seeds())
    artifacts.mkdir(parents=True, exist_ok=True)
    argv = [
        sys.argv[0],
        str(corpus),
        f"-max_total_time={seconds}",
        f"-max_len={max(4096, 2 * longest)}",
        "-rss_limit_mb=3072",
        "-timeout=20",
        f"-artifact_prefix={artifacts}/crash-{name}-",
        "-print_final_stats=1",
    ]
    atheris.Setup(argv, target.run)
    atheris.Fuzz()  # exits the process: 0 when time ran out, non-zero on a crash
    return 0


def run_hypothesis(name: str, seconds: int, artifacts: Path) -> int:
    from hypothesis import HealthCheck, given, settings

    from .strategies import fuzz_input
    from .targets import TARGETS

    target = TARGETS[name]
    seeds = target.seeds()
    failing: list[bytes] = []

    @settings(
        max_examples=2_000,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(fuzz_input(seeds))
    def fuzz(data: bytes) -> None:
        try:
            target.run(data)
        except BaseException:
            failing.append(data)  # the last one recorded is the shrunk one
            raise

    ends, rounds = time.monotonic() + seconds, 0
    while time.monotonic() < ends:
        rounds += 1
        try:
            fuzz()
        except Exception:
            path = _save(artifacts, name, failing[-1])
            print(f"{name}: CRASH on {failing[-1]!r}\n  saved to {path}", file=sys.stderr)
            raise
    print(f"{name}: {rounds} rounds of up to 2,000 examples in {seconds} s, no crash")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz.run", description=__doc__)
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--target", help="one target (see --list)")
    which.add_argument("--all", action="store_true", help="every target, one after the other")
    which.add_argument("--list", action="store_true", help="print the targets' names")
    parser.add_argument("--seconds", type=int, default=60, help="per target (default 60)")
    parser.add_argument("--engine", choices=ENGINES, default="auto")
    parser.add_argument("--corpus", type=Path, help="atheris: keep the corpus here")
    parser.add_argument("--artifacts", type=Path, help="where crashing inputs are written")
    args = parser.parse_args(argv)
    engine = _engine(args.engine)
    artifacts = args.artifacts or Path(tempfile.mkdtemp(prefix="backchannel-fuzz-"))
    print(f"corpus and crashes under {artifacts}", flush=True)
    if args.target and engine == "atheris":  # the core must not be imported before atheris
        corpus = args.corpus or artifacts / f"corpus-{args.target}"
        return run_atheris(args.target, args.seconds, corpus, artifacts)

    from .targets import TARGETS

    if args.list:
        print("\n".join(sorted(TARGETS)))
        return 0
    if args.all:
        failed = []
        for name in sorted(TARGETS):
            command = [sys.executable, "-m", "tests.fuzz.run", "--target", name,
                       "--seconds", str(args.seconds), "--engine", engine,
                       "--artifacts", str(artifacts)]  # fmt: skip
            print(f"== {name} ({engine}, {args.seconds} s)", flush=True)
            if subprocess.run(command, check=False).returncode != 0:
                failed.append(name)
        print(f"crashed: {', '.join(failed)}; inputs in {artifacts}" if failed else "no crash")
        return 1 if failed else 0
    if args.target not in TARGETS:
        parser.error(f"no target {args.target!r}; --list shows them")
    return run_hypothesis(args.target, args.seconds, artifacts)


if __name__ == "__main__":
    sys.exit(main())
