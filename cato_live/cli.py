"""`cato-live`: the CATO gateway in front of real replicas.

Exit codes of ``serve``: 0 stopped by Ctrl-C / SIGTERM after a clean shutdown; 1 a replica
did not start; 2 bad input (one line naming the file, the field and what was expected);
130 stopped while the replicas were still starting.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from cato_core.errors import InputError

app = typer.Typer(
    help="CATO live: the SLA-aware gateway in front of real LLM replicas.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root() -> None:
    """CATO live: the SLA-aware gateway in front of real LLM replicas."""


@app.command()
def serve(
    deploy: Annotated[Path, typer.Argument(help="DEPLOY.yaml: models, policies, provisioner")],
    host: Annotated[str | None, typer.Option(help="address to bind (default: DEPLOY's, 127.0.0.1)")] = None,
    port: Annotated[int | None, typer.Option(help="port (default: DEPLOY's, 8000)")] = None,
    token: Annotated[str | None, typer.Option(envvar="CATO_LIVE_TOKEN", help="bearer token clients must send")] = None,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error")] = "info",
    access_log: Annotated[bool, typer.Option(help="log every HTTP request (costs latency)")] = False,
) -> None:
    """Serve the OpenAI-compatible gateway until Ctrl-C; replicas start first and stop last."""
    from cato_live.deploy import load_deploy
    from cato_live.provisioners.registry import make_provisioner

    try:
        if log_level not in ("debug", "info", "warning", "error"):
            raise InputError("--log-level", log_level, "one of debug, info, warning, error")
        if port is not None and not 0 <= port <= 65535:
            raise InputError("--port", str(port), "a port number 0-65535")
        d = load_deploy(deploy)
        d = d.model_copy(update={k: v for k, v in (("host", host), ("port", port), ("token", token)) if v is not None})
        provisioner = make_provisioner(d)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        raise typer.Exit(2) from None
    from cato_live.gateway.serve import run

    raise typer.Exit(run(d, provisioner, log_level, access_log))


from cato_live.replay.cli import replay  # noqa: E402  (`cato-live replay`, see cato_live/replay/cli.py)

app.command()(replay)

from cato_live.profiling.command import profile  # noqa: E402  (`cato-live profile`)

app.command()(profile)

# `cato-live validate` (cato_validate/command.py) runs the simulator too. This CLI is the
# composition root: the one cato_live module allowed to reach past the driver boundary
# (pyproject.toml's import-linter contract ignores exactly this import).
from cato_validate.command import validate  # noqa: E402

app.command()(validate)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
