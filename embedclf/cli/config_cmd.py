"""``embedclf config``: the settings in effect (environment and defaults), secrets masked."""

from __future__ import annotations

import json

import click

from embedclf.config import Settings, env_names


@click.command("config")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.pass_obj
def config_cmd(settings: Settings, as_json: bool) -> None:
    """Print the settings in effect: each EMBEDCLF_* variable, its value and where it came from."""
    import os

    values = settings.describe()
    rows = []
    for name in env_names():
        key = name.removeprefix("EMBEDCLF_").lower()
        key = "batch." + key.removeprefix("batch_") if key.startswith("batch_") else key
        rows.append({"variable": name, "value": values[key], "source": "environment" if name in os.environ
                     else "default"})
    if as_json:
        click.echo(json.dumps({r["variable"]: r["value"] for r in rows}))
        return
    width = max(len(str(r["variable"])) for r in rows)
    for r in rows:
        click.echo(f"{r['variable']:<{width}}  {r['value']}  ({r['source']})")
