"""Stages in order: ``rlhf pipeline`` (plan, skip finished stages, resume interrupted ones, hand
one stage's model to the next, evaluate) and ``rlhf sweep`` (grid or random search over config
keys, with a results table and a frontier plot). Calls stages through their registry only.
"""
