"""Build a tiny Llama model + byte-level BPE tokenizer on local disk, for live vLLM tests.

No model hub is reachable, so the live path serves a model built here in seconds:
a byte-level BPE tokenizer (about 2,048 tokens) trained on a bounded, deterministic sample
of the Python standard library's own ``.py`` files, and a 2-layer ``LlamaForCausalLM`` with
seeded random bf16 weights (about 2 MB). Its output is gibberish; the live tests only need
exact token counts (prompts as token-ID lists, ``ignore_eos``) and real serving latency.

Run with a Python that has torch, transformers and tokenizers (the vLLM venv)::

    /path/to/vllm-venv/bin/python -m cato_live.tiny_model OUT_DIR [--seed N] [--force]

This module imports only the standard library at import time: torch, transformers and
tokenizers are imported inside :func:`build_tiny_model`, so the project's main venv (no
torch) can import it too.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import sysconfig
import time
from pathlib import Path

MARKER = ".cato_tiny_model.json"
# Bump when the recipe changes, so a stale build is rebuilt rather than reused.
RECIPE_VERSION = 1

VOCAB_SIZE = 2048
CORPUS_MAX_BYTES = 3_000_000  # bounded sample of the stdlib: about 2-4 s of training
SPECIAL_TOKENS = ("<s>", "</s>", "<pad>")
BOS, EOS, PAD = SPECIAL_TOKENS

MODEL_CONFIG = dict(
    hidden_size=128,
    intermediate_size=256,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=4096,
    rms_norm_eps=1e-6,
    rope_theta=10000.0,
    tie_word_embeddings=False,
)

CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "<|{{ message['role'] }}|>\n{{ message['content'] }}{{ eos_token }}\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def _recipe(seed: int) -> dict:
    return {
        "recipe_version": RECIPE_VERSION,
        "seed": seed,
        "vocab_size": VOCAB_SIZE,
        "corpus_max_bytes": CORPUS_MAX_BYTES,
        "model": MODEL_CONFIG,
    }


def is_built(out_dir: str | os.PathLike, seed: int = 0) -> bool:
    """True when ``out_dir`` holds a finished build of this recipe with this seed."""
    marker = Path(out_dir) / MARKER
    try:
        return json.loads(marker.read_text())["recipe"] == _recipe(seed)
    except (OSError, ValueError, KeyError, TypeError):
        return False


def corpus_files(max_bytes: int = CORPUS_MAX_BYTES) -> list[str]:
    """A deterministic, bounded sample of the stdlib's .py files (sorted paths, up to max_bytes)."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    picked: list[str] = []
    total = 0
    for path in sorted(stdlib.rglob("*.py")):
        rel = path.relative_to(stdlib).parts
        if rel[0] in ("site-packages", "dist-packages", "test", "idlelib", "lib2to3"):
            continue
        try:
            size = path.stat().st_size
        except OSError:
            continue
        if size == 0 or size > 400_000:
            continue
        picked.append(str(path))
        total += size
        if total >= max_bytes:
            break
    if not picked:
        raise RuntimeError(f"no .py files found under {stdlib} to train the tokenizer on")
    return picked


def _train_tokenizer(files: list[str]):
    from tokenizers import (
        Tokenizer,
        decoders,
        models,
        pre_tokenizers,
        processors,
        trainers,
    )

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        min_frequency=2,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )

    def lines():
        for name in files:
            with open(name, encoding="utf-8", errors="replace") as fh:
                yield from fh

    tok.train_from_iterator(lines(), trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A",
        pair=f"{BOS} $A {BOS} $B",
        special_tokens=[(BOS, tok.token_to_id(BOS))],
    )
    return tok


def build_tiny_model(out_dir: str | os.PathLike, seed: int = 0, force: bool = False) -> Path:
    """Build tokenizer + tiny Llama into ``out_dir``; skip when already built (marker file).

    Returns the model directory. Needs torch, transformers and tokenizers.
    """
    out = Path(out_dir).resolve()
    if not force and is_built(out, seed):
        return out

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    t0 = time.monotonic()
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).unlink(missing_ok=True)  # invalid until this build finishes

    files = corpus_files()
    raw = _train_tokenizer(files)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=raw,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        model_max_length=MODEL_CONFIG["max_position_embeddings"],
        clean_up_tokenization_spaces=False,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(str(out))
    t_tok = time.monotonic() - t0

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **MODEL_CONFIG,
    )
    model = LlamaForCausalLM(config).to(torch.bfloat16).eval()
    model.save_pretrained(str(out), safe_serialization=True)

    elapsed = time.monotonic() - t0
    (out / MARKER).write_text(
        json.dumps(
            {
                "recipe": _recipe(seed),
                "corpus_files": len(files),
                "vocab": len(tokenizer),
                "tokenizer_seconds": round(t_tok, 2),
                "build_seconds": round(elapsed, 2),
            },
            indent=2,
        )
    )
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--force", action="store_true", help="rebuild even if already built")
    args = ap.parse_args(argv)
    t0 = time.monotonic()
    if not args.force and is_built(args.out_dir, args.seed):
        print(f"tiny_model: {args.out_dir} already built")
        return 0
    out = build_tiny_model(args.out_dir, seed=args.seed, force=args.force)
    print(f"tiny_model: built {out} in {time.monotonic() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
