"""Evaluation helpers: win rate with its interval, model folders, reward functions and the weighted
scorer, the per-response KL of `sample_with_kl` against an independent computation, and
`rlhf eval` / `run_eval` end to end on builtin:tiny (results, samples and PNG plots)."""

import copy
import json
import math
import sys
from pathlib import Path

import pytest
import torch
from helpers import load_tiny_lm, plain_response_logprobs, point_eos_along_mean_hidden

from rlhf.eval.metrics import sample_with_kl, win_rate
from rlhf.rollout.rewards import Scorer, load_function
from rlhf.rollout.sampling import SamplingConfig, sample

PROMPTS = [
    "Hi",
    "Write a short note about a red apple, please.",
    "What is the capital of France?",
    "ok",
    "Tell me about the blue car.",
]


pytestmark = pytest.mark.usefixtures("one_thread")


def approx(x):
    return pytest.approx(x, rel=1e-9, abs=1e-12)


# ---------- win_rate ----------


def test_win_rate_hand_computed():
    # outcomes per prompt: win, tie, loss, win, tie -> 1, 0.5, 0, 1, 0.5
    result = win_rate([3.0, 1.0, 2.0, 5.0, 0.0], [1.0, 1.0, 4.0, 2.0, 0.0])
    assert result["wins"] == approx(0.4)
    assert result["ties"] == approx(0.4)
    assert result["losses"] == approx(0.2)
    assert result["win_rate"] == approx(0.6)  # (2 + 2 * 0.5) / 5
    # sample variance: (0.4^2 + 0.1^2 + 0.6^2 + 0.4^2 + 0.1^2) / 4 = 0.70 / 4
    half = 1.96 * math.sqrt(0.70 / 4) / math.sqrt(5)
    assert half == pytest.approx(0.366683, abs=1e-6)
    assert result["ci95_low"] == approx(0.6 - half)
    assert result["ci95_high"] == approx(0.6 + half)


def test_win_rate_interval_is_clipped_to_unit_range():
    # outcomes 1, 1, 1, 0.5: mean 0.875, sample std 0.25, half-width 1.96 * 0.25 / 2 = 0.245
    high = win_rate([2, 2, 2, 1], [1, 1, 1, 1])
    assert high["win_rate"] == approx(0.875)
    assert high["ci95_low"] == approx(0.875 - 0.245)
    assert high["ci95_high"] == 1.0
    # the mirror image: outcomes 0, 0, 0, 0.5
    low = win_rate([1, 1, 1, 1], [2, 2, 2, 1])
    assert low["win_rate"] == approx(0.125)
    assert low["ci95_low"] == 0.0
    assert low["ci95_high"] == approx(0.125 + 0.245)
    assert (low["wins"], low["ties"], low["losses"]) == (0.0, 0.25, 0.75)


def test_win_rate_all_wins_has_a_zero_width_interval():
    result = win_rate([1.0, 2.0, 3.0], [0.0, 0.0, 0.0])
    assert result == {"win_rate": 1.0, "ci95_low": 1.0, "ci95_high": 1.0, "wins": 1.0, "ties": 0.0, "losses": 0.0}


@pytest.mark.parametrize("scores, baseline", [([1.0, 2.0], [1.0]), ([1.0], [1.0, 2.0]), ([], []), ([], [1.0])])
def test_win_rate_rejects_unequal_or_empty_lists(scores, baseline):
    with pytest.raises(ValueError, match=f"equally long, non-empty.*got {len(scores)} and {len(baseline)}"):
        win_rate(scores, baseline)


# ---------- rewards.load_function ----------


def test_load_function_good_spec():
    from preference_data.synthetic import judge

    assert load_function("preference_data.synthetic:judge") is judge


@pytest.mark.parametrize("spec", ["nocolon", ":judge", "preference_data.synthetic:"])
def test_load_function_malformed_spec(spec):
    with pytest.raises(ValueError, match=r"must look like 'package\.module:function'") as err:
        load_function(spec)
    assert repr(spec) in str(err.value)


def test_load_function_missing_module():
    with pytest.raises(ValueError, match=r"cannot import module 'no_such_module_for_rlhf_tests'"):
        load_function("no_such_module_for_rlhf_tests:f")


@pytest.mark.parametrize("name", ["no_such_function", "TARGET_WORDS"])
def test_load_function_missing_or_non_callable_attribute(name):
    with pytest.raises(ValueError, match=rf"module 'preference_data\.synthetic' has no function '{name}'"):
        load_function(f"preference_data.synthetic:{name}")


# ---------- rewards.Scorer ----------

REWARD_MODULE = "_rlhf_test_reward_functions"


