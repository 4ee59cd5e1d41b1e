"""The HTTP API (``embedclf serve``): classify over HTTP for apps that do not speak Celery.

Modules:

* :mod:`.validate` -- a request body becomes a :class:`~.validate.Submission` or an :class:`~.validate.ApiError`
  (4xx), with the task contract's own rules (:func:`embedclf.payload.parse_request`); pure;
* :mod:`.backend` -- what the endpoints use: one :class:`~embedclf.client.Client` (enqueue), one
  :class:`~embedclf.waiter.ResultHub` (waits, one LISTEN connection for every request), a small
  SQLAlchemy pool (results, heads, readiness);
* :mod:`.schemas` -- pydantic models: the OpenAPI document at ``/docs``;
* :mod:`.app` -- :func:`~.app.create_app`, the FastAPI app factory (nothing is built at import time).

See docs/http.md.
"""
