"""The ``embedclf`` admin CLI: nouns with verbs (``heads train``, ``db upgrade``, ...)."""

from __future__ import annotations

import logging

import click

from embedclf.cli import (
    bench,
    bench_gguf,
    bench_http,
    bench_ml,
    bench_queue,
    config_cmd,
    data,
    db,
    demo,
    evaluate,
    heads,
    health,
    queue,
    report,
    serve,
    services,
    zeroshot,
)
from embedclf.cli.base import AppError, Group
from embedclf.config import Settings

__all__ = ["AppError", "cli", "main"]


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="embedclf")
@click.option("-v", "--verbose", is_flag=True, help="Log more.")
@click.pass_context
def cli(ctx: click.Context, verbose: bool) -> None:
    """embedclf: text classification with LLM embeddings and small heads."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        ctx.obj = Settings.from_env()
    except ValueError as exc:
        raise AppError(f"bad settings: {exc}") from None


def main() -> None:
    cli(prog_name="embedclf")


def _register() -> None:
    """Every command, in one list: modules define commands, only this file attaches them."""
    for command in (db.db, heads.heads, data.data, data.feedback, evaluate.evaluate, queue.enqueue, queue.results,
                    db.worker, serve.serve, health.health, demo.demo, services.services, bench.bench,
                    config_cmd.config_cmd):
        cli.add_command(command)
    for command in (zeroshot.zeroshot, report.report_cmd):
        heads.heads.add_command(command)
    for command in (bench_gguf.make_gguf, bench_queue.queue_bench, bench_http.http_bench, bench_ml.mlheads):
        bench.bench.add_command(command)


_register()

if __name__ == "__main__":  # pragma: no cover
    main()
