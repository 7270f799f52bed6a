"""The measurement grid: which prompt lengths, batch sizes and contexts to time.

Three parts, each designed to isolate terms of the step model (cato_core/profile.py):

- prefill: a lone request of p prompt tokens and one output token; its TTFT is one step of
  T = p, A = p**2, C = 0, plus the per-request latency of the API path;
- decode: n sequences of c prompt tokens decoding together; their steady inter-token gap is a
  step of T = n, A = 0, C = n * (c + generated);
- mixed: a prompt of p tokens arriving while n sequences decode; the decoders' gap around its
  first token is one step of T = n + p, A = p**2 and their context;
- arrival: prompts of p tokens (one output token) arriving as a Poisson stream while n
  sequences decode: the time each arrival added to the decoders' steps around it, the engine
  time one arrival costs the batch, of which the mixed step is one part and the API server's
  work on the engine's core (frontend_cpu_s) the rest.
"""

from __future__ import annotations

from dataclasses import dataclass

# Lengths tried, clipped to what the replica's max_model_len allows.
PREFILL_TOKENS = (16, 64, 128, 256, 512, 1024, 1536)
DECODE_CONTEXTS = (16, 512, 1024)
MIXED_PREFILL = (64, 256, 1024)
MIXED_CONTEXT = 64
# The arrival part: 64-token prompts at 10 a second (bench/fidelity.py's traces make 6-12
# calls a second) beside decoders of 256 tokens, about 10 arrivals a sample.
ARRIVAL_PROMPT = 64
ARRIVAL_RATE = 10.0
ARRIVAL_DECODE_TOKENS = 256
# Rounds over the grid. Five keep the 3-minute budget on vLLM's CPU build (about 35 s of
# measuring) and let a median drop two samples from a slow spell.
REPEATS = 5


@dataclass(frozen=True)
class Grid:
    prefill_tokens: tuple[int, ...]
    decode_seqs: tuple[int, ...]
    decode_contexts: tuple[int, ...]
    decode_tokens: int  # output tokens of each decoding sequence; gaps are taken mid-run
    mixed_seqs: tuple[int, ...]
    mixed_prefill: tuple[int, ...]
    mixed_context: int
    arrival_seqs: int  # decoders beside the arrivals; 0 = no arrival part
    arrival_prompt: int
    arrival_rate: float  # arrivals a second
    arrival_decode_tokens: int
    repeats: int

    @property
    def points(self) -> int:
        """Points in the grid (each measured once a round, ``repeats`` rounds)."""
        return (
            len(self.prefill_tokens)
            + len(self.decode_seqs) * len(self.decode_contexts)
            + len(self.mixed_seqs) * len(self.mixed_prefill)
            + (1 if self.arrival_seqs else 0)
        )

    def describe(self) -> str:
        return (
            f"prefill p = {list(self.prefill_tokens)} (lone requests, TTFT); "
            f"decode n = {list(self.decode_seqs)} x prompt {list(self.decode_contexts)} tokens, "
            f"{self.decode_tokens} output tokens each; mixed n = {list(self.mixed_seqs)} decoding "
            f"(prompt {self.mixed_context}) + p = {list(self.mixed_prefill)}; "
            + (
                f"arrival: {self.arrival_prompt}-token prompts at {self.arrival_rate:g}/s beside "
                f"{self.arrival_seqs} decoding ({self.arrival_decode_tokens} tokens), each arrival's excess "
                "over the decoders' own steady step; "
                if self.arrival_seqs
                else ""
            )
            + f"{self.repeats} rounds over the grid (its order reversed every other round), "
            "a point's median over the rounds"
            + ("; the arrival point's over every arrival of every round" if self.arrival_seqs else "")
        )


def batch_sizes(max_num_seqs: int) -> tuple[int, ...]:
    """1, 2, 4, ... up to max_num_seqs, which is always included."""
    sizes, n = [], 1
    while n < max_num_seqs:
        sizes.append(n)
        n *= 2
    return (*sizes, max_num_seqs)


def design_grid(max_num_seqs: int, max_model_len: int, repeats: int = REPEATS) -> Grid:
    """The default grid for a replica that runs ``max_num_seqs`` sequences of up to
    ``max_model_len`` tokens."""
    decode_tokens = 64  # long enough for an API server that lags its engine to catch up mid-run
    fits = [p for p in PREFILL_TOKENS if p + 2 <= max_model_len]
    contexts = [c for c in DECODE_CONTEXTS if c + decode_tokens <= max_model_len]
    mixed = [p for p in MIXED_PREFILL if p + 2 <= max_model_len]
    sizes = batch_sizes(max_num_seqs)
    mixed_seqs = tuple(sorted({1, max(max_num_seqs // 2, 1), max_num_seqs - 1} - {0}))  # room for the prompt
    return Grid(
        prefill_tokens=tuple(fits) or (max(max_model_len // 2, 1),),
        decode_seqs=sizes,
        decode_contexts=tuple(contexts) or (max(max_model_len // 2 - decode_tokens, 1),),
        decode_tokens=decode_tokens,
        mixed_seqs=mixed_seqs if max_num_seqs > 1 else (),
        mixed_prefill=tuple(mixed),
        mixed_context=min(MIXED_CONTEXT, max(max_model_len // 4, 1)),
        arrival_seqs=mixed_seqs[len(mixed_seqs) // 2] if max_num_seqs > 1 else 0,
        arrival_prompt=min(ARRIVAL_PROMPT, max(max_model_len // 4, 1)),
        arrival_rate=ARRIVAL_RATE,
        arrival_decode_tokens=min(ARRIVAL_DECODE_TOKENS, max(max_model_len // 2, 2)),
        repeats=repeats,
    )
