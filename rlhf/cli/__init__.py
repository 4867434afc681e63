"""The command-line faces: argument parsing, printing and exit codes for ``rlhf sft|rm|ppo|dpo|
pipeline|sweep|eval|export|chat|data|annotate``. Imported only by the console script and
``scripts/train.py``; the work itself lives in the packages below.
"""
