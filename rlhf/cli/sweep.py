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
    from rlhf.config.loader import ConfigError, describe, load_config
    from rlhf.orchestration.pipeline import PipelineError
    from rlhf.orchestration.sweep import SweepConfig, run, trial_params
    from rlhf.stages.stopped import RunStopped

    if args.help_config:
        print(describe(SweepConfig))
        return 0
    if not args.config:
        parser.print_usage(sys.stderr)
        print("rlhf sweep: give --config <sweep.yaml>", file=sys.stderr)
        return 2
    try:
        cfg = load_config(SweepConfig, args.config, args.overrides)
        if args.list:
            for number, params in enumerate(trial_params(cfg)):
                print(f"trial-{number:03d}: {params}")
            return 0
        run(cfg)
    except RunStopped as stopped:  # a trial's stage stopped on a non-finite value; later trials do not run
        from rlhf.runtime.backend import launched_as_main

        if launched_as_main():
            print(f"rlhf sweep: stage {stopped.stage} {stopped}", file=sys.stderr)
        return RunStopped.EXIT_CODE
    except (ConfigError, PipelineError) as err:
        print(f"rlhf sweep: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
