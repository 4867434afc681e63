"""RLHF alignment training: SFT, reward models, PPO and DPO on one backend.

Kept thin on purpose: importing ``rlhf`` pulls in no stage, no deepspeed and no wandb.
"""

__version__ = "0.1.0"
