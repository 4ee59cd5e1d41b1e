"""Pydantic models of the HTTP API: they document it (OpenAPI at ``/docs``).

Request bodies are validated by :mod:`embedclf.http.validate` (the task contract's own rules, one
JSON error shape), not by these models; responses are built to match them.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from embedclf.http.validate import DEFAULT_TIMEOUT_S, MAX_TIMEOUT_S


class ClassifyBody(BaseModel):
    """Send exactly one of ``head``/``heads`` and one of ``text``/``texts``."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"head": "support", "text": "Where is my parcel?", "request_id": "abc-1", "wait": True},
        {"heads": ["support", "urgency"], "texts": ["refund please", "app crashes"], "request_ids": ["r1", "r2"]},
    ]})

    head: str | None = Field(None, description="Name of an active head.")
    heads: list[str] | None = Field(None, description="1-16 distinct head names: each text is embedded once, "
                                                         "one result entry per text and head.")
    text: str | None = Field(None, description="The text (non-empty, no NUL, at most EMBEDCLF_MAX_TEXT_CHARS).")
    texts: list[str] | None = Field(None, description="1 to EMBEDCLF_MAX_TEXTS_PER_TASK texts, one task.")
    request_id: str | int | None = Field(None, description="Your correlation id (with text), <= 256 chars.")
    request_ids: list[str | int | None] | None = Field(
        None, description="With texts: one id (or null) per text.")
    wait: bool = Field(False, description="Answer with the result (200) instead of the task id (202).")
    timeout_s: float | None = Field(None, gt=0, le=MAX_TIMEOUT_S,
                                       description=f"With wait: give up after this many seconds from arrival "
                                                   f"(504); default {DEFAULT_TIMEOUT_S:g}.")


class Accepted(BaseModel):
    task_id: str = Field(description="The Celery task id; the rows' task_id.")
    items: int = Field(description="Texts in the task (text i has item i).")
    result_url: str = Field(description="Where the result appears: GET it.")


class TopLabel(BaseModel):
    label: str
    score: float


class Entry(BaseModel):
    """One (text, head) answer: the shape of embedclf.results."""

    status: Literal["ok", "error"]
    label: str | None = Field(description="Best label; null when the head abstained or on error.")
    score: float | None
    top3: list[TopLabel] | None
    labels: list[TopLabel] | None = Field(description="Multi-label heads: every label over its threshold.")
    abstained: bool | None
    head_name: str | None = Field(description="Null: an error row that stands for every head of the task.")
    head_version: int | None
    item: int | None = Field(description="The text's position; null: the row answers for the whole task.")
    request_id: str | None
    error: str | None


class TaskResult(BaseModel):
    task_id: str
    status: Literal["ok", "partial", "error"] = Field(
        description="ok: every entry ok; partial: some entries are errors; error: the task failed as a whole.")
    result: Entry | list[Entry] = Field(
        description="One entry for a head+text request (and for a task with a single row read back by id), "
                    "else a list in (item, head) order.")


class ErrorBody(BaseModel):
    model_config = ConfigDict(extra="allow")

    error: str = Field(description="Machine-readable code, e.g. invalid_request, unknown_head, timeout.")
    message: str = Field(description="One line for humans.")


class Head(BaseModel):
    name: str
    version: int
    labels: list[str]
    embedder: str = Field(description="Embedder id the head was trained on, e.g. st:all-MiniLM-L6-v2.")
    created_at: str | None
    activated_at: str | None


class Heads(BaseModel):
    heads: list[Head]


class Probe(BaseModel):
    model_config = ConfigDict(extra="allow")

    ok: bool


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    text = {400: "Malformed JSON", 401: "Missing or wrong bearer token", 404: "Not found",
            413: "Body or task message too large", 415: "Content-Type is not JSON",
            422: "Invalid request or unknown head", 503: "Broker or Postgres unavailable, or too many waiting",
            504: "No result within timeout_s"}
    return {c: {"model": ErrorBody, "description": text.get(c, "Error")} for c in codes}
