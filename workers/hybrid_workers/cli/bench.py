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
    parser = subparsers.add_parser(
        "bench",
        help="run a benchmark script of bench/ (it prints its results as JSON)",
        description="Runs bench/<NAME>_bench.py, passing every argument after NAME through to it "
        "(e.g. `hybrid-inference bench engine --repeats 1 --out engine.json`; `bench engine --help` "
        "shows its own options). Without NAME, runs every benchmark with its defaults. Each script "
        "prints JSON on stdout and writes files only where you ask (--out, --plot); the numbers in "
        "docs/benchmarks.md were copied from such runs, with the machine's load.",
    )
    parser.add_argument("name", nargs="?", metavar="NAME", help="benchmark to run (default: all); see --list")
    parser.add_argument(
        "args", nargs=argparse.REMAINDER, metavar="ARG", help="passed to the benchmark script"
    )
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the chosen benchmark (or all of them), each in its own Python process; its exit status."""
    scripts = available()
    if not scripts:
        raise UserError(f"no benchmarks found in {BENCH_DIR}; `bench` needs a source checkout of the project")
    if args.list:
        print("\n".join(scripts))
        return 0
    if args.name is not None and args.name not in scripts:
        raise UserError(f"bench {args.name}: unknown benchmark; choose from {', '.join(scripts)}")
    if args.name is None and args.args:
        raise UserError(f"bench {' '.join(args.args)}: name the benchmark the arguments are for (see --list)")
    status = 0
    for name in [args.name] if args.name else list(scripts):
        print(f"== bench {name}: {scripts[name]} {' '.join(args.args)}".rstrip(), flush=True)
        status |= subprocess.call([sys.executable, str(scripts[name]), *args.args])
    return status
