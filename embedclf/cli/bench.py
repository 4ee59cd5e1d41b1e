"""``embedclf bench embed|e2e|train|heads``: figures printed, or one JSON object with --json.

embed, e2e and train measure throughput; heads compares head variants by cross-validation.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click

from embedclf.cli.base import AppError
from embedclf.cli.common import echo_json, embedder_option, load_embedder_verbose, params_from
from embedclf.config import DEFAULT_EMBEDDER, BatchSettings, Settings


def _int_list(ctx: click.Context, param: click.Parameter, value: str | None) -> list[int] | None:
    if value is None:
        return None
    try:
        out = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {value!r}") from None
    if not out or min(out) < 1:
        raise click.BadParameter(f"expected positive integers, got {value!r}")
    return out


def worker_env_pairs(values: tuple[str, ...], reserved: frozenset[str] = frozenset()) -> tuple[tuple[str, str], ...]:
    """``NAME=VALUE`` pairs naming known settings, each value valid for its setting; the benchmark's own
    settings (``BENCH_SETS`` and ``reserved``) are refused."""
    from embedclf.bench.e2e import BENCH_SETS
    from embedclf.config import ConfigError, Settings, env_names

    pairs = []
    for item in values:
        name, sep, value = item.partition("=")
        if not sep or name not in env_names():
            raise AppError(f"--worker-env {item!r} is not EMBEDCLF_NAME=VALUE for a known setting (embedclf config)")
        if name in BENCH_SETS or name in reserved:
            raise AppError(f"--worker-env: {name} is set by the benchmark itself (see its own options)")
        try:
            Settings.from_env({name: value})
        except ConfigError as exc:
            raise AppError(f"--worker-env: {exc}") from None
        pairs.append((name, value))
    return tuple(pairs)


def data_option(f):
    return click.option("--data", "data_path", required=True, type=click.Path(dir_okay=False),
                        help="CSV/TSV/JSONL/JSON/TXT file.")(f)


def json_option(f):
    return click.option("--json", "as_json", is_flag=True, help="Print one JSON object (no progress bars).")(f)


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Let SIGTERM unwind like Ctrl-C, so temp databases and workers are cleaned up."""
    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _spec(settings: Settings, spec: str | None) -> str:
    from embedclf.embedders.spec import parse_spec

    spec = spec or settings.embedder
    parse_spec(spec)  # a bad spec fails before anything is loaded
    return spec


@click.group()
def bench() -> None:
    """Benchmarks: raw embedder speed, end to end through workers, head training."""


@bench.command()
@data_option
@click.option("--text-col", default="text", show_default=True, help="Column holding the text.")
@click.option("-n", "n", default=2000, show_default=True, type=click.IntRange(1), help="First N texts of the file.")
@click.option("--embedder", "embedder_specs", multiple=True,
              help=f"Embedder spec (default: EMBEDCLF_EMBEDDER, else {DEFAULT_EMBEDDER}). Repeat to measure several "
                   "in one run: interleaved, with ratios to the first.")
@click.option("--batch-sizes", default="16,64,256", show_default=True, callback=_int_list,
              help="Comma-separated texts per embed_batch call.")
@click.option("--rounds", default=1, show_default=True, type=click.IntRange(1, 50),
              help="Time every (embedder, batch size) this many times, interleaved; report the median.")
@click.option("--processes", default="1", show_default=True, callback=_int_list,
              help="Comma-separated process counts: run each embedder in P processes at once (each embeds all N "
                   "texts; aggregate texts/s), every P measured in the same interleaved run. With any P > 1 every "
                   "entry runs in child processes. Pair with ?threads=1&lanes=1 to compare processes with threads.")
@click.option("--n-batch", default=None, callback=_int_list,
              help="llama specs only: comma-separated n_batch values; reloads the model with ?n_batch=X for each.")
