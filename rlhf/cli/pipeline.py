"""`rlhf pipeline --config configs/pipeline/<name>.yaml [key=value ...]`

Runs SFT -> reward model -> PPO and/or DPO from the SFT model, then evaluates the policies.
Run the same command again after an interruption: finished stages are skipped and the
interrupted one resumes from its newest checkpoint. Under several processes:

    accelerate launch --config_file configs/accelerate/zero2.yaml scripts/train.py pipeline \\
        --config configs/pipeline/tiny.yaml

Overrides address the pipeline's keys (``output_dir=...``, ``stages=[sft,dpo]``) or a stage's
keys through its section (``ppo.kl.coef=0.3``, ``sft.max_steps=100``).
"""

from __future__ import annotations

import argparse
import sys


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rlhf pipeline",
        description=__doc__.split("\n\n")[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Example: rlhf pipeline --config configs/pipeline/tiny.yaml ppo.kl.coef=0.3",
    )
    parser.add_argument("--config", "-c", help="pipeline YAML (see configs/pipeline/)")
    parser.add_argument("--help-config", action="store_true", help="list the pipeline's own keys with their docs")
    parser.add_argument("--dry-run", action="store_true", help="print what would run, skip and resume, then stop")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="override keys, e.g. dpo.dpo.beta=0.3")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from rlhf.cli.outcome import run_reporting
    from rlhf.config.loader import ConfigError, describe, load_config
    from rlhf.orchestration.pipeline import PipelineError, describe_plan, plan, run
    from rlhf.orchestration.pipeline_config import PipelineConfig

    if args.help_config:
        print(describe(PipelineConfig))
        print(
            "\nStage sections (sft, rm, ppo, dpo): config, from_sft, from_rm, plus any key of that stage "
            "(rlhf <stage> --help-config)."
        )
        return 0
    if not args.config and not args.overrides:
        _parser().print_usage(sys.stderr)
        print("rlhf pipeline: give --config configs/pipeline/<name>.yaml (and/or key=value overrides)", file=sys.stderr)
        return 2
    source = args.config or "command line"

    def work() -> None:
        cfg = load_config(PipelineConfig, args.config, args.overrides)
        if args.dry_run:
            print(describe_plan(plan(cfg, source)))
            return
        run(cfg, source)

    return run_reporting("pipeline", work, (ConfigError, PipelineError))


if __name__ == "__main__":
    sys.exit(main())
