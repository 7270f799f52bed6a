"""DEPLOY.yaml: what `cato-live serve` runs: the gateway, its policies, models and replicas.

Loaded and checked once, before anything starts; every default is written here once. Bad
input raises :class:`~cato_core.errors.InputError` naming the file, the field and what was
expected. Task types merge over cato_core's defaults field by field (as in experiments).
Profiles are a shipped profile name, a YAML path (relative to the DEPLOY file) or inline.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Discriminator, Field, PrivateAttr, Tag, ValidationError, model_validator

from cato_core.errors import InputError
from cato_core.presets import resolve_preset
from cato_core.profile import DeviceProfile, load_profile
from cato_core.routers import ROUTERS
from cato_core.scalers import SCALERS
from cato_core.tasks import TaskType, default_task_types, merge_task_types
from cato_core.yaml_file import read_yaml

# The provisioner kinds a DEPLOY file may name; cato_live.provisioners.registry maps each to
# its class (that way round, so the schema imports nothing of the provisioners).
PROVISIONER_KINDS = ("static", "process", "ray", "emulator")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _profile_form(value: Any) -> str:
    return "inline" if isinstance(value, dict | DeviceProfile) else "name"


# A shipped name or YAML path, or the profile's fields inline. The form is picked from the value,
# so a bad inline profile is checked as a profile only (an error names its wrong field).
ProfileRef = Annotated[
    Annotated[str, Tag("name")] | Annotated[DeviceProfile, Tag("inline")], Discriminator(_profile_form)
]


class ModelDeploy(Strict):
    """One model the gateway serves, under the name clients put in ``model``."""

    profile: ProfileRef
    served_model: str | None = None  # the name the backend knows it by (None: the models key)
    max_num_seqs: int = Field(default=256, ge=1)  # calls in flight per replica (vLLM's --max-num-seqs)
    replicas: int = Field(default=1, ge=0)  # started with the gateway
    priority_scheduling: bool = False  # backends run --scheduling-policy priority: send `priority`
    # From receipt to a replica's first response byte (the whole answer when not streamed),
    # queueing and retries included; then 504.
    request_timeout_s: float = Field(default=300.0, gt=0)
    # One attempt's silence limit: to its first byte, and between stream chunks.
    first_byte_timeout_s: float = Field(default=60.0, gt=0)
    connect_timeout_s: float = Field(default=5.0, gt=0)
    # An idle connection to a replica is not reused after this long. Keep it under the
    # backend's own keep-alive (vLLM: VLLM_HTTP_TIMEOUT_KEEP_ALIVE, 5 s), or a call can be
    # sent on a connection the replica is closing at that moment.
    keepalive_s: float = Field(default=3.0, gt=0)


class RetrySpec(Strict):
    """Retrying a failed call (refused, reset, HTTP 5xx, silent) on another ready replica."""

    max_attempts: int = Field(default=3, ge=1)  # replicas tried per call, the first included
    past_deadline: bool = False  # also retry a call whose deadline has passed


class ProvisionerSpec(BaseModel):
    """``kind`` picks the provisioner; its other fields are that provisioner's to check."""

    model_config = ConfigDict(extra="allow")
    kind: str

    @model_validator(mode="after")
    def _known(self) -> ProvisionerSpec:
        if self.kind not in PROVISIONER_KINDS:
            raise ValueError(f"unknown provisioner kind {self.kind!r}; expected one of {sorted(PROVISIONER_KINDS)}")
        return self

    def options(self) -> dict[str, Any]:
        """The kind-specific fields."""
        return dict(self.model_extra or {})


