"""The ``rlhf`` command: ``rlhf sft|rm|ppo|dpo|pipeline|sweep|eval|export|chat|data ...``.

``accelerate launch scripts/train.py <stage> ...`` calls :func:`main` too, so both faces run
the same code. Stage modules are imported only when their command runs.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from rlhf.stages.registry import STAGES, config_class, run_function

DESCRIPTIONS = {
    "pipeline": "run SFT -> RM -> PPO and/or DPO in one command",
    "data": "validate, convert, split and inspect preference data",
    "eval": "compare policies on held-out prompts: judge / reward, win rate, KL",
    "sweep": "grid or random search over config keys of a stage or pipeline, with a results table",
    "export": "write a run's model as a merged save_pretrained folder (LoRA folded in)",
    "chat": "talk to a model folder in the terminal",
    "annotate": "preference annotation: sample tasks, annotator tokens, serve the ranking page, export",
}
# commands with their own argument parser: name -> module with main(argv)
TOOLS = {
    "pipeline": "rlhf.cli.pipeline",
    "sweep": "rlhf.cli.sweep",
    "eval": "rlhf.cli.eval",
    "export": "rlhf.cli.export",
    "chat": "rlhf.cli.chat",
    "annotate": "rlhf.cli.annotate",
    "data": "rlhf.cli.data",
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rlhf",
        description="RLHF alignment training: SFT, reward models, PPO and DPO on one backend.",
        epilog="Example: rlhf sft --config configs/sft/tiny.yaml max_steps=20 optim.lr=3e-4",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, entry in STAGES.items():
        help_text = entry.description
        stage = sub.add_parser(name, help=help_text, description=help_text)
        stage.add_argument("--config", "-c", help="YAML config file (see configs/)")
        stage.add_argument("--help-config", action="store_true", help="list every config key with its doc")
        stage.add_argument("overrides", nargs="*", metavar="key=value", help="override config keys, e.g. optim.lr=1e-4")
    for name in TOOLS:
        tool = sub.add_parser(name, help=DESCRIPTIONS[name], add_help=False)
        tool.add_argument("args", nargs=argparse.REMAINDER)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] and argv[0] in TOOLS:  # their own parsers, so that `rlhf data --help` reaches them
        return importlib.import_module(TOOLS[argv[0]]).main(argv[1:])
    args = _parser().parse_args(argv)
    if args.command is None:
        _parser().print_help()
        return 0
    from rlhf.config.loader import ConfigError, describe, load_config

    stage_config = config_class(args.command)
    if args.help_config:
        print(describe(stage_config))
        return 0
    from rlhf.models.loading import check_model_path

    try:
        cfg = load_config(stage_config, args.config, args.overrides)
        check_model_path(cfg.model.name_or_path)
    except (ConfigError, OSError) as err:  # OSError: a model folder that does not exist
        print(f"rlhf {args.command}: {err}", file=sys.stderr)
        return 2
    from rlhf.cli.outcome import run_reporting

    # ConfigError: a choice the engine of this launch cannot honour (known at start)
    return run_reporting(args.command, lambda: run_function(args.command)(cfg), (ConfigError,))


if __name__ == "__main__":
    sys.exit(main())
