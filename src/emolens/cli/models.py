"""``emolens models``: the packaged model aliases and whether each is installed."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    @app.command()
    def models() -> None:
        """List packaged model aliases, their hub ids and install status."""
        from emolens.model.loading import ALIASES, DEFAULT_MODEL, alias_status

        for name, alias in ALIASES.items():
            status = alias_status(name)
            mark = "installed" if status.installed else "missing"
            default = " (default)" if name == DEFAULT_MODEL else ""
            typer.echo(f"{name}{default}\t{mark}\t{alias.hub_id}\t{alias.note}\t{status.detail}")
