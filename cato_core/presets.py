"""Named baselines: a router and a scaler with the parameters a deployment really gets.

A set-up (cato_sim.experiment.Setup) or a DEPLOY file (cato_live.deploy.Deploy) may name
one with ``preset:``; its own ``router_params`` and ``scaler_params`` are laid over the
preset's, key by key. The Ray Serve figures are Ray 2.60's (paths under the wheel's ``ray/``).
"""

from __future__ import annotations

from typing import Any

LLM_MAX = 10**9  # ray/llm/_internal/serve/constants.py:42-48 (max ongoing and target ongoing)


def presets() -> dict[str, dict[str, Any]]:
    """Each preset's router, router_params, scaler, scaler_params and a one-line label."""
    return {
        "cato": {"router": "cato", "scaler": "cato", "label": "CATO (Algorithms 1 and 2)"},
        "round_robin": {"router": "round_robin", "scaler": "fixed", "label": "round robin, fixed replicas"},
        # A plain @serve.deployment with num_replicas="auto": untuned generic defaults.
        "rayserve": {
            "router": "pow2",
            "router_params": {"max_ongoing_requests": 5},  # ray/serve/_private/constants.py:290
            "scaler": "rayserve",
            # AutoscalingConfig.default(): ray/serve/config.py:776-782
            "scaler_params": {"target_ongoing_requests": 2, "min_replicas": 1, "max_replicas": 100},
            "label": "Ray Serve generic defaults (untuned)",
        },
        # ray.serve.llm.build_openai_app: the defaults deep-merged under the user's config
        # (ray/llm/_internal/serve/core/server/builder.py:27-34, 78-80). The target of 10^9
        # keeps it at min_replicas: here the replicas it starts with.
        "rayserve_llm": {
            "router": "pow2",
            "router_params": {"max_ongoing_requests": LLM_MAX},
            "scaler": "rayserve",
            "scaler_params": {"target_ongoing_requests": LLM_MAX, "min_replicas": None},
            "label": "Ray Serve LLM (build_openai_app defaults)",
        },
        # Ray's vLLM example: ray-project/ray doc/source/serve/doc_code/vllm_openai_example.py:28-35
        "rayserve_vllm_example": {
            "router": "pow2",
            "router_params": {"max_ongoing_requests": 10},
            "scaler": "rayserve",
            "scaler_params": {"target_ongoing_requests": 5, "min_replicas": 1, "max_replicas": 10},
            "label": "Ray Serve's vLLM example (cap 10, target 5)",
        },
    }


def resolve_preset(tree: dict[str, Any]) -> dict[str, Any]:
    """A set-up or DEPLOY mapping with its ``preset`` filled in: router and scaler from the
    preset unless given, params merged (the mapping's own win). Unknown names raise ValueError."""
    name = tree.get("preset")
    if name is None:
        return tree
    known = presets()
    if name not in known:
        raise ValueError(f"unknown preset {name!r}; expected one of {sorted(known)}")
    p = known[name]
    out = dict(tree)
    for key in ("router", "scaler"):
        out.setdefault(key, p[key])
    for key in ("router_params", "scaler_params"):
        mine = out.get(key) or {}
        out[key] = (
            {**p.get(key, {}), **mine} if out[key.removesuffix("_params")] == p[key.removesuffix("_params")] else mine
        )
    return out
