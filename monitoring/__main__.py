"""`python -m monitoring [--check]`: write (or verify) every generated dashboard and rules file."""

from __future__ import annotations

import argparse
import sys

from monitoring.outputs import OUTPUTS, ROOT, stale


def main(argv: list[str] | None = None) -> int:
    """Write each output, or with --check list the stale ones and return 1 if there are any."""
    parser = argparse.ArgumentParser(prog="python -m monitoring", description=__doc__)
    parser.add_argument("--check", action="store_true", help="only verify the checked-in files are current")
    args = parser.parse_args(argv)
    if args.check:
        outdated = stale()
        for path in outdated:
            print(f"{path}: out of date; run `python -m monitoring` and commit the result", file=sys.stderr)
        return 1 if outdated else 0
    for relative, render in OUTPUTS.items():
        target = ROOT / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(render())
        print(f"wrote {relative}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
