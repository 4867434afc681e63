"""`python -m rlhf.cli.reference [--check]`: write (or check) the key reference in docs/reference/.

One page per stage config (from the stage registry) plus the pipeline and sweep configs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rlhf.config.reference import Pages, stale_files, write_reference
from rlhf.stages.registry import STAGES

DEFAULT_OUT = Path(__file__).resolve().parents[2] / "docs" / "reference"
PAGES: Pages = [(stage.name, f"{stage.module}:{stage.config}") for stage in STAGES.values()] + [
    ("pipeline", "rlhf.orchestration.pipeline_config:PipelineConfig"),
    ("sweep", "rlhf.orchestration.sweep:SweepConfig"),
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rlhf.cli.reference", description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the pages differ from the dataclasses")
    parser.add_argument("--out", default=str(DEFAULT_OUT), help=f"output folder (default {DEFAULT_OUT})")
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_files(PAGES, args.out)
        if stale:
            print("stale config reference pages; run `python -m rlhf.cli.reference`:", file=sys.stderr)
            for line in stale:
                print(f"  {line}", file=sys.stderr)
            return 1
        return 0
    for path in write_reference(PAGES, args.out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
