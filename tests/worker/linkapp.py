"""Another application's Celery app for the callback tests: its tasks record what they were called with."""

from __future__ import annotations

import json
import os

from celery import Celery

app = Celery("linkapp", broker=os.environ.get("LINK_BROKER", "redis://127.0.0.1:6379/0"), set_as_current=False)
app.conf.update(task_serializer="json", accept_content=["json"], task_default_queue="linkapp",
                worker_hijack_root_logger=False)
CALLS = "linkapp:calls"


def _record(entry: dict) -> None:
    import redis

    redis.Redis.from_url(app.conf.broker_url).rpush(CALLS, json.dumps(entry))


@app.task(name="linkapp.on_result")
def on_result(result):
    _record({"task": "on_result", "result": result})


@app.task(name="linkapp.on_error")
def on_error(task_id):
    _record({"task": "on_error", "task_id": task_id})
