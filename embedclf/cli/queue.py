"""``embedclf enqueue`` and ``embedclf results``."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json

import click

from embedclf.cli.base import AppError
from embedclf.cli.db import require_database
from embedclf.config import Settings, mask_url
from embedclf.progress import bar as progress_bar

START_REDIS = ("Start Redis with `docker compose up -d redis` or `redis-server --daemonize yes --bind 127.0.0.1 "
               "--port 6379 --appendonly yes`, or set EMBEDCLF_BROKER_URL")


def require_broker(settings: Settings):
    from embedclf.client import Client

    client = Client.from_settings(settings)
    try:
        client.redis.ping()
    except Exception as exc:  # noqa: BLE001 - any connect failure is reported the same way
        client.close()
        raise AppError(
            f"cannot reach the broker at {mask_url(settings.broker_url)} ({' '.join(str(exc).split())[:200]}). "
            + START_REDIS
        ) from None
    return client


@click.command()
@click.option("--head", "head", required=True, multiple=True,
              help="Head name to classify with; repeat it for several heads (one embedding, a row per head).")
@click.option("--file", "path", required=True, type=click.Path(dir_okay=False),
              help="Texts: .csv, .tsv, .jsonl/.ndjson, .json or .txt (one text a line).")
@click.option("--text-col", default="text", show_default=True, help="Column holding the text.")
@click.option("--request-id-col", default=None, help="Column to send as request_id.")
@click.option("--ids-out", type=click.Path(dir_okay=False),
              help="Write where each row's results will be, one 'task_id<TAB>item' line per input row, here.")
@click.option("--per-task", type=click.IntRange(1, 100_000), default=None,
              help="Texts per task (default 256; 1 = one task per text). At most EMBEDCLF_MAX_TEXTS_PER_TASK.")
@click.option("--timeout", "timeout_s", type=click.FloatRange(0, 86400), default=None,
              help="Seconds to keep retrying an unreachable broker (default EMBEDCLF_ENQUEUE_RETRY_S, 30).")
@click.option("--strict", is_flag=True,
              help="Refuse heads that are not active in the database (default: warn and send anyway).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (no progress bar).")
@click.pass_obj
def enqueue(settings: Settings, head: tuple[str, ...], path: str, text_col: str, request_id_col: str | None,
            ids_out: str | None, per_task: int | None, timeout_s: float | None, strict: bool, quiet: bool,
            as_json: bool) -> None:
    """Enqueue every row of a file for classification (multi-text `embedclf.classify` tasks)."""
    from dataclasses import replace

    from embedclf.client import BrokerUnavailable, Client, EnqueueError
    from embedclf.data import load_texts

    if len(set(head)) != len(head) or len(head) > 16:
        raise click.BadParameter("give 1 to 16 distinct head names", param_hint="--head")
    rows = load_texts(path, text_col, request_id_col)
    if timeout_s is not None:
        settings = replace(settings, enqueue_retry_s=timeout_s)
    quiet = quiet or as_json
    # No up-front ping: the client itself waits out a broker outage (and says so as it happens).
    client = Client.from_settings(settings)
    try:
        client.wait_for_broker()  # before the progress bar, so a broker that never came is one line
        _check_heads(settings, head, strict)
        with progress_bar(total=len(rows), desc="enqueue", unit="text", disable=quiet) as bar:
            refs = client.classify_many(head[0] if len(head) == 1 else list(head), [t for _, t in rows],
                                        [r for r, _ in rows], per_task=per_task, progress=bar.update)
    except BrokerUnavailable as exc:
        if ids_out:
            with open(ids_out, "w") as f:
                f.write("".join(f"{r.task_id}\t{r.item}\n" for r in exc.refs))
        raise AppError(f"cannot reach the broker: {exc}. " + START_REDIS) from None
    except EnqueueError as exc:
        raise AppError(str(exc)) from None
    finally:
        client.close()
    if ids_out:
        with open(ids_out, "w") as f:
            f.write("".join(f"{r.task_id}\t{r.item}\n" for r in refs))
    heads_txt = f"head {head[0]!r}" if len(head) == 1 else f"heads {', '.join(map(repr, head))}"
    n_tasks = len({r.task_id for r in refs})
    if as_json:
        click.echo(json.dumps({"texts": len(refs), "tasks": n_tasks, "heads": list(head), "queue": settings.queue,
                               "ids_out": ids_out}))
        return
    click.echo(f"enqueued {len(refs)} texts in {n_tasks} tasks for {heads_txt} on queue {settings.queue!r}")


def _check_heads(settings: Settings, heads: tuple[str, ...], strict: bool) -> None:
    """Warn (or with ``strict`` refuse) when a head is not active, if the database answers."""
    from embedclf.store.db import make_engine
    from embedclf.store.repository import active_versions

    engine = make_engine(settings.database_url, connect_args={"connect_timeout": 3})
    try:
        active = active_versions(engine)
    except Exception:  # noqa: BLE001 - the database is not needed to enqueue: check what can be checked
        if strict:
            raise AppError("--strict: cannot check the heads, the database does not answer "
                           "(EMBEDCLF_DATABASE_URL)") from None
        return
    finally:
        engine.dispose()
    unknown = [h for h in heads if h not in active]
    if not unknown:
        return
    names = ", ".join(map(repr, unknown))
    known = ", ".join(sorted(active)) or "none"
    if strict:
        raise AppError(f"no active head {names} (active heads: {known}); nothing was enqueued")
    click.echo(f"warning: no active head {names} (active heads: {known}); their rows will be errors unless "
               "one is activated before a worker takes the tasks", err=True)


COLUMNS = ("completed_at", "task_id", "item", "request_id", "head_name", "head_version", "status", "label", "abstained",
           "score", "top3", "error", "text")


def _since(value: str | None) -> dt.datetime | None:
    """An ISO 8601 time, or a duration back from now: 90s, 10m, 2h, 3d."""
    if value is None:
        return None
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    v = value.strip()
    if v[-1:].lower() in units and v[:-1].replace(".", "", 1).isdigit():
        return dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=float(v[:-1]) * units[v[-1].lower()])
    try:
        t = dt.datetime.fromisoformat(v)
    except ValueError:
        raise click.BadParameter(f"expected an ISO 8601 time or a duration like 10m, 2h, 3d; got {value!r}",
                                 param_hint="--since") from None
    return t if t.tzinfo else t.replace(tzinfo=dt.timezone.utc)


@click.command()
@click.option("--head", default=None, help="Only rows of this head.")
@click.option("--status", type=click.Choice(["ok", "error"]), default=None, help="Only ok rows, or only errors.")
@click.option("--request-id", default=None, help="Only rows with this request id.")
@click.option("--task-id", "task_ids", multiple=True, help="Only rows of this task (repeatable).")
@click.option("--label", default=None, help="Only rows with this label.")
@click.option("--since", default=None, help="Only rows completed since: an ISO 8601 time or 90s, 10m, 2h, 3d.")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 1_000_000),
              help="At most this many rows.")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True,
              help="table, csv, or JSON (one object per line).")
@click.option("--json", "as_json", is_flag=True, help="Same as --format json.")
@click.pass_obj
def results(settings: Settings, head: str | None, status: str | None, request_id: str | None,
            task_ids: tuple[str, ...], label: str | None, since: str | None, limit: int, fmt: str,
            as_json: bool) -> None:
    """Show result rows from Postgres, newest first."""
    from embedclf.store.repository import query_predictions

    fmt = "json" if as_json else fmt
    rows = query_predictions(require_database(settings), head=head, status=status, request_id=request_id,
                             task_ids=list(task_ids) or None, label=label, since=_since(since), limit=limit)
    if fmt == "json":
        for r in rows:
            click.echo(json.dumps({k: r[k].isoformat() if isinstance(r[k], dt.datetime) else r[k] for k in COLUMNS}))
    elif fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(COLUMNS)
        for r in rows:
            w.writerow([json.dumps(r[k]) if k == "top3" and r[k] is not None else r[k] for k in COLUMNS])
        click.echo(buf.getvalue(), nl=False)
    else:
        click.echo(format_table(rows))


def _cell(value: object, width: int) -> str:
    s = "" if value is None else " ".join(str(value).split())
    return s if len(s) <= width else s[: width - 1] + "…"


def format_table(rows: list[dict]) -> str:
    if not rows:
        return "no results"
    out = [f"{'completed':<20} {'task_id:item':<42} {'head':<14} {'v':>3} {'status':<6} {'label':<18} {'score':>6}  "
           f"{'top-3 / error':<44} text"]
    for r in rows:
        where = f"{r['task_id']}:{'*' if r.get('item') is None else r['item']}"
        if r["status"] == "ok":
            detail = ", ".join(f"{t['label']} {t['score']:.2f}" for t in r["top3"] or [])
        else:
            detail = r["error"]
        score = f"{r['score']:.3f}" if r["score"] is not None else ""
        out.append(f"{r['completed_at']:%Y-%m-%d %H:%M:%S}  {_cell(where, 42):<42} {_cell(r['head_name'], 14):<14} "
                   f"{r['head_version'] or '':>3} {r['status']:<6} "
                   f"{_cell('(abstained)' if r.get('abstained') else r['label'], 18):<18} {score:>6}  "
                   f"{_cell(detail, 44):<44} {_cell(r['text'], 50)}")
    return "\n".join(out)
