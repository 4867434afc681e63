"""Scores for sampled responses: a trained reward model, Python reward functions, or a weighted sum."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Sequence
from typing import Optional

import torch


def load_function(spec: str) -> Callable:
    """`package.module:function` -> the function (e.g. `preference_data.synthetic:judge`)."""
    module_name, sep, name = spec.partition(":")
    if not sep or not module_name or not name:
        raise ValueError(f"reward function {spec!r} must look like 'package.module:function'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ValueError(f"reward function {spec!r}: cannot import module {module_name!r} ({err})") from err
    function = getattr(module, name, None)
    if not callable(function):
        raise ValueError(f"reward function {spec!r}: module {module_name!r} has no function {name!r}")
    return function


def takes_record(function: Callable) -> bool:
    """Whether a reward function accepts the prompt record: a ``record`` parameter or ``**kwargs``
    (``f(prompt, response, record)``, for verifiable rewards that read ``record.metadata``)."""
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == "record" or p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)


def _function_source(function: Callable) -> Callable:
    """(prompts, responses, records) -> scores for a ``f(prompt, response[, record])``."""
    if takes_record(function):
        return lambda p, r, records: [float(function(a, b, record=c)) for a, b, c in zip(p, r, records)]
    return lambda p, r, records: [float(function(a, b)) for a, b in zip(p, r)]


class Scorer:
    """``score(prompts, responses[, records])`` -> [B] float32: the weighted sum of every configured source.

    The reward model reads the decoded text with its own tokenizer and template, so it need not
    share the policy's tokenizer; it is frozen, in eval mode, and never wrapped by the engine.
    """

    def __init__(
        self,
        model: Optional[str],
        functions: Sequence[str],
        weights: Sequence[float],
        *,
        normalize: bool = True,
        device=None,
        prepare: Optional[Callable] = None,
    ) -> None:
        """``prepare`` (e.g. ``Backend.prepare_frozen``) places the reward model for the engine."""
        self.sources: list[tuple[str, Callable]] = []
        if model:
            from reward_models.scorer import RewardModel

            reward_model = RewardModel.from_pretrained(model, device=device)
            if prepare is not None:
                reward_model.model = prepare(reward_model.model)
            self.sources.append(
                (f"reward_model:{model}", lambda p, r, _records: reward_model.score(p, r, normalize=normalize))
            )
        for spec in functions:
            self.sources.append((spec, _function_source(load_function(spec))))
        if not self.sources:
            raise ValueError("no reward: set reward.model and/or reward.functions")
        if weights and len(weights) != len(self.sources):
            raise ValueError(
                f"reward.weights has {len(weights)} entries for {len(self.sources)} sources "
                f"({', '.join(name for name, _ in self.sources)})"
            )
        self.weights = list(weights) if weights else [1.0] * len(self.sources)

    def score(self, prompts: Sequence, responses: Sequence[str], records: Optional[Sequence] = None) -> torch.Tensor:
        return self.combine(self.score_by_source(prompts, responses, records))

    def score_by_source(
        self, prompts: Sequence, responses: Sequence[str], records: Optional[Sequence] = None
    ) -> dict[str, torch.Tensor]:
        """Each source's unweighted scores [B] by its name ('reward_model:PATH' or 'module:function'),
        so that a bad score can be traced to the source that gave it. ``records`` [B] are the prompt
        records (with their metadata) for the functions that take one; None hands them None."""
        records = list(records) if records is not None else [None] * len(prompts)
        return {
            name: torch.tensor(source(list(prompts), list(responses), records), dtype=torch.float32)
            for name, source in self.sources
        }

    def combine(self, by_source: dict[str, torch.Tensor]) -> torch.Tensor:
        """The weighted sum [B] of :meth:`score_by_source`'s scores."""
        total = torch.zeros(len(next(iter(by_source.values()))))
        for weight, (name, _) in zip(self.weights, self.sources):
            total += weight * by_source[name]
        return total
