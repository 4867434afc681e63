"""The pure parts of `scripts/bench/bench.py all`: the one table and the docs block replacement.

Hand-made result dicts only; nothing here runs a benchmark.
"""

import importlib.util
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[4] / "scripts" / "bench" / "bench_report.py"
_spec = importlib.util.spec_from_file_location("bench_report", _PATH)
report = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(report)


def _side(steps, tokens, rss, gpu=None):
    return {"steps_per_s": steps, "tokens_per_s": tokens, "peak_rss_mib": rss, "peak_gpu_mib": gpu}


def _result(name, ours, trl, unit="steps/s", baseline="TRL 1.16.0", **settings):
    memory, kind = report.memory_ratio(ours, trl)
    base = {"model": "builtin:tiny", "batch": 8, "max_length": 256, "steps": 30, "warmup_steps": 3, "repeats": 3}
    return {
        "comparison": name,
        "baseline": baseline,
        "unit": unit,
        "ours": ours,
        "trl": trl,
        "ratio": {
            "steps_per_s": report.ratio(ours["steps_per_s"], trl["steps_per_s"]),
            "tokens_per_s": report.ratio(ours["tokens_per_s"], trl["tokens_per_s"]),
            "peak_memory": memory,
            "memory": kind,
        },
        "settings": {**base, **settings},
    }


SFT = _result("sft", _side(81.10, 30144.0, 436.0), _side(61.21, 22680.0, 579.0))
RM = _result("rm", _side(77.59, 0.0, 437.0), _side(81.64, 0.0, 565.0))
DPO = _result("dpo-copy", _side(33.04, 13915.0, 470.0), _side(19.78, 8233.0, 604.0), reference="copy")
PPO = {
    **_result("ppo", _side(6.74, 100.0, 464.0), _side(1.41, 40.0, 553.0), unit="updates/s", baseline="TRL 1.12.0"),
    "settings": {
        "model": "builtin:tiny",
        "batch": 16,
        "response_length": 24,
        "epochs": 4,
        "mini_batches": 1,
        "steps": 12,
        "warmup_steps": 2,
        "repeats": 3,
    },
}


def _rows(table):
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in table.splitlines()]


def test_table_has_one_row_per_comparison_with_ratios_and_settings():
    rows = _rows(report.format_table([SFT, RM, DPO, PPO]))
    assert rows[0] == report.COLUMNS
    assert rows[1] == report.ALIGN
    sft, rm, dpo, ppo = rows[2:]
    assert sft[:8] == ["sft", "TRL 1.16.0", "steps/s", "81.10", "61.21", "x1.32", "x1.33", "x0.75 (RSS)"]
    assert sft[8] == "builtin:tiny, batch 8, max_length 256, 30 steps (3 warm-up), median of 3 repeats"
    assert rm[5:8] == ["x0.95", "-", "x0.77 (RSS)"]  # no tokens counted for the RM
    assert "reference copy" in dpo[8]
    assert ppo[:8] == ["ppo", "TRL 1.12.0", "updates/s", "6.740", "1.410", "x4.78", "x2.50", "x0.84 (RSS)"]
    assert ppo[8] == (
        "builtin:tiny, batch 16 prompts, response <= 24 tokens, 4 epochs x 1 mini-batch, "
        "12 steps (2 warm-up), median of 3 repeats"
    )


def test_gpu_memory_is_compared_when_both_sides_have_it():
    result = _result("sft", _side(2.0, 10.0, 3000.0, gpu=1000.0), _side(1.0, 5.0, 3000.0, gpu=2000.0))
    assert result["ratio"]["peak_memory"] == pytest.approx(0.5)
    assert _rows(report.format_table([result]))[2][7] == "x0.50 (GPU)"
    # One side without a GPU figure: fall back to RSS rather than mixing the two.
    assert report.memory_ratio(_side(1, 1, 300.0, gpu=10.0), _side(1, 1, 600.0)) == (0.5, "RSS")