@json_option
@click.pass_obj
def embed(settings: Settings, data_path: str, text_col: str, n: int, embedder_specs: tuple[str, ...],
          batch_sizes: list[int], rounds: int, processes: list[int], n_batch: list[int] | None, as_json: bool
          ) -> None:
    """Raw embed_batch throughput on the first N texts, in file order, per batch size (and per embedder)."""
    from embedclf.bench import raw
    from embedclf.bench.machine import machine_info
    from embedclf.data import load_texts
    from embedclf.embedders.spec import parse_spec

    specs = [_spec(settings, s) for s in embedder_specs] or [_spec(settings, None)]
    if n_batch and (len(specs) > 1 or parse_spec(specs[0]).kind != "llama"):
        raise AppError(f"--n-batch applies to llama.cpp specs only, one at a time, not {', '.join(map(repr, specs))}")
    if n_batch and (processes != [1] or rounds > 1):
        raise AppError("--n-batch cannot be combined with --processes or --rounds")
    texts = [t for _, t in load_texts(data_path, text_col) if isinstance(t, str) and t.strip()][:n]
    if not texts:
        raise AppError(f"{data_path}: no non-empty texts in column {text_col!r}")
    if n_batch:  # one llama model, reloaded per n_batch value (one copy in memory at a time)
        runs: list[raw.RawRun] = []
        for nb in n_batch:
            emb = load_embedder_verbose(settings, raw.with_option(specs[0], "n_batch", nb), quiet=as_json)
            try:
                model_ids = [emb.model_id]
                runs += raw.sweep(emb, texts, batch_sizes, quiet=as_json, n_batch=nb)
            finally:
                emb.close()
        results, entries = [runs], [(specs[0], 1)]
    else:
        results, model_ids, entries = _measure_specs(settings, specs, texts, batch_sizes, rounds, processes,
                                                     as_json)
    rows: list[dict[str, Any]] = [
        {"embedder_spec": s, "processes": p, "embedder": m, "tokens": rs[0].tokens,
         "runs": [r.to_dict() for r in rs], "best": raw.best(rs).to_dict()}
        for (s, p), m, rs in zip(entries, model_ids, results)]
    for e, ratio in zip(rows, raw.ratios(results)):
        e["ratio_to_first"] = ratio
    report = {"mode": "embed", "data": data_path, "n": len(texts), "rounds": rounds, "processes": processes,
              **{k: rows[0][k] for k in ("embedder", "embedder_spec", "tokens", "runs", "best")},
              "embedders": rows, "machine": machine_info(", ".join(dict.fromkeys(model_ids)))}
    if as_json:
        echo_json(report)
    else:
        from embedclf.bench.report import embed_report

        embed_report(report, click.echo)


def _measure_specs(settings: Settings, specs: list[str], texts: list[str], batch_sizes: list[int], rounds: int,
                   processes: list[int], quiet: bool) -> tuple[list, list[str], list[tuple[str, int]]]:
    """Load every (spec, process count) entry, then time them all interleaved.

    With any count above 1 each entry is a group of child processes (a count of 1 too, so all entries pay
    the same process overheads); otherwise the embedders run in this process.
    """
    from contextlib import ExitStack

    from embedclf.bench import raw

    entries = [(spec, p) for spec in specs for p in processes]
    with ExitStack() as stack:
        measurers: list[Any] = []
        model_ids: list[str] = []
        for spec, p in entries:
            if max(processes) > 1:
                from embedclf.bench.raw_procs import ProcessGroup

                if not quiet:
                    click.echo(f"starting {p} process(es) with {spec} ...", err=True)
                group = stack.enter_context(ProcessGroup(spec, settings.model_dir, texts, p))
                measurers.append(group.measure)
                model_ids.append(group.model_id)
            else:
                emb = load_embedder_verbose(settings, spec, quiet=quiet)
                stack.callback(emb.close)
                measurers.append(raw.in_process(emb, texts, quiet=quiet))
                model_ids.append(emb.model_id)
        names = [spec if p == 1 else f"{spec} x{p}" for spec, p in entries]
        return raw.compare(measurers, names, batch_sizes, rounds), model_ids, entries


@bench.command()
@data_option
@click.option("--text-col", default="text", show_default=True, help="Column holding the text.")
@click.option("--label-col", default="label", show_default=True, help="Labels for the throw-away head.")
@click.option("-n", "n", required=True, type=click.IntRange(1), help="Texts to send (the first N of the file).")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64), help="Worker processes.")
@embedder_option
@click.option("--batch-size", default=BatchSettings().max_size, show_default=True, type=click.IntRange(1),
              help="EMBEDCLF_BATCH_MAX_SIZE of the workers (default: the workers' default) and the raw-throughput "
                   "chunk size.")
