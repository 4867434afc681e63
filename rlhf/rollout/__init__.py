"""Generation for RL and evaluation: prompt rendering, sampling with exact temperature, EOS
truncation and the ``Samples`` they produce, the actor-critic forward pass and the reward sources
(reward model, judge, Python functions) that score samples.
"""
