"""Evaluation of policies: judge / reward-model scores, win rates with confidence intervals, KL to
a reference on the policy's own samples, the evaluation run that writes results.json /
results.md, and its PNG plots.
"""
