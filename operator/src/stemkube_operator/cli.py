"""Command-line entry point; the capability arrives with its own issue."""

import sys


def main() -> int:
    print("main", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
