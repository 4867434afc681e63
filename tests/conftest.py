"""Shared fixtures: an isolated model cache, wandb offline, tiny SFT runs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session", autouse=True)
def _isolated_env(tmp_path_factory):
    # Built-in models are cached across tests of one session (and across sessions in CI's
    # cache folder when RLHF_CACHE is set by the Makefile); wandb never opens a connection.
    os.environ.setdefault("RLHF_CACHE", str(tmp_path_factory.mktemp("rlhf-cache")))
    os.environ["WANDB_MODE"] = "disabled"
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(REPO / ".cache" / "torch_extensions"))
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    yield


@pytest.fixture(scope="session")
def tiny_tokenizer():
    from rlhf.config.sections import ModelConfig
    from rlhf.models.loading import load_tokenizer

    return load_tokenizer(ModelConfig(name_or_path="builtin:tiny"))


@pytest.fixture(scope="session")
def tiny_model_path():
    from rlhf.models.loading import resolve_model_path

    return resolve_model_path("builtin:tiny")


@pytest.fixture(scope="module")
def one_thread():
    """For modules of tiny models: one thread is as fast, and far faster when other jobs share the
    cores. Use with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
