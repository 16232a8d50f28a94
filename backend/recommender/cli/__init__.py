"""The ``recommender`` command. Each sub-command lives in its own module and stays thin."""

from __future__ import annotations

import click

from ..config import Settings, SettingsError


class _Group(click.Group):
    def invoke(self, ctx: click.Context) -> object:
        # A setting with an unusable value is the user's to fix: one line, not a traceback.
        try:
            return super().invoke(ctx)
        except SettingsError as exc:
            raise click.UsageError(str(exc)) from None


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.pass_context
def main(ctx: click.Context) -> None:
    """Image recommendation service: ingest photos, find similar ones, serve the page."""
    try:
        ctx.obj = Settings.from_env()
    except SettingsError as exc:
        raise click.UsageError(str(exc)) from None


# Each command module adds itself to ``main`` when imported.
from . import db, delete, detect, evaluate, ingest, reindex, serve, similar, weights, worker  # noqa: E402, F401
