"""Pure tensor math: masking ops, the SFT / DPO-family / PPO losses, advantage estimators
and KL estimators and controllers. Torch only: no transformers, peft, accelerate, deepspeed or wandb;
every function takes tensors whose shapes its docstring gives, mutates none of them and returns
detached metrics beside a loss.
"""