def test_failed_comparison_is_a_row_and_quick_settings_say_one_repeat():
    quick = _result("sft", _side(10.0, 1.0, 1.0), _side(5.0, 1.0, 1.0), steps=6, repeats=1)
    rows = _rows(report.format_table([quick, {"comparison": "ppo", "error": "RuntimeError: trl run failed\nmore"}]))
    assert quick["settings"]["repeats"] == 1 and rows[2][8].endswith("6 steps (3 warm-up), 1 repeat")
    assert rows[3][:2] == ["ppo", "FAILED"]
    assert rows[3][8] == "RuntimeError: trl run failed"
    assert all(len(row) == len(report.COLUMNS) for row in rows)


def _block(body="TABLE", quick=False):
    return report.render_block(body, "some machine", "python scripts/bench/bench.py all", quick=quick)


DOC = (
    "# Benchmarks\n\nIntro line.\nSecond intro line.\n\n## SFT\n\nText | with | pipes.\n\n"
    "```\n## not a heading\n```\n\n## PPO\n\nEnd without newline"
)


def test_block_is_inserted_before_first_heading_when_absent():
    new = report.replace_block(DOC, _block())
    head = "# Benchmarks\n\nIntro line.\nSecond intro line.\n\n"
    assert new.startswith(head + report.START)
    assert new == head + _block() + "\n\n" + DOC[len(head) :]
    assert new.count(report.START) == new.count(report.END) == 1


def test_block_is_replaced_and_the_rest_kept_byte_for_byte():
    once = report.replace_block(DOC, _block("OLD TABLE"))
    twice = report.replace_block(once, _block("NEW TABLE"))
    assert "OLD TABLE" not in twice and "NEW TABLE" in twice
    before, after = once.split(report.START)[0], once.split(report.END)[1]
    assert twice == before + _block("NEW TABLE") + after
    # Replacing with the same block is a no-op.
    assert report.replace_block(twice, _block("NEW TABLE")) == twice


def test_block_placed_elsewhere_by_hand_is_replaced_where_it_is():
    doc = "# T\n\n## A\n\ntext\r\n" + _block("OLD") + "\r\ntail \u00e9\n"
    new = report.replace_block(doc, _block("NEW"))
    assert new == "# T\n\n## A\n\ntext\r\n" + _block("NEW") + "\r\ntail \u00e9\n"


def test_insert_into_file_without_headings_appends():
    assert report.replace_block("# Only a title", _block()) == "# Only a title\n\n" + _block() + "\n"
    assert report.replace_block("", _block()) == _block() + "\n"


def test_malformed_block_is_refused():
    with pytest.raises(ValueError):
        report.replace_block("x\n" + report.START + "\nno end\n", _block())
    with pytest.raises(ValueError):
        report.replace_block(report.END + "\n" + report.START + "\n", _block())


def test_quick_block_says_not_for_quoting():
    assert "do not quote" in _block(quick=True)
    assert "do not quote" not in _block(quick=False)
    block = _block(quick=True)
    assert block.startswith(report.START) and block.endswith(report.END)
    assert "python scripts/bench/bench.py all" in block and "some machine" in block


def test_machine_format():
    machine = {
        "cpu": "Some CPU",
        "cores": 2,
        "ram_gib": 23.6,
        "gpu": None,
        "python": "3.12.0",
        "torch": "2.13.0",
        "transformers": "5.23.0",
        "trl": "1.16.0",
        "date": "2025-01-01 00:00 UTC",
    }
    text = report.format_machine(machine, ppo_trl="1.12.0")
    assert text == (
        "Some CPU, 2 cores, 24 GiB RAM, GPU: none; Python 3.12.0, torch 2.13.0, transformers 5.23.0, "
        "trl 1.16.0 (trl 1.12.0 for PPO); 2025-01-01 00:00 UTC"
    )
    assert "GPU: NVIDIA H100" in report.format_machine({**machine, "gpu": "NVIDIA H100"})