class Deploy(Strict):
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)  # 0: any free port
    token: str | None = None  # bearer token clients must send (None: no auth)
    max_body_bytes: int = Field(default=1 << 20, ge=1024)
    preset: str | None = None  # a named baseline (cato_core.presets): router, scaler, params
    router: str = "cato"
    router_params: dict[str, Any] = Field(default_factory=dict)
    scaler: str = "fixed"
    scaler_params: dict[str, Any] = Field(default_factory=dict)
    seed: int = 0
    models: dict[str, ModelDeploy]
    default_model: str | None = None  # for calls that name none (None: the first of models)
    default_task_type: str | None = None  # for calls that name none (None: they must)
    task_types: dict[str, TaskType] = Field(default_factory=default_task_types)
    tools: dict[str, Annotated[float, Field(gt=0)]] = Field(default_factory=dict)  # tool node -> seconds
    chars_per_token: float = Field(default=4.0, gt=0)  # estimates the prompt tokens of text
    default_max_tokens: int = Field(default=16, ge=1)  # output assumed without max_tokens (vLLM's)
    retry: RetrySpec = RetrySpec()
    records_kept: int = Field(default=10_000, ge=0)  # call records /v1/cato/nodes keeps
    provisioner: ProvisionerSpec
    _source: str = PrivateAttr("deploy")  # the file it was read from, for error messages
    _base: Path = PrivateAttr(Path("."))  # the folder relative paths start from

    @property
    def source(self) -> str:
        return self._source

    @property
    def base(self) -> Path:
        return self._base

    @model_validator(mode="before")
    @classmethod
    def _preset(cls, tree: Any) -> Any:
        return resolve_preset(tree) if isinstance(tree, dict) else tree

    @model_validator(mode="after")
    def _consistent(self) -> Deploy:
        if not self.models:
            raise ValueError("at least one model is needed")
        for name, (_cls, params) in (
            ("router", ROUTERS.get(self.router, (None, None))),
            ("scaler", SCALERS.get(self.scaler, (None, None))),
        ):
            if params is None:
                known = sorted(ROUTERS if name == "router" else SCALERS)
                raise ValueError(f"unknown {name} {getattr(self, name)!r}; expected one of {known}")
        default = self.default_model or next(iter(self.models))
        if default not in self.models:
            raise ValueError(f"default_model {default!r} is not among models {sorted(self.models)}")
        self.default_model = default
        if self.default_task_type is not None and self.default_task_type not in self.task_types:
            raise ValueError(
                f"default_task_type {self.default_task_type!r} is not among task_types {sorted(self.task_types)}"
            )
        tool_nodes = set()
        for tname, t in self.task_types.items():
            for n in t.nodes:
                if n.kind == "tool":
                    tool_nodes.add(n.name)
                elif t.model_of(n, default) not in self.models:
                    raise ValueError(
                        f"task type {tname!r} node {n.name!r} uses unknown model {t.model_of(n, default)!r}"
                    )
        for tool in self.tools:
            if tool not in tool_nodes:
                raise ValueError(f"tools: {tool!r} is no tool node of any task type {sorted(tool_nodes)}")
        return self

    def served_name(self, model: str) -> str:
        return self.models[model].served_model or model

    def profile(self, model: str) -> DeviceProfile:
        p = self.models[model].profile
        assert isinstance(p, DeviceProfile), "parse_deploy resolves every profile"
        return p


def _error(e: ValidationError, source: str, prefix: str = "") -> InputError:
    err = e.errors()[0]
    # a profile's form (ProfileRef's tag) is in the location, but it is no DEPLOY field
    loc = [
        x for i, x in enumerate(err["loc"]) if not (i and err["loc"][i - 1] == "profile" and x in ("name", "inline"))
    ]
    field = prefix + ".".join(str(x) for x in loc) if loc else (prefix.rstrip(".") or "(top level)")
    return InputError(source, field, err["msg"].removeprefix("Value error, "))


def parse_deploy(tree: Any, source: str, base: Path | None = None) -> Deploy:
    """Validate a DEPLOY tree; profile paths are relative to ``base`` (the file's folder)."""
    if not isinstance(tree, dict):
        raise InputError(source, "(top level)", "a YAML mapping with models and provisioner")
    tree = {**tree, "task_types": merge_task_types(tree.get("task_types"), source)}
    try:
        deploy = Deploy.model_validate(tree)
        for name, params in (
            ("router_params", ROUTERS[deploy.router][1]),
            ("scaler_params", SCALERS[deploy.scaler][1]),
        ):
            try:
                params.model_validate(getattr(deploy, name))
            except ValidationError as e:
                raise _error(e, source, f"{name}.") from None
    except ValidationError as e:
        raise _error(e, source) from None
    for name, spec in deploy.models.items():
        if isinstance(spec.profile, str):
            ref = spec.profile
            if Path(ref).suffix and base is not None and not Path(ref).is_absolute():
                ref = str(base / ref)
            try:
                spec.profile = load_profile(ref)
            except InputError as e:
                raise InputError(source, f"models.{name}.profile", f"{e.expected} ({e.source})") from None
    deploy._source = source
    deploy._base = base or Path(".")
    return deploy


def load_deploy(path: str | Path) -> Deploy:
    """Read and check a DEPLOY.yaml file."""
    path = Path(path)
    return parse_deploy(read_yaml(path, "deploy"), str(path), path.parent)
