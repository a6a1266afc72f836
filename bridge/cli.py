"""The `skolebro` command line (SPEC section 2)."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "understand":
        from bridge.understand.command import run

        return run(sys.stdin, sys.stdout)
    print("skolebro: not available yet", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
