"""Device profiles: how long one engine step takes for one model on one device.

A step of a continuous-batching engine (vLLM) runs every running sequence once: prefill
chunks of new prompts and one token for each decoding sequence. Its time is modelled as

    step_s = overhead_s + per_token_s * T + prefill_attn_s * A + decode_ctx_s * C

T   tokens in the step (prefill chunk tokens + one per decoding sequence): the linear
    layers (projections, MLP), fitted from operator timings;
A   sum over prefill chunks of chunk * (2 * done + chunk), i.e. p**2 for a whole prompt of
    p tokens: causal self-attention over the prompt, compute-bound;
C   context tokens (prompt + generated) held by the decoding sequences: decode attention
    reads their KV cache, memory-bound.

Profiles are data files (cato_core/profiles/*.yaml) that say where their numbers come from.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cato_core.errors import InputError


class DeviceProfile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    model: str
    device: str
    accelerators_per_replica: int = Field(default=1, ge=1)
    overhead_s: float = Field(ge=0)
    per_token_s: float = Field(ge=0)
    prefill_attn_s: float = Field(ge=0)
    decode_ctx_s: float = Field(ge=0)
    kv_capacity_tokens: int = Field(gt=0)
    cold_start_s: float = Field(ge=0)
    estimate: bool = False  # True until a measurement on the device replaces it
    provenance: str = ""

    def step_s(self, tokens: int, prefill_attn: float, decode_ctx: float) -> float:
        """Time of one engine step (see the module docstring for T, A and C)."""
        return (
            self.overhead_s
            + self.per_token_s * tokens
            + self.prefill_attn_s * prefill_attn
            + self.decode_ctx_s * decode_ctx
        )

    def prefill_s(self, prompt_tokens: int) -> float:
        """Isolated prefill of a whole prompt in one step; it ends with the first token."""
        return self.step_s(prompt_tokens, prompt_tokens * prompt_tokens, 0)

    def decode_s(self, prompt_tokens: int, output_tokens: int) -> float:
        """Isolated decode of the output tokens after the first, on an otherwise idle replica.

        Decode step j (1..o-1) reads a context of p + j tokens; summed in closed form.
        """
        k = max(output_tokens - 1, 0)
        return k * (self.overhead_s + self.per_token_s) + self.decode_ctx_s * k * (
            prompt_tokens + output_tokens / 2
        )

    def decode_run_s(self, seqs: int, context: int, steps: int) -> float:
        """Time of ``steps`` decode-only steps of ``seqs`` sequences holding ``context`` tokens.

        Each step adds one token to every sequence, so the context grows by ``seqs`` a step.
        """
        base = self.overhead_s + self.per_token_s * seqs + self.decode_ctx_s * context
        return steps * base + self.decode_ctx_s * seqs * steps * (steps - 1) / 2

    def decode_steps_within(self, seqs: int, context: int, elapsed_s: float) -> int:
        """How many whole decode steps of such a batch finish within ``elapsed_s``."""
        base = self.overhead_s + self.per_token_s * seqs + self.decode_ctx_s * context
        g = self.decode_ctx_s * seqs
        if g == 0:
            return int(elapsed_s // base) if base > 0 else 0
        # Largest k with k*base + g*k*(k-1)/2 <= elapsed: root of g/2 k^2 + (base - g/2) k - e.
        b = base - g / 2
        k = int((-b + (b * b + 2 * g * elapsed_s) ** 0.5) / g)
        while k > 0 and self.decode_run_s(seqs, context, k) > elapsed_s:
            k -= 1
        while self.decode_run_s(seqs, context, k + 1) <= elapsed_s:
            k += 1
        return k


def load_profile(ref: str | Path) -> DeviceProfile:
    """Load a profile by file path, or by the name of one shipped in cato_core/profiles."""
    path = Path(ref)
    if not path.suffix:
        shipped = resources.files("cato_core") / "profiles" / f"{ref}.yaml"
        if not shipped.is_file():
            raise InputError(str(ref), "profile", f"a profile file or one of {shipped_profiles()}")
        text, source = shipped.read_text(), f"cato_core/profiles/{ref}.yaml"
    else:
        if not path.is_file():
            raise InputError(str(path), "profile", "an existing profile YAML file")
        text, source = path.read_text(), str(path)
    try:
        data = yaml.safe_load(text)
        return DeviceProfile.model_validate(data)
    except yaml.YAMLError as e:
        raise InputError(source, "yaml", f"valid YAML ({e.__class__.__name__})") from None
    except ValidationError as e:
        err = e.errors()[0]
        raise InputError(source, ".".join(map(str, err["loc"])) or "profile", err["msg"]) from None


def shipped_profiles() -> list[str]:
    folder = resources.files("cato_core") / "profiles"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))
