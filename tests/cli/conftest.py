"""Shared by the CLI tests: ``run`` invokes ``embedclf`` in-process on this run's database and Redis DB."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from embedclf.cli import cli


@pytest.fixture
def run(settings):
    def invoke(*args: str, env: dict | None = None, ok: bool = True):
        base = {"EMBEDCLF_DATABASE_URL": settings.database_url, "EMBEDCLF_BROKER_URL": settings.broker_url,
                "EMBEDCLF_EMBEDDER": "fake:64"}
        base.update(env or {})
        result = CliRunner().invoke(cli, list(args), env=base, catch_exceptions=False)
        if ok:
            assert result.exit_code == 0, result.output + result.stderr
        return result
    return invoke
