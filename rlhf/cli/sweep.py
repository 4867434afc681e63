"""`rlhf sweep --config <sweep.yaml> [key=value ...]`: grid or random search over config keys.

    rlhf sweep --config configs/sweep/frontier-tiny.yaml

Trials of a stage or of a pipeline run one after another; the same command again skips the
finished trials. Writes results.md (the best trial in bold), sweep.json and, for pipelines
whose evaluation reports KL and a score, frontier.png.
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rlhf sweep", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", "-c", help="sweep YAML (see configs/sweep/)")
    parser.add_argument("--help-config", action="store_true", help="list the sweep's keys with their docs")
    parser.add_argument("--list", action="store_true", help="print the trials' parameters and stop")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="override sweep keys, e.g. trials=4")
    args = parser.parse_args(argv)
    from rlhf.cli.outcome import run_reporting
    from rlhf.config.loader import ConfigError, describe, load_config
    from rlhf.orchestration.pipeline import PipelineError
    from rlhf.orchestration.sweep import SweepConfig, run, trial_params

    if args.help_config:
        print(describe(SweepConfig))
        return 0
    if not args.config:
        parser.print_usage(sys.stderr)
        print("rlhf sweep: give --config <sweep.yaml>", file=sys.stderr)
        return 2

    def work() -> None:
        cfg = load_config(SweepConfig, args.config, args.overrides)
        if args.list:
            for number, params in enumerate(trial_params(cfg)):
                print(f"trial-{number:03d}: {params}")
            return
        run(cfg)

    return run_reporting("sweep", work, (ConfigError, PipelineError))


if __name__ == "__main__":
    sys.exit(main())
