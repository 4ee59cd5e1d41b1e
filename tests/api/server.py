"""A real uvicorn server for the HTTP API on a free port, in a thread."""

from __future__ import annotations

import threading
import time

from tests.helpers import free_port


class ApiServer:
    """``create_app(settings)`` served by uvicorn in a thread, as ``embedclf serve`` serves it."""

    def __init__(self, settings, **kwargs) -> None:
        import uvicorn

        from embedclf.http.app import create_app

        self.settings = settings
        self.port = free_port()
        config = uvicorn.Config(create_app(settings, **kwargs), host="127.0.0.1", port=self.port,
                                log_level="warning", access_log=False)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name=f"api-{self.port}", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ApiServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert self.thread.is_alive(), "the server thread died at start"
            assert time.monotonic() < deadline, "server not started after 30s"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(30)
        assert not self.thread.is_alive(), "server did not stop"
