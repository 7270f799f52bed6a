"""The shipped prompt sets (data/prompts) as one pool of prompt texts per task type.

completion: HumanEval prompts cut after a random non-blank line (the prefix is the context);
generation: CONCODE NL + class context; summarization: CoSQA functions; translation: the
CodeXGLUE Java programs (test + valid, one a line). Sources and licences: data/README.md.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from cato_core.errors import InputError

# Llama-2 token means of each pool's full texts, measured in data/README.md. No Llama tokenizer
# is available here, so tokens are estimated as chars / ratio with ratio = mean chars / this
# mean: the pool's estimated mean then equals the measured one. On the shipped files the ratios
# are HumanEval 2.89, CONCODE 3.31, CoSQA 3.17, Java 3.62 chars/token, and the estimated p99s
# (417, 739, 231, 214) land near the measured ones (362, 884, 232, 228).
TOKEN_MEANS = {
    "completion": 156.0,  # HumanEval prompt (the whole prompt; completion cuts it shorter)
    "generation": 220.0,  # CONCODE input
    "summarization": 85.0,  # CoSQA functions
    "translation": 50.0,  # Java input
}

FILES = {
    "completion": "prompts/humaneval/HumanEval.jsonl.gz",
    "generation": "prompts/codexglue/concode-dev.json",
    "summarization": "prompts/codexglue/cosqa-dev-python-functions/cosqa-dev.json",
    "translation": (
        "prompts/codexglue/code-to-code-trans/test.java-cs.txt.java",
        "prompts/codexglue/code-to-code-trans/valid.java-cs.txt.java",
    ),
}


def default_data_dir() -> Path:
    """The repository's data/ folder, found from this file's location."""
    return Path(__file__).resolve().parent.parent / "data"


def estimate_tokens(texts, chars_per_token: float) -> np.ndarray:
    """Estimated Llama-2 tokens of each text: round(chars / ratio), at least 1."""
    chars = np.fromiter((len(t) for t in texts), dtype=np.float64, count=len(texts))
    return np.maximum(1, np.rint(chars / chars_per_token)).astype(np.int64)


@dataclass(frozen=True)
class Pool:
    """Prompt texts in groups (a source text and its variants); sampling picks a group
    uniformly, then one of its texts uniformly, so long sources are not over-weighted."""

    texts: np.ndarray  # object array of str, sorted by group
    groups: np.ndarray  # group index of each text
    tokens: np.ndarray  # estimated tokens of each text
    chars_per_token: float

    def sample(self, n: int, rng: np.random.Generator, max_tokens: int | None = None):
        """``n`` texts and their estimated tokens, only texts of at most ``max_tokens``."""
        keep = self.tokens <= max_tokens if max_tokens is not None else np.ones(len(self.texts), bool)
        texts, groups, tokens = self.texts[keep], self.groups[keep], self.tokens[keep]
        _, start, count = np.unique(groups, return_index=True, return_counts=True)
        if not len(start):
            raise InputError("prompts", "max_tokens", f"a limit some prompt fits (got {max_tokens})")
        g = rng.integers(len(start), size=n)
        i = start[g] + rng.integers(0, count[g])
        return texts[i], tokens[i]


def _pool(texts: list[str], calib: list[str], mean_tokens: float, groups=None) -> Pool:
    ratio = float(np.mean([len(t) for t in calib])) / mean_tokens
    groups = np.arange(len(texts)) if groups is None else np.asarray(groups)
    return Pool(np.array(texts, dtype=object), groups, estimate_tokens(texts, ratio), ratio)


def _line_prefixes(text: str) -> list[str]:
    """Prefixes of ``text`` ending after each non-blank line, newline included."""
    out, pos = [], 0
    for line in text.splitlines(keepends=True):
        pos += len(line)
        if line.strip():
            out.append(text[:pos])
    return out


def _read(path: Path, how):
    try:
        return how(path)
    except (OSError, ValueError, KeyError) as e:
        raise InputError(str(path), "prompts", f"a readable prompt file ({e.__class__.__name__})") from None


@lru_cache(maxsize=4)
def _load(data_dir: str) -> dict[str, Pool]:
    d = Path(data_dir)

    def jsonl(p):
        opener = gzip.open if p.suffix == ".gz" else open
        with opener(p, "rt", encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]

    def lines(p):
        return [s for s in p.read_text(encoding="utf-8").splitlines() if s.strip()]

    humaneval = [r["prompt"] for r in _read(d / FILES["completion"], jsonl)]
    prefixes = [_line_prefixes(p) for p in humaneval]
    concode = [r["nl"] for r in _read(d / FILES["generation"], jsonl)]
    # cosqa-dev.json is one JSON array, not JSON lines.
    cosqa = [r["code"] for r in _read(d / FILES["summarization"], lambda p: json.loads(p.read_text("utf-8")))]
    java = [s for f in FILES["translation"] for s in _read(d / f, lines)]
    return {
        "completion": _pool(
            [s for ps in prefixes for s in ps],
            humaneval,  # calibrated on whole prompts: that is what the README measured
            TOKEN_MEANS["completion"],
            groups=[g for g, ps in enumerate(prefixes) for _ in ps],
        ),
        "generation": _pool(concode, concode, TOKEN_MEANS["generation"]),
        "summarization": _pool(cosqa, cosqa, TOKEN_MEANS["summarization"]),
        "translation": _pool(java, java, TOKEN_MEANS["translation"]),
    }


def load_pools(data_dir: str | Path | None = None) -> dict[str, Pool]:
    """Task type -> prompt pool, read once per data dir (default: the repo's data/)."""
    d = Path(data_dir) if data_dir is not None else default_data_dir()
    if not d.is_dir():
        raise InputError(str(d), "data_dir", "an existing folder holding prompts/")
    return _load(str(d.resolve()))
