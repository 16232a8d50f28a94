"""The ``recommender`` command. Each sub-command lives in its own module and stays thin."""

from __future__ import annotations

import click

from ..config import Settings, SettingsError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.pass_context
def main(ctx: click.Context) -> None:
    """Image recommendation service: ingest photos, find similar ones, serve the page."""
    try:
        ctx.obj = Settings.from_env()
    except SettingsError as exc:
        raise click.UsageError(str(exc)) from None


def _register() -> None:
    # Each command module adds itself to ``main``; a missing one only hides its command.
    import importlib

    for module in ("detect", "weights", "ingest", "similar", "reindex", "delete", "evaluate", "serve", "db"):
        try:
            importlib.import_module(f"{__name__}.{module}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{module}":
                raise


_register()