@click.option("--max-wait-ms", default=50, show_default=True, type=click.IntRange(0),
              help="EMBEDCLF_BATCH_MAX_WAIT_MS of the workers.")
@click.option("--rate", default=0.0, show_default=True, type=click.FloatRange(0),
              help="Send one task at a time at this many tasks/s (low-load latency); 0: all at once.")
@click.option("--per-task", default=None, type=click.IntRange(1),
              help="Texts per task when sending all at once (default: the batch size).")
@click.option("--timeout", "timeout_s", default=900, show_default=True, type=click.IntRange(1),
              help="Seconds to wait for all rows.")
@click.option("--rounds", default=3, show_default=True, type=click.IntRange(1, 50),
              help="Raw pass and end-to-end pass alternating this many times on the same workers; the round "
                   "with the median ratio is reported, and the mean of all with its 95 % interval (a shared "
                   "machine's load drifts between passes: 40 rounds narrow the interval to about +-0.006 here).")
@click.option("--head", "head", type=click.Choice(["default", "full", "hybrid", "dense"]), default="default",
              show_default=True,
              help="The head served: heads train's default (TF-IDF member, kNN member when the validation split keeps "
                   "it), full (both members whatever the split says: e.g. on the null embedder's vectors), hybrid "
                   "(TF-IDF member, no kNN member) or dense (neither).")
@click.option("--worker-env", "worker_env", multiple=True, metavar="EMBEDCLF_NAME=VALUE",
              help="A setting for the workers (repeatable), e.g. EMBEDCLF_HEAD_OVERLAP=false; the benchmark passes "
                   "no other EMBEDCLF_* variable of its own environment to them.")
@json_option
@click.pass_obj
def e2e(settings: Settings, data_path: str, text_col: str, label_col: str, n: int, workers: int,
        embedder_spec: str | None, batch_size: int, max_wait_ms: int, rate: float, per_task: int | None,
        timeout_s: int, rounds: int, head: str, worker_env: tuple[str, ...],
        as_json: bool) -> None:
    """End to end: a producer process -> Redis -> K workers -> Postgres (temporary DB), vs raw speed."""
    from embedclf.bench.e2e import E2EParams, run_e2e
    from embedclf.bench.machine import machine_info
    from embedclf.data import load_labeled

    spec = _spec(settings, embedder_spec)
    pairs = worker_env_pairs(worker_env)
    data = load_labeled(data_path, text_col, label_col)
    texts, labels = data.texts[:n], data.labels[:n]
    if len(texts) < n and not as_json:
        click.echo(f"note: {data_path} has only {len(texts)} labelled rows; sending those", err=True)
    params = E2EParams(spec=spec, workers=workers, batch_size=batch_size, max_wait_ms=max_wait_ms,
                       rate=rate, per_task=per_task, timeout_s=float(timeout_s), rounds=rounds, head=head,
                       worker_env=pairs)
    with sigterm_as_interrupt():
        report = run_e2e(texts, labels, params, settings,
                         lambda s: load_embedder_verbose(settings, s, quiet=as_json), quiet=as_json,
                         head_data=(data.texts, data.labels))
    report["mode"] = "e2e"
    report["data"] = data_path
    report["machine"] = machine_info(report["embedder"])
    if as_json:
        echo_json(report)
    else:
        from embedclf.bench.report import e2e_report

        e2e_report(report, click.echo)
    if report["error_rows"]:
        raise AppError(f"{report['error_rows']} error rows (first: {report['first_error']})")


@bench.command()
@data_option
@click.option("--text-col", default="text", show_default=True, help="Column holding the text.")
@click.option("--label-col", default="label", show_default=True, help="Column holding the label.")
@click.option("-n", "n", default=None, type=click.IntRange(1), help="First N labelled rows (default: all).")
@embedder_option
@click.option("--epochs", default=None, type=click.IntRange(1, 10_000), help="Max epochs (default 30).")
@click.option("--cache", "use_cache", is_flag=True,
              help="Through the Postgres embedding cache in a temporary database: a first run embeds and stores, "
                   "a second (the retrain) reads dataset and vectors back and trains.")
