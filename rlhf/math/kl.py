"""KL between the policy and the reference: per-token estimators and the KL coefficient controllers.

Pure torch (the controllers are plain Python); inputs are never modified.
"""

from __future__ import annotations

import torch

KL_ESTIMATORS = ("k1", "k3", "abs", "mse")
KL_CONTROLLER_KINDS = ("fixed", "adaptive")


def kl_penalty(
    logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    estimator: str = "k1",
    *,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-token estimate of KL(policy || reference) from tokens sampled from the policy.

    With ``d = logp - logp_ref`` (Schulman, "Approximating KL divergence", 2020):

    - ``"k1"``: ``d``. Unbiased, high variance, can be negative per token; the classic RLHF
      per-token penalty (reward ``-beta * k1``).
    - ``"k3"``: ``(exp(r) - 1) - r`` with ``r = logp_ref - logp = -d``. Unbiased, never
      negative, lower variance; good for logging.
    - ``"abs"``: ``|d|``. Biased; non-negative.
    - ``"mse"``: ``0.5 * d**2`` (k2). Biased, non-negative, low variance.

    Pass ``mask`` wherever entries outside it may hold anything (the policy's log-probs of the
    pad tokens after EOS, hugely negative at a low temperature): the difference is zeroed there
    *before* the estimator, so ``exp`` cannot overflow to inf and give NaN in the loss or, through
    the backward pass, in the gradient (multiplying the result by the mask afterwards does not
    help: inf * 0 is NaN).

    Args:
        logprobs: [B, T] policy log-probs of the sampled tokens.
        ref_logprobs: [B, T] reference-model log-probs of the same tokens.
        estimator: one of ``KL_ESTIMATORS``.
        mask: [B, T] bool or 0/1, true at the valid tokens; None takes every entry as valid.
    Returns:
        [B, T] per-token estimates, in the promoted dtype of the inputs; 0 outside ``mask``.
    Raises:
        ValueError: for an unknown estimator.
    """
    if estimator not in KL_ESTIMATORS:
        raise ValueError(f"unknown KL estimator {estimator!r}; valid choices: {', '.join(KL_ESTIMATORS)}")
    diff = logprobs - ref_logprobs
    if mask is not None:
        diff = torch.where(mask.bool(), diff, torch.zeros_like(diff))
    if estimator == "k1":
        return diff
    if estimator == "k3":
        r = -diff
        # expm1 keeps the small-r regime (policy close to reference) free of cancellation error.
        return torch.expm1(r) - r
    if estimator == "abs":
        return diff.abs()
    return 0.5 * diff * diff


class FixedKLController:
    """A constant KL coefficient beta; ``update`` does nothing.

    Args:
        value: the coefficient (>= 0).
    """

    def __init__(self, value: float):
        if value < 0:
            raise ValueError(f"KL coefficient must be >= 0, got {value}")
        self.value = float(value)

    def update(self, current_kl: float | torch.Tensor, n_steps: int) -> float:
        """No-op, for the same interface as the adaptive controller. Returns ``self.value``."""
        return self.value

    def state_dict(self) -> dict[str, float]:
        """``{"value": float}``: plain floats, safe for a ``weights_only`` checkpoint."""
        return {"value": self.value}

    def load_state_dict(self, state: dict[str, float]) -> None:
        """Restore the coefficient saved by ``state_dict``."""
        self.value = float(state["value"])


class AdaptiveKLController:
    """KL coefficient steered towards a target KL (Ziegler et al. 2019, "Fine-Tuning Language
    Models from Human Preferences", Sec. 2.2)::

        e_t  = clip(KL_t / target - 1, -0.2, 0.2)
        beta_{t+1} = beta_t * (1 + e_t * n_steps / horizon)

    The clip bounds how fast beta moves when the KL is far from the target; ``horizon`` sets the
    time scale, in the same unit as ``n_steps`` (the paper counts samples: pass the number of
    rollouts in the batch that produced ``current_kl``).

    Args:
        init_kl_coef: starting beta (> 0; a zero beta could never grow).
        target: KL to steer towards, in the unit ``current_kl`` is measured in (e.g. nats per
            sequence) (> 0).
        horizon: time scale of the adaptation (> 0).
    """

    PROPORTIONAL_ERROR_CLIP = 0.2

    def __init__(self, init_kl_coef: float, target: float, horizon: float):
        if init_kl_coef <= 0:
            raise ValueError(f"init_kl_coef must be > 0 for the adaptive controller, got {init_kl_coef}")
        if target <= 0:
            raise ValueError(f"KL target must be > 0, got {target}")
        if horizon <= 0:
            raise ValueError(f"KL horizon must be > 0, got {horizon}")
        self.value = float(init_kl_coef)
        self.target = float(target)
        self.horizon = float(horizon)

    def update(self, current_kl: float | torch.Tensor, n_steps: int) -> float:
        """Move the coefficient by the rule above and return the new value.

        Args:
            current_kl: scalar (float or 0-d tensor), the KL measured on the last batch.
            n_steps: how many steps (samples) that batch counts for.
        Raises:
            ValueError: if ``n_steps / horizon`` is so large that the factor could reach 0.
        """
        clip = self.PROPORTIONAL_ERROR_CLIP
        if clip * n_steps / self.horizon >= 1.0:
            raise ValueError(
                f"n_steps / horizon = {n_steps}/{self.horizon:g} is too large: the KL coefficient "
                f"could change sign; use a horizon above {clip * n_steps:g}"
            )
        proportional_error = min(max(float(current_kl) / self.target - 1.0, -clip), clip)
        self.value *= 1.0 + proportional_error * n_steps / self.horizon
        return self.value

    def state_dict(self) -> dict[str, float]:
        """``{"value": float}``: the coefficient reached. Target and horizon are configuration
        and come from the (possibly changed) config of the resumed run."""
        return {"value": self.value}

    def load_state_dict(self, state: dict[str, float]) -> None:
        """Restore the coefficient saved by ``state_dict``."""
        self.value = float(state["value"])


def make_kl_controller(
    kind: str, coef: float, target: float | None = None, horizon: float | None = None
) -> FixedKLController | AdaptiveKLController:
    """Build the KL controller a config names.

    Args:
        kind: ``"fixed"`` or ``"adaptive"``.
        coef: the (initial) coefficient beta.
        target: target KL; required for ``"adaptive"``, ignored for ``"fixed"``.
        horizon: adaptation horizon; required for ``"adaptive"``, ignored for ``"fixed"``.
    Raises:
        ValueError: for an unknown kind, or an adaptive one without target / horizon.
    """
    if kind == "fixed":
        return FixedKLController(coef)
    if kind == "adaptive":
        if target is None or horizon is None:
            raise ValueError("the adaptive KL controller needs both a target and a horizon")
        return AdaptiveKLController(coef, target, horizon)
    raise ValueError(f"unknown KL controller kind {kind!r}; valid choices: {', '.join(KL_CONTROLLER_KINDS)}")
