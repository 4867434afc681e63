"""Entry point for distributed launches; all logic lives in rlhf.cli.main.

accelerate launch --config_file configs/accelerate/zero2.yaml scripts/train.py sft --config configs/sft/tiny.yaml
"""

import sys

from rlhf.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
