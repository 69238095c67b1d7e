"""`hybrid-inference bench`: runs the benchmark scripts under bench/ (a source checkout is needed)."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from hybrid_workers.errors import UserError

# bench/ sits at the repository root, three levels above this package's folder.
BENCH_DIR = Path(__file__).resolve().parents[3] / "bench"


def available() -> dict[str, Path]:
    """Benchmark name -> script: every bench/<name>_bench.py in the checkout."""
    if not BENCH_DIR.is_dir():
        return {}
    return {p.name.removesuffix("_bench.py"): p for p in sorted(BENCH_DIR.glob("*_bench.py"))}


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `bench` command."""
    parser = subparsers.add_parser("bench", help="run the benchmark suite (results go to docs/benchmarks.md)")
    parser.add_argument(
        "names",
        nargs="*",
        help="benchmarks to run (default: all); see --list",
    )
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the chosen benchmarks one after another, each in its own Python process."""
    scripts = available()
    if not scripts:
        raise UserError(f"no benchmarks found in {BENCH_DIR}; `bench` needs a source checkout of the project")
    if args.list:
        print("\n".join(scripts))
        return 0
    unknown = [n for n in args.names if n not in scripts]
    if unknown:
        raise UserError(f"unknown benchmark {', '.join(unknown)}; choose from {', '.join(scripts)}")
    status = 0
    for name in args.names or list(scripts):
        print(f"== bench {name}: {scripts[name]}", flush=True)
        status |= subprocess.call([sys.executable, str(scripts[name])])
    return status
