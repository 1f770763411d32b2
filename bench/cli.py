"""CLI start-up: wall time of `custodes --version`, `--help`, `guest get-resource --help` and
`run --help`, each as a ratio to `python -c pass` measured in the same run.

Every figure is the median of --repeat runs of a fresh interpreter (the same one that runs
this script), so the ratio is what custodes adds on top of starting Python at all.

Usage: .venv/bin/python bench/cli.py [--repeat 15]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

CASES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("python -c pass (floor)", ("-c", "pass")),
    ("custodes --version", ("-m", "custodes", "--version")),
    ("custodes --help", ("-m", "custodes", "--help")),
    ("custodes guest get-resource --help", ("-m", "custodes", "guest", "get-resource", "--help")),
    ("custodes run --help", ("-m", "custodes", "run", "--help")),
)


def one_run(arguments: tuple[str, ...]) -> float:
    """Milliseconds from spawning the interpreter to its exit."""
    t0 = time.perf_counter()
    subprocess.run(
        [sys.executable, *arguments],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return (time.perf_counter() - t0) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=15, help="runs per case (median)")
    args = parser.parse_args()
    # Interleave the cases so that load on the machine affects all of them alike.
    samples: dict[str, list[float]] = {name: [] for name, _ in CASES}
    for _, arguments in CASES:
        one_run(arguments)  # warm the page cache and .pyc files
    for _ in range(args.repeat):
        for name, arguments in CASES:
            samples[name].append(one_run(arguments))
    floor = statistics.median(samples[CASES[0][0]])
    print(f"| command | median ms | ratio to `python -c pass` |  (median of {args.repeat})")
    print("|---|---:|---:|")
    for name, _ in CASES:
        median = statistics.median(samples[name])
        print(f"| `{name}` | {median:.1f} | {median / floor:.2f} |")


if __name__ == "__main__":
    main()