@pytest.fixture
def reward_module(tmp_path, monkeypatch):
    (tmp_path / f"{REWARD_MODULE}.py").write_text(
        "def response_chars(prompt, response):\n"
        "    return len(response)\n"
        "\n"
        "def prompt_words(prompt, response):\n"
        "    return len(prompt.split())\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield REWARD_MODULE
    sys.modules.pop(REWARD_MODULE, None)


def test_scorer_weighted_sum(reward_module):
    specs = [f"{reward_module}:response_chars", f"{reward_module}:prompt_words"]
    scorer = Scorer(None, specs, [2, -1])
    prompts = ["a b c", "one", "x y"]
    responses = ["hello", "", "four"]
    # response_chars: 5, 0, 4; prompt_words: 3, 1, 2 -> 2 * chars - words
    scores = scorer.score(prompts, responses)
    assert scores.dtype == torch.float32
    assert scores.tolist() == [7.0, -1.0, 6.0]
    assert [name for name, _ in scorer.sources] == specs


def test_scorer_default_weights_are_ones(reward_module):
    scorer = Scorer("", [f"{reward_module}:response_chars", f"{reward_module}:prompt_words"], [])
    assert scorer.weights == [1.0, 1.0]
    assert scorer.score(("a b c", "one"), ("hello", "")).tolist() == [8.0, 1.0]


def test_scorer_wrong_number_of_weights(reward_module):
    specs = [f"{reward_module}:response_chars", f"{reward_module}:prompt_words"]
    with pytest.raises(ValueError, match=r"reward\.weights has 3 entries for 2 sources") as err:
        Scorer(None, specs, [1.0, 2.0, 3.0])
    assert all(spec in str(err.value) for spec in specs)


def test_scorer_without_sources():
    with pytest.raises(ValueError, match=r"no reward: set reward\.model and/or reward\.functions"):
        Scorer(None, [], [1.0])


def test_scorer_bad_function_spec_names_it():
    with pytest.raises(ValueError, match=r"'nocolon' must look like"):
        Scorer(None, ["nocolon"], [])


# ---------- sample_with_kl ----------


@pytest.fixture(scope="module")
def policy(tiny_tokenizer):
    """builtin:tiny with its EOS row pointed along the mean hidden state, so responses end at
    different lengths (some with EOS, some without)."""
    return point_eos_along_mean_hidden(load_tiny_lm(), tiny_tokenizer, PROMPTS)


@pytest.fixture(scope="module")
def reference(policy):
    ref = copy.deepcopy(policy)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        ref.lm_head.weight.add_(0.1 * torch.randn(ref.lm_head.weight.shape, generator=g))
    return ref.eval()


def plain_sequence_logps(model, samples, temperature):
    return [float(row.sum()) for row in plain_response_logprobs(model, samples, temperature)]


def test_sample_with_kl_same_model_is_zero(policy, tiny_tokenizer):
    cfg = SamplingConfig(max_new_tokens=8)
    result = sample_with_kl(policy, policy, tiny_tokenizer, PROMPTS, cfg, batch_size=2, seed=0)
    assert set(result) == {"texts", "kl", "length", "ended"}
    for key in ("texts", "kl", "length", "ended"):
        assert len(result[key]) == len(PROMPTS)
    assert all(abs(kl) < 1e-6 for kl in result["kl"])
    assert all(1 <= n <= 8 for n in result["length"])
    assert all(isinstance(e, bool) for e in result["ended"])
    assert any(n < 8 for n in result["length"])  # some responses ended early
    # A response that did not end runs to max_new_tokens; an ended one counts its EOS.
    assert all(n == 8 for n, e in zip(result["length"], result["ended"]) if not e)

    none = sample_with_kl(policy, None, tiny_tokenizer, PROMPTS, cfg, batch_size=2, seed=0)
    assert none["kl"] == [0.0] * len(PROMPTS)
    assert none["texts"] == result["texts"]  # same seed, same samples


@pytest.mark.parametrize(
    "cfg, kl_temperature",
    [
        (SamplingConfig(max_new_tokens=8, temperature=1.0), 1.0),
        (SamplingConfig(max_new_tokens=8, temperature=0.7), 0.7),
        (SamplingConfig(max_new_tokens=8, temperature=0.7, do_sample=False), 1.0),  # greedy: plain logits
    ],
)
def test_sample_with_kl_matches_independent_computation(policy, reference, tiny_tokenizer, cfg, kl_temperature):
    seed = 7
    result = sample_with_kl(policy, reference, tiny_tokenizer, PROMPTS, cfg, batch_size=len(PROMPTS), seed=seed)
    # One batch: the same samples as a direct call with the same seed.
    samples = sample(policy, tiny_tokenizer, PROMPTS, cfg, generator_seed=seed)
    assert result["texts"] == samples.texts
    assert result["length"] == samples.response_mask.sum(-1).tolist()
    assert result["ended"] == samples.ended.tolist()

    logp = plain_sequence_logps(policy, samples, kl_temperature)
    ref = plain_sequence_logps(reference, samples, kl_temperature)
    expected = [a - b for a, b in zip(logp, ref)]
    assert result["kl"] == pytest.approx(expected, abs=1e-3)
    assert all(math.isfinite(k) for k in result["kl"])
    assert any(abs(k) > 1e-2 for k in result["kl"])  # the perturbation is really visible


# ---------- rlhf eval (CLI) and run_eval ----------

EVAL_PROMPTS = "builtin:judged-prompts?n=4&seed=1"


@pytest.fixture(scope="module")
def eos_policy_folder(policy, tiny_tokenizer, tmp_path_factory):
    """The EOS-pointed tiny model as a model folder: a second policy that differs from builtin:tiny."""
    folder = tmp_path_factory.mktemp("eos-policy")
    policy.save_pretrained(folder)
    tiny_tokenizer.save_pretrained(folder)
    return str(folder)


def assert_png(path):
    import matplotlib.image

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert matplotlib.image.imread(path).ndim == 3


def test_eval_cli_writes_results_and_plots(eos_policy_folder, tmp_path, capsys):
    from rlhf.cli.main import main

    out = tmp_path / "eval"
    argv = [
        "eval",
        "--policy",
        "base=builtin:tiny",
        "--policy",
        f"eos={eos_policy_folder}",
        "--judge",
        "preference_data.synthetic:judge",
        "--prompts",
        EVAL_PROMPTS,
        "--max-new-tokens",
        "6",
        "--batch-size",
        "2",
        "--device",
        "cpu",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    for name in ("results.json", "results.md", "samples.jsonl", "scores.png", "win_rates.png", "kl_length.png"):
        assert (out / name).is_file(), name
    for name in ("scores.png", "win_rates.png", "kl_length.png"):
        assert_png(out / name)
        assert str(out / name) in printed
    results = json.loads((out / "results.json").read_text())
    assert (results["baseline"], results["reference"], results["device"]) == ("base", "builtin:tiny", "cpu")
    assert results["n_prompts"] == 4 and results["batch_size"] == 2 and "plots" not in results
    base, eos = results["policies"]["base"], results["policies"]["eos"]
    assert base["kl"] == pytest.approx(0.0, abs=1e-5) and "win_rate" not in base
    assert abs(eos["kl"]) > 1e-3  # the EOS row differs from the reference's
    assert 0.0 <= eos["win_rate"] <= 1.0 and eos["wins"] + eos["ties"] + eos["losses"] == pytest.approx(1.0)
    assert len((out / "samples.jsonl").read_text().splitlines()) == 2 * 4


def test_run_eval_with_keyword_arguments(tmp_path):
    from rlhf.eval.run import run_eval

    out = tmp_path / "eval"
    results = run_eval(
        {"tiny": "builtin:tiny"},
        out=str(out),
        judge="helpers:constant_reward",
        prompts=EVAL_PROMPTS,
        seeds=(3,),
        max_new_tokens=4,
        device="auto",
    )
    assert results["seeds"] == [3] and results["win_metric"] == "judge"
    row = results["policies"]["tiny"]
    assert row["judge"] == 7.0 and row["judge_seed_std"] == 0.0 and "win_rate" not in row
    # a single policy has no win rate: that plot is skipped
    assert results["plots"] == [str(out / "scores.png"), str(out / "kl_length.png")]
    for path in results["plots"]:
        assert_png(Path(path))
    assert not (out / "win_rates.png").exists()
    written = json.loads((out / "results.json").read_text())
    assert written == {k: v for k, v in results.items() if k != "plots"}


def test_eval_bad_device(tmp_path, capsys):
    from rlhf.cli.eval import main
    from rlhf.eval.run import run_eval

    with pytest.raises(ValueError, match="unknown device 'gpu'"):
        run_eval({"tiny": "builtin:tiny"}, out=str(tmp_path), judge="helpers:constant_reward", device="gpu")
    with pytest.raises(SystemExit):
        main(
            [
                "--policy",
                "a=builtin:tiny",
                "--judge",
                "helpers:constant_reward",
                "--device",
                "gpu",
                "--out",
                str(tmp_path),
            ]
        )
    if not torch.cuda.is_available():
        assert (
            main(
                [
                    "--policy",
                    "a=builtin:tiny",
                    "--judge",
                    "helpers:constant_reward",
                    "--device",
                    "cuda",
                    "--out",
                    str(tmp_path),
                ]
            )
            == 2
        )
        assert "no CUDA device" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # nothing written on bad arguments
