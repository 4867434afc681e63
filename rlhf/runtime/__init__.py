"""The one training runtime: accelerate and DeepSpeed (engine set-up, ZeRO-3 gathering, device
placement, process groups and collectives), checkpoints, optimiser and schedule, and the
tracker (wandb, metrics.jsonl, plots). The only package that imports accelerate, deepspeed or
wandb; stages call it and never branch on the engine.
"""
