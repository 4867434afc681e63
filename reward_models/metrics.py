"""Evaluation metrics for reward models. Inputs are tensors, lists or arrays; outputs plain Python
numbers. A metric that is undefined for its input (no pairs at all) is ``nan``, never an error;
chosen / rejected of different lengths are an error.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Sequence
from typing import Any

import torch


def pairwise_accuracy(chosen: Any, rejected: Any) -> float:
    """Fraction of pairs where the chosen response scores strictly higher (a tie is wrong).

    Args:
        chosen: [N] rewards of the chosen responses.
        rejected: [N] rewards of the rejected responses.
    """
    chosen, rejected = _pairs(chosen, rejected)
    if chosen.numel() == 0:
        return math.nan
    return float((chosen > rejected).double().mean())


def precision_recall_f1(chosen: Any, rejected: Any, *, seed: int = 0) -> dict[str, float]:
    """ "The chosen response scores higher" as a binary classification task.

    A pair has no negative class by itself, so each pair is shown in a canonical pseudo-random
    order: pair n puts the chosen response first when the n-th draw of ``random.Random(seed)``
    is below 1/2 (deterministic for a seed and N; see :func:`presentation_order`). Then

        label      = the first response is the chosen one   (positive class)
        prediction = the first response scores strictly higher

    and precision, recall, F1 and accuracy follow as usual (0 where a denominator is 0). Without
    ties, ``accuracy`` equals :func:`pairwise_accuracy`; a tied pair is predicted negative, so
    it is a false negative when the chosen response is shown first and a true negative otherwise.

    Args:
        chosen: [N] rewards of the chosen responses.
        rejected: [N] rewards of the rejected responses.
        seed: seed of the presentation order.
    Returns:
        ``precision``, ``recall``, ``f1``, ``accuracy`` (all ``nan`` when N = 0).
    """
    chosen, rejected = _pairs(chosen, rejected)
    n = chosen.numel()
    if n == 0:
        return {"precision": math.nan, "recall": math.nan, "f1": math.nan, "accuracy": math.nan}
    chosen_first = torch.tensor(presentation_order(n, seed=seed), dtype=torch.bool)
    first = torch.where(chosen_first, chosen, rejected)
    second = torch.where(chosen_first, rejected, chosen)
    predicted = first > second
    tp = int((predicted & chosen_first).sum())
    fp = int((predicted & ~chosen_first).sum())
    fn = int((~predicted & chosen_first).sum())
    tn = n - tp - fp - fn
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "accuracy": (tp + tn) / n}


def presentation_order(num_pairs: int, *, seed: int = 0) -> list[bool]:
    """For each pair, whether :func:`precision_recall_f1` shows the chosen response first.

    Uses the stdlib generator (stable across Python and torch versions); pair n's side depends
    only on the seed and n, so a longer evaluation set keeps the sides of the shorter one.
    """
    rng = random.Random(seed)
    return [rng.random() < 0.5 for _ in range(num_pairs)]


def kendall_tau(scores: Any, ranks: Any) -> float:
    """Kendall's tau-b between a prompt's reward scores and its human ranking.

    Ranks are negated (rank 0 = best), so 1.0 means the scores order the responses exactly as
    the annotators did and -1.0 exactly backwards. Ties on either side are handled by tau-b:
    ``(concordant - discordant) / sqrt((n0 - ties_scores) * (n0 - ties_ranks))`` with
    n0 = K (K - 1) / 2. ``nan`` when undefined (K < 2, or all scores or all ranks tied), as
    scipy.stats.kendalltau.

    Args:
        scores: [K] rewards of one prompt's responses.
        ranks: [K] their ranks, 0 = best, equal = tie.
    """
    scores, ranks = _vector(scores), _vector(ranks)
    if scores.numel() != ranks.numel():
        raise ValueError(f"scores and ranks differ in length: {scores.numel()} vs {ranks.numel()}")
    k = scores.numel()
    if k < 2:
        return math.nan
    # Replaces: for i < j: s = sign(score_i - score_j); r = sign(rank_j - rank_i); sum s * r,
    # counting s == 0 and r == 0 as ties. The upper triangle of [K, K] sign matrices.
    upper = torch.triu(torch.ones(k, k, dtype=torch.bool), diagonal=1)
    score_sign = torch.sign(scores.unsqueeze(1) - scores.unsqueeze(0))[upper]
    rank_sign = torch.sign(ranks.unsqueeze(0) - ranks.unsqueeze(1))[upper]
    n0 = k * (k - 1) / 2
    score_ties = float((score_sign == 0).sum())
    rank_ties = float((rank_sign == 0).sum())
    denominator = math.sqrt((n0 - score_ties) * (n0 - rank_ties))
    if denominator == 0:
        return math.nan
    return float((score_sign * rank_sign).sum()) / denominator


def mean_kendall_tau(items: Iterable[tuple[Any, Any]]) -> float:
    """Mean of :func:`kendall_tau` over prompts ``[(scores, ranks), ...]``.

    Prompts whose ranking has no pair (fewer than 2 responses, or all ranks tied) are skipped:
    there is nothing to agree with. A prompt with pairs whose scores are all equal counts as
    0.0 (tau-b is 0 / 0 there; the model ordered nothing, which must not be skipped and flatter
    it). ``nan`` when no prompt has a pair.
    """
    taus = []
    for scores, ranks in items:
        ranks_vector = _vector(ranks)
        if ranks_vector.numel() < 2 or bool((ranks_vector == ranks_vector[0]).all()):
            continue
        tau = kendall_tau(scores, ranks_vector)
        taus.append(0.0 if math.isnan(tau) else tau)
    return sum(taus) / len(taus) if taus else math.nan


def calibration_table(chosen: Any, rejected: Any, bins: int = 10) -> list[dict[str, float]]:
    """Reliability table of the Bradley-Terry probability ``p = sigmoid(r_chosen - r_rejected)``.

    Every labelled pair's outcome is "chosen wins", so binning p itself against the outcome
    would compare every bin with 1.0. The table instead bins the model's confidence in the
    response it prefers, ``max(p, 1 - p)`` in [0.5, 1], into ``bins`` equal-width bins, and
    compares it with how often that preference agrees with the annotators (p > 1/2; an exact
    p = 1/2 counts as half right, as a coin flip would). A calibrated model has accuracy close
    to confidence in every bin. Equivalent to the usual reliability diagram over p with each
    pair shown in both orders (the [0, 0.5] half mirrors this one).

    Args:
        chosen: [N] rewards of the chosen responses.
        rejected: [N] rewards of the rejected responses.
        bins: number of bins over [0.5, 1]; the last includes 1.0.
    Returns:
        One dict per bin, in order: ``lower``, ``upper`` (bin edges), ``count`` (int),
        ``mean_confidence`` (mean max(p, 1 - p) in the bin) and ``accuracy``; the last two are
        ``nan`` for an empty bin.
    """
    if bins < 1:
        raise ValueError(f"bins must be >= 1; got {bins}")
    chosen, rejected = _pairs(chosen, rejected)
    p = torch.sigmoid(chosen - rejected)
    confidence = torch.maximum(p, 1 - p)
    correct = torch.where(p > 0.5, 1.0, torch.where(p < 0.5, 0.0, 0.5)).double()
    # (confidence - 0.5) * 2 * bins is exact at the edges k / (2 * bins) for small bins.
    index = ((confidence - 0.5) * (2 * bins)).floor().long().clamp(0, bins - 1)
    table = []
    for b in range(bins):
        in_bin = index == b
        count = int(in_bin.sum())
        table.append(
            {
                "lower": 0.5 + b / (2 * bins),
                "upper": 0.5 + (b + 1) / (2 * bins),
                "count": count,
                "mean_confidence": float(confidence[in_bin].mean()) if count else math.nan,
                "accuracy": float(correct[in_bin].mean()) if count else math.nan,
            }
        )
    return table


def expected_calibration_error(table: Sequence[dict[str, float]]) -> float:
    """Count-weighted mean of ``|accuracy - mean_confidence|`` over the bins of
    :func:`calibration_table` (empty bins ignored); ``nan`` when every bin is empty."""
    total = sum(row["count"] for row in table)
    if total == 0:
        return math.nan
    gap = sum(row["count"] * abs(row["accuracy"] - row["mean_confidence"]) for row in table if row["count"])
    return gap / total


def reward_summary(chosen: Any, rejected: Any) -> dict[str, float]:
    """``chosen_mean``, ``rejected_mean`` and ``margin_mean`` (of r_chosen - r_rejected);
    ``nan`` when there are no pairs.

    Args:
        chosen: [N] rewards of the chosen responses.
        rejected: [N] rewards of the rejected responses.
    """
    chosen, rejected = _pairs(chosen, rejected)
    if chosen.numel() == 0:
        return {"chosen_mean": math.nan, "rejected_mean": math.nan, "margin_mean": math.nan}
    return {
        "chosen_mean": float(chosen.mean()),
        "rejected_mean": float(rejected.mean()),
        "margin_mean": float((chosen - rejected).mean()),
    }


def _vector(values: Any) -> torch.Tensor:
    """A flat float64 CPU copy of a tensor, list or array (never a view of the caller's data
    that is written to)."""
    if isinstance(values, torch.Tensor):
        return values.detach().to("cpu", torch.float64).reshape(-1)
    return torch.as_tensor(values, dtype=torch.float64).reshape(-1)


def _pairs(chosen: Any, rejected: Any) -> tuple[torch.Tensor, torch.Tensor]:
    chosen, rejected = _vector(chosen), _vector(rejected)
    if chosen.numel() != rejected.numel():
        raise ValueError(f"chosen and rejected differ in length: {chosen.numel()} vs {rejected.numel()}")
    return chosen, rejected
