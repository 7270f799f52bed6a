"""An experiment: a trace, a cluster, the models on it and the policy set-ups to compare.

Loaded from YAML; every default is written here once. ``--set a.b=value`` edits the YAML
tree before validation, so the saved resolved config is exactly what ran.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from cato_core.errors import InputError
from cato_core.presets import resolve_preset
from cato_core.routers import ROUTERS
from cato_core.scalers import SCALERS
from cato_core.tasks import TaskType, default_task_types, merge_task_types
from cato_core.yaml_file import read_yaml


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class GenerateSpec(Strict):
    """A Poisson (or gamma, with ``cv``) trace made on the fly (see `cato-sim trace generate`)."""

    rate: float = Field(gt=0)  # tasks per second
    duration_s: float | None = Field(default=None, gt=0)
    num_tasks: int | None = Field(default=None, gt=0)
    mix: dict[str, float] = Field(
        default_factory=lambda: {"completion": 1, "generation": 1, "summarization": 1, "translation": 1}
    )
    lengths: Literal["measured", "prompts"] = "measured"
    arrivals: Literal["poisson", "gamma"] = "poisson"
    cv: float | None = Field(default=None, gt=0)  # gamma: the gaps' coefficient of variation

    @model_validator(mode="after")
    def _cv(self) -> GenerateSpec:
        if (self.arrivals == "gamma") != (self.cv is not None):
            raise ValueError("give 'cv' with arrivals 'gamma', and only then")
        return self


class TraceSpec(Strict):
    path: str | None = None  # a trace parquet, relative to the experiment file
    generate: GenerateSpec | None = None
    time_scale: float = Field(default=1.0, gt=0)  # arrival_s is multiplied by it
    limit: int | None = Field(default=None, gt=0)  # first N tasks only

    @model_validator(mode="after")
    def _one(self) -> TraceSpec:
        if (self.path is None) == (self.generate is None):
            raise ValueError("give exactly one of 'path' or 'generate'")
        return self


class ModelSpec(Strict):
    profile: str  # a shipped profile name or a profile YAML path
    replicas: int = Field(default=1, ge=0)  # at start
    max_num_seqs: int = Field(default=256, ge=1)  # vLLM's default
    max_num_batched_tokens: int = Field(default=2048, ge=1)  # vLLM V1's default for online serving
    chunked_prefill: bool = True  # vLLM V1's default
    kv_capacity_tokens: int | None = Field(default=None, gt=0)  # None: the profile's
    # The engine runs this many times slower than its profile (< 1: faster); the policies
    # (routing estimates, SLAs, deadlines) still read the profile: a stale profile, or the
    # speed a validation measured live (cato_validate, "at the live engine's speed").
    engine_slowdown: float = Field(default=1.0, gt=0, allow_inf_nan=False)


class ClusterSpec(Strict):
    machines: int = Field(default=1, ge=1)
    accelerators_per_machine: int = Field(default=8, ge=1)


class Setup(Strict):
    """One policy set-up to run on the trace: a router and a scaler with their params, or a
    named baseline, ``preset:`` (cato_core.presets: cato, round_robin, rayserve,
    rayserve_llm, rayserve_vllm_example), whose router and scaler it fills in and whose
    params its own ``router_params``/``scaler_params`` override key by key."""

    name: str
    preset: str | None = None
    router: str = ""  # required unless a preset gives it
    scaler: str = "fixed"
    router_params: dict[str, Any] = Field(default_factory=dict)
    scaler_params: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _preset(cls, tree: Any) -> Any:
        return resolve_preset(tree) if isinstance(tree, dict) else tree

    @model_validator(mode="after")
    def _known(self) -> Setup:
        if not self.router:
            raise ValueError("give a router or a preset")
        if self.router not in ROUTERS:
            raise ValueError(f"unknown router {self.router!r}; expected one of {sorted(ROUTERS)}")
        if self.scaler not in SCALERS:
            raise ValueError(f"unknown scaler {self.scaler!r}; expected one of {sorted(SCALERS)}")
        for kind, name, params, params_cls in (
            ("router", self.router, self.router_params, ROUTERS[self.router][1]),
            ("scaler", self.scaler, self.scaler_params, SCALERS[self.scaler][1]),
        ):
            try:
                params_cls.model_validate(params)
            except ValidationError as e:
                err = e.errors()[0]
                where = ".".join(map(str, err["loc"]))
                raise ValueError(f"{kind}_params.{where} for {kind} {name!r}: {err['msg']}") from None
        return self


class Experiment(Strict):
    name: str = "experiment"
    seed: int = 0
    trace: TraceSpec
    cluster: ClusterSpec = ClusterSpec()
    models: dict[str, ModelSpec]
    default_model: str | None = None  # None: the first of models
    task_types: dict[str, TaskType] = Field(default_factory=default_task_types)
    setups: list[Setup] = Field(min_length=1)
    drain_s: float = Field(default=600.0, ge=0)  # after the last arrival; later tasks time out

    @model_validator(mode="after")
    def _consistent(self) -> Experiment:
        if not self.models:
            raise ValueError("at least one model is needed")
        default = self.default_model or next(iter(self.models))
        if default not in self.models:
            raise ValueError(f"default_model {default!r} is not among models {sorted(self.models)}")
        self.default_model = default
        for tname, t in self.task_types.items():
            for n in t.nodes:
                m = t.model_of(n, default)
                if n.kind == "llm" and m not in self.models:
                    raise ValueError(f"task type {tname!r} node {n.name!r} uses unknown model {m!r}")
        names = [s.name for s in self.setups]
        if len(set(names)) != len(names):
            raise ValueError(f"setup names must be unique, got {names}")
        return self


def _set(tree: dict, dotted: str, raw: str, source: str) -> None:
    """Apply one ``key.sub=value`` override; list items are addressed by index."""
    keys = dotted.split(".")
    node: Any = tree
    for i, k in enumerate(keys[:-1]):
        if isinstance(node, list) and k.isdigit() and int(k) < len(node):
            node = node[int(k)]
        elif isinstance(node, dict):
            node = node.setdefault(k, {})
        else:
            raise InputError(source, ".".join(keys[: i + 1]), "a mapping or list index to set into")
    last = keys[-1]
    value = yaml.safe_load(raw)
    if isinstance(node, list) and last.isdigit() and int(last) < len(node):
        node[int(last)] = value
    elif isinstance(node, dict):
        node[last] = value
    else:
        raise InputError(source, dotted, "a mapping key or list index")


def parse_experiment(tree: Any, source: str, overrides: list[str] = ()) -> Experiment:
    if not isinstance(tree, dict):
        raise InputError(source, "(top level)", "a YAML mapping with trace, models and setups")
    for item in overrides:
        if "=" not in item:
            raise InputError("--set", item, "key=value")
        key, raw = item.split("=", 1)
        _set(tree, key.strip(), raw, "--set")
    tree["task_types"] = merge_task_types(tree.get("task_types"), source)
    try:
        return Experiment.model_validate(tree)
    except ValidationError as e:
        err = e.errors()[0]
        field = ".".join(str(x) for x in err["loc"]) or "(top level)"
        raise InputError(source, field, err["msg"].removeprefix("Value error, ")) from None


def load_experiment(path: str | Path, overrides: list[str] = ()) -> tuple[Experiment, Path]:
    """Read an experiment YAML; returns it and the folder its relative paths start from."""
    path = Path(path)
    return parse_experiment(read_yaml(path, "experiment"), str(path), overrides), path.parent
