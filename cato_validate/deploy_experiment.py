"""The simulator's experiment for a DEPLOY: the same models, policies and task types as live.

What maps, DEPLOY -> Experiment (cato_sim.experiment):
- models: replicas at start, ``max_num_seqs``, the profile (written to ``profile_dir`` as a
  YAML file, since an experiment names its profiles by file or shipped name; KV capacity is
  the profile's); ``--max-num-batched-tokens`` and ``--[no-]enable-chunked-prefill`` when the
  provisioner's ``models.<m>.args`` pass them to vLLM, else vLLM V1's defaults (the sim's).
- router, scaler and their params, the seed, the default model: as given.
- task types with the DEPLOY's ``tools``: a tool node's median duration is the DEPLOY's
  figure for it, and the live replay is given the same task types (with_tools), so both
  sides draw tool times around one median and compute one set of deadlines.
- cluster: one machine with room for ``max_replicas`` replicas (what the provisioner can
  start; the initial replicas at least), so a scaler cannot add more in the simulator than
  it could live. None (no known limit): the simulator's default of 8 accelerators.
Not mapped, on purpose: ``priority_scheduling``. The gateway (like the simulator's pool)
keeps calls in its own priority queues and never sends a replica more than
``max_num_seqs``, so vLLM's scheduler has no queue to order; the sim engine needs no switch.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from cato_core.profile import save_profile
from cato_core.tasks import TaskType
from cato_live.deploy import Deploy
from cato_sim.experiment import ClusterSpec, Experiment, ModelSpec, Setup, TraceSpec

DEFAULT_ACCELERATORS = ClusterSpec().accelerators_per_machine


def with_tools(task_types: Mapping[str, TaskType], tools: Mapping[str, float]) -> dict[str, TaskType]:
    """``task_types`` with each tool node named in ``tools`` taking that median (seconds)."""
    out = {}
    for name, t in task_types.items():
        nodes = tuple(
            n.model_copy(update={"tool": n.tool.model_copy(update={"median_s": tools[n.name]})})
            if n.kind == "tool" and n.name in tools
            else n
            for n in t.nodes
        )
        out[name] = t.model_copy(update={"nodes": nodes})
    return out


def _engine_args(deploy: Deploy, model: str) -> dict:
    """Engine limits the provisioner passes to vLLM for ``model`` (its ``models.<m>.args``)."""
    spec = (deploy.provisioner.options().get("models") or {}).get(model)
    args = [str(a) for a in spec.get("args", [])] if isinstance(spec, dict) else []
    out: dict = {}
    for i, a in enumerate(args):
        key, _, value = a.partition("=")
        if key == "--max-num-batched-tokens":
            out["max_num_batched_tokens"] = int(value or args[i + 1])
        elif key == "--enable-chunked-prefill":
            out["chunked_prefill"] = True
        elif key == "--no-enable-chunked-prefill":
            out["chunked_prefill"] = False
    return out


def experiment_from_deploy(
    deploy: Deploy,
    trace: Path,
    seed: int,
    profile_dir: Path,
    max_replicas: int | None = None,
    engine_slowdown: float = 1.0,
) -> Experiment:
    """The experiment that simulates ``trace`` as ``deploy`` would serve it live (one set-up).

    Writes each model's profile to ``profile_dir/<model>.yaml`` (the experiment names it).
    ``engine_slowdown``: every model's engine that many times slower than its profile
    (cato_sim.experiment.ModelSpec), as a validation measured it live.
    """
    profile_dir.mkdir(parents=True, exist_ok=True)
    models = {}
    for name, spec in deploy.models.items():
        path = (profile_dir / f"{name}.yaml").resolve()
        save_profile(deploy.profile(name), path)
        models[name] = ModelSpec(
            profile=str(path),
            replicas=spec.replicas,
            max_num_seqs=spec.max_num_seqs,
            engine_slowdown=engine_slowdown,
            **_engine_args(deploy, name),
        )
    per_replica = max(deploy.profile(m).accelerators_per_replica for m in deploy.models)
    initial = sum(spec.replicas for spec in deploy.models.values()) * per_replica
    room = DEFAULT_ACCELERATORS if max_replicas is None else max_replicas * per_replica
    return Experiment(
        name=f"validate-{Path(deploy.source).stem}",
        seed=seed,
        trace=TraceSpec(path=str(Path(trace).resolve())),
        cluster=ClusterSpec(machines=1, accelerators_per_machine=max(room, initial, 1)),
        models=models,
        default_model=deploy.default_model,
        task_types=with_tools(deploy.task_types, deploy.tools),
        setups=[
            Setup(
                name=f"{deploy.router}+{deploy.scaler}",
                router=deploy.router,
                scaler=deploy.scaler,
                router_params=deploy.router_params,
                scaler_params=deploy.scaler_params,
            )
        ],
    )
