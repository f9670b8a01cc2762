"""The floor under every Tornado answer: a handler that returns a constant JSON envelope.

``python -m bench.floor_app <port>`` serves ``GET /`` on 127.0.0.1 with the body a one-task
list answer has, and nothing else (no auth, no headers of ours, no access log).  The listing
benchmark times it with the same client as ours and Flower, in the same run: what a request
costs before either system does anything.
"""

from __future__ import annotations

import asyncio
import json
import sys

import tornado.web

BODY = json.dumps(
    {
        "code": 200,
        "message": "success",
        "data": {"total": 1, "page": 1, "size": 10, "items": [{"celery_id": "0" * 36, "status": "SUCCESS"}]},
    }
)


class ConstantHandler(tornado.web.RequestHandler):
    """Answers every GET with :data:`BODY`."""

    def get(self) -> None:
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.finish(BODY)


async def serve(port: int) -> None:
    app = tornado.web.Application([(r"/", ConstantHandler)], log_function=lambda _handler: None)
    app.listen(port, "127.0.0.1")
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1])))