@json_option
@click.pass_obj
def train(settings: Settings, data_path: str, text_col: str, label_col: str, n: int | None,
          embedder_spec: str | None, epochs: int | None, use_cache: bool, as_json: bool) -> None:
    """Embed once, then time training heads train's default head on the cached embeddings."""
    from embedclf.bench.machine import machine_info
    from embedclf.bench.train import run_train
    from embedclf.data import load_labeled

    spec = _spec(settings, embedder_spec)
    data = load_labeled(data_path, text_col, label_col)
    texts, labels = data.texts[:n], data.labels[:n]
    emb = load_embedder_verbose(settings, spec, quiet=as_json)
    try:
        params = params_from(epochs, 0)  # heads train's default head
        if use_cache:
            return _train_cached(settings, emb, texts, labels, params, as_json, data_path, spec)
        report = run_train(emb, texts, labels, params, quiet=as_json)
    finally:
        emb.close()
    report.update(mode="train", data=data_path, embedder_spec=spec, machine=machine_info(report["embedder"]))
    if as_json:
        echo_json(report)
    else:
        from embedclf.bench.report import train_report

        train_report(report, click.echo)


@bench.command("heads")
@data_option
@click.option("--text-col", default="text", show_default=True, help="Column holding the text.")
@click.option("--label-col", default="label", show_default=True, help="Column holding the label.")
@click.option("-n", "n", default=None, type=click.IntRange(1), help="First N labelled rows (default: all).")
@embedder_option
@click.option("--variants", default="mlp,mlp+linear,linear", show_default=True,
              help="Comma-separated head variants; the first is the reference for paired differences.")
@click.option("--folds", default=5, show_default=True, type=click.IntRange(2, 20),
              help="Cross-validation folds (stratified); every variant sees the same folds.")
@click.option("--epochs", default=None, type=click.IntRange(1, 10_000), help="Max epochs (default 30).")
@click.option("--no-cache", is_flag=True, help="Do not read or fill the Postgres embedding cache.")
@json_option
@click.pass_obj
def heads_cv(settings: Settings, data_path: str, text_col: str, label_col: str, n: int | None,
             embedder_spec: str | None, variants: str, folds: int, epochs: int | None, no_cache: bool,
             as_json: bool) -> None:
    """Compare head variants by k-fold cross-validation on one file (never a test file)."""
    import sys

    from embedclf.bench.heads import check_folds, cross_validate, heads_report, parse_variants
    from embedclf.bench.machine import machine_info
    from embedclf.cli.common import embed_progress
    from embedclf.data import load_labeled
    from embedclf.progress import bar as progress_bar
    from embedclf.training.trainer import TrainParams

    names = parse_variants(variants)  # a ValueError is the CLI's one-line error
    spec = _spec(settings, embedder_spec)
    data = load_labeled(data_path, text_col, label_col)
    texts, labels = data.texts[:n], data.labels[:n]
    check_folds(labels, folds)  # before the model loads
    from embedclf.cli.data import cached

    emb = cached(settings, load_embedder_verbose(settings, spec, quiet=as_json), no_cache, as_json)
    try:
        X = emb.embed(texts, embed_progress(as_json)(len(texts)))
    finally:
        emb.inner.close()
    base = TrainParams() if epochs is None else TrainParams(epochs=epochs)
    with progress_bar(total=folds * len(names), desc="cross-validating", unit="head", file=sys.stderr, disable=as_json,
              dynamic_ncols=True) as bar:
        report = cross_validate(X, labels, names, folds, base, on_fold=lambda _: bar.update(1), texts=texts)
    report.update(mode="heads", data=data_path, embedder=emb.model_id, embedder_spec=spec,
                  machine=machine_info(emb.model_id))
    if as_json:
        echo_json(report)
    else:
        heads_report(report, click.echo)


def _train_cached(settings: Settings, emb, texts, labels, params, as_json: bool, data_path: str, spec: str) -> None:
    from embedclf.bench.infra import temp_database
    from embedclf.bench.machine import machine_info
    from embedclf.bench.train import cached_report, run_train_cached
    from embedclf.store.db import make_engine

    with sigterm_as_interrupt(), temp_database(settings.database_url) as url:
        engine = make_engine(url, pool_size=1, max_overflow=1)
        try:
            report = run_train_cached(emb, texts, labels, params, as_json, engine)
        finally:
            engine.dispose()
    report.update(mode="train-cache", data=data_path, embedder_spec=spec, machine=machine_info(report["embedder"]))
    if as_json:
        echo_json(report)
    else:
        cached_report(report, click.echo)
