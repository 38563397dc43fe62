"""Click callbacks shared by the commands."""

from __future__ import annotations

import click


def parse_csv(_ctx, _param, value: str | None) -> list[str] | None:
    """A comma-separated list of names (tensor names, for ``--cuts``)."""
    if value is None:
        return None
    names = [v.strip() for v in value.split(",") if v.strip()]
    if not names:
        raise click.BadParameter("expected one or more tensor names separated by commas")
    return names
