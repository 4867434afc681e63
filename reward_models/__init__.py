"""The reward model as a library: scalar head, losses, metrics, scorer, normalisation."""
