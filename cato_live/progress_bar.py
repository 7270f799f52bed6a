"""The progress display of cato-live's long commands (replay, profile): a bar per stage
with its count, elapsed time and a status line the command keeps up to date."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress


def status_progress(console: Console) -> Progress:
    """A rich Progress whose tasks carry a ``status`` field, shown after the bar."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[status]}"),
        console=console,
    )
