"""A publisher of realistic Celery task event sequences, at a controlled rate.

Each task produces what a client and a prefork worker would send: ``task-sent`` (from the
client, one message), then ``task-received``, ``task-started`` and ``task-succeeded`` or
``task-failed`` from one of two workers, spread over the task's run time and, like a prefork
worker's dispatcher, buffered into ``task.multi`` messages (``buffer_group=['task']``, up to
24 events or 0.1 s).  Workers also send ``worker-heartbeat`` every 2 s (through Celery's own
:class:`~celery.events.EventDispatcher`).  Task events go to the ``celeryev`` exchange (a
fanout exchange on Redis) in the envelope kombu gives them, captured from the dispatcher (see
:class:`Wire`), so any consumer sees what real workers would send, while the load generator
leaves the CPU to the systems under test.

Run in its own process (:func:`start`): the rate is a schedule (task ``i`` is due at
``t0 + i / rate``), and ``allowed`` (a shared counter) lets the caller hold the publisher back
(flow control for bulk loads).  Every ``sample_every``-th task's id and terminal-event time go
to ``samples`` (for systems whose state can only be polled).
"""

from __future__ import annotations

import base64
import heapq
import json
import multiprocessing as mp
import os
import random
import socket
import time
import uuid
from typing import Any

TYPES = [
    ("domain_task", 40),
    ("ip_task", 20),
    ("site_task", 15),
    ("run_risk_cruising", 10),
    ("fofa_task", 10),
    ("github_task", 5),
]
FAIL_RATIO = 0.1
TRACEBACK = (
    "Traceback (most recent call last):\n"
    '  File "/srv/workers/pipelines.py", line 212, in run\n'
    "    result = stage(ctx, data)\n"
    '  File "/srv/workers/recon/portscan.py", line 88, in scan_ports\n'
    "    raise ConnectionError(f'scan of {target} failed: {reason}')\n"
    "ConnectionError: scan of 203.0.113.7 failed: host unreachable\n"
)


def _task_type(rng: random.Random) -> str:
    pick = rng.uniform(0, 100)
    for name, weight in TYPES:
        pick -= weight
        if pick <= 0:
            return name
    return TYPES[0][0]


def _kwargs_repr(task_type: str, i: int, task_id: str) -> str:
    data = {
        "name": f"bench-{i}",
        "target": f"host{i % 997}.example.com",
        "type": "domain",
        "task_tag": "task",
        "options": {
            "domain_brute": True,
            "domain_brute_type": "small",
            "port_scan": True,
            "site_identify": True,
        },
        "task_id": task_id,
    }
    return repr({"options": {"celery_action": task_type, "data": data}})


class Wire:
    """Puts one dispatcher's events on Redis exactly as kombu would, for a fraction of the CPU.

    Celery's :class:`~celery.events.EventDispatcher` costs about a millisecond of CPU per
    message on this machine (kombu prepares, routes and encodes each one, and its Redis
    transport builds a new client per fanout publish).  Real clients and workers pay that on
    their own machines; here it would come out of the two cores the systems under test
    share.  So the envelope is captured once from the dispatcher itself (what kombu hands its
    Redis channel: headers, properties, body encoding, and the pub/sub topic), and each
    message is that envelope with a new body and delivery tag.  The events themselves are
    built like Celery's (``hostname``, ``utcoffset``, ``pid``, the dispatcher's Lamport clock,
    the fields, ``timestamp``, ``type``); worker events are buffered into ``task.multi``
    messages like a prefork worker's dispatcher (up to ``buffer_limit`` events or each flush).
    """

    def __init__(self, dispatcher: Any, buffer_limit: int = 24) -> None:
        from celery.utils.time import utcoffset

        self.hostname = dispatcher.hostname
        self.pid = dispatcher.pid
        self.clock = dispatcher.clock
        self.utcoffset = utcoffset()
        self.buffer_limit = buffer_limit
        self.buffer: list[dict[str, Any]] = []
        channel = dispatcher.producer.channel
        captured: list[tuple[str, dict[str, Any]]] = []
        original = channel._put_fanout
        channel._put_fanout = lambda exchange, message, routing_key, **kw: captured.append(
            (exchange, message)
        )
        try:
            dispatcher._publish({"type": "probe"}, dispatcher.producer, "task.probe")
        finally:
            channel._put_fanout = original
        self.exchange, envelope = captured[0]
        self.properties = {k: v for k, v in envelope["properties"].items() if k != "delivery_tag"}
        self.envelope = {k: v for k, v in envelope.items() if k not in ("body", "properties")}
        assert envelope["properties"].get("body_encoding") == "base64", envelope["properties"]
        self.topics = {
            rk: channel._get_publish_topics(self.exchange, rk) for rk in ("task.sent", "task.multi")
        }

    def event(self, type: str, **fields: Any) -> dict[str, Any]:
        """An event as Celery's dispatcher builds it (the clock moves forward)."""
        return {
            "hostname": self.hostname,
            "utcoffset": self.utcoffset,
            "pid": self.pid,
            "clock": self.clock.forward(),
            **fields,
            "timestamp": time.time(),
            "type": type,
        }

    def send(self, pipe: Any, body: Any, routing_key: str) -> None:
        """Queue one message (an event, or a list of them) on the Redis pipeline ``pipe``."""
        envelope = dict(self.envelope)
        envelope["body"] = base64.b64encode(json.dumps(body).encode()).decode()
        envelope["properties"] = {
            **self.properties,
            "delivery_info": {"exchange": self.exchange, "routing_key": routing_key},
            "delivery_tag": str(uuid.uuid4()),
        }
        payload = json.dumps(envelope)
        for topic in self.topics[routing_key]:
            pipe.publish(topic, payload)

    def buffered(self, pipe: Any, type: str, **fields: Any) -> None:
        """Buffer a task event; a full buffer goes out as one ``task.multi`` message."""
        self.buffer.append(self.event(type, **fields))
        if len(self.buffer) >= self.buffer_limit:
            self.flush(pipe)

    def flush(self, pipe: Any) -> None:
        if self.buffer:
            self.send(pipe, self.buffer, "task.multi")
            self.buffer = []


def run(
    broker_url: str,
    rate: float,
    count: int,
    published: Any,
    allowed: Any,
    stop: Any,
    samples: Any,
    sample_every: int,
    seed: int,
    span: Any = None,
    runtime: tuple[float, float] = (0.02, 0.3),
) -> None:
    """Publish ``count`` task lifecycles at ``rate`` tasks/s (process entry point)."""
    from controlplane.runtime.embedded import die_with_parent

    # A benchmark killed outright must not leave its publishers sending heartbeats into
    # the next run (a consumer would take them for the same workers restarting).
    die_with_parent()
    import redis
    from celery import Celery
    from celery.events import EventDispatcher

    app = Celery("bench-publisher", broker=broker_url, set_as_current=False)
    rng = random.Random(seed)
    conn = app.connection_for_write()
    conn.ensure_connection(max_retries=3)
    client = Wire(EventDispatcher(conn, hostname=f"api@{socket.gethostname()}", app=app))
    conn2 = app.connection_for_write()
    dispatchers = [EventDispatcher(conn2, hostname=f"celery@bench-w{n}", app=app) for n in range(2)]
    workers = [Wire(d) for d in dispatchers]
    r = redis.Redis.from_url(broker_url)
    pipe = r.pipeline(transaction=False)  # what one pass sends, in one round trip
    pending: list[tuple[float, int, int, str, str, int]] = []  # (due, seq, worker, kind, uuid, i)
    info: dict[str, tuple[str, str]] = {}
    t0 = time.time()
    last_flush = last_beat = 0.0
    seq = 0
    i = 0
    processed = [0, 0]
    while True:
        now = time.time()
        if stop.is_set():
            break
        if i >= min(count, allowed.value):
            # Held back by flow control: keep the pace from now on instead of sending the
            # time spent waiting in one burst (a burst overflows a Redis pub/sub client).
            t0 = now - i / rate
        due = int((now - t0) * rate) + 1
        limit = min(due, count, allowed.value)
        while i < limit:
            task_id = str(uuid.uuid4())
            task_type = _task_type(rng)
            name = f"controlplane.{task_type}"
            kwargs = _kwargs_repr(task_type, i, str(uuid.uuid4().hex[:24]))
            info[task_id] = (name, kwargs)
            sent = client.event(
                "task-sent",
                uuid=task_id,
                root_id=task_id,
                parent_id=None,
                name=name,
                args="()",
                kwargs=kwargs,
                retries=0,
                eta=None,
                expires=None,
                queue="recon",
                exchange="",
                routing_key="recon",
            )
            client.send(pipe, sent, "task.sent")
            w = i % 2
            start_at = now + rng.uniform(0.002, 0.02)
            end_at = start_at + rng.uniform(*runtime)
            for when, kind in ((start_at - 0.001, "received"), (start_at, "started"), (end_at, "end")):
                seq += 1
                heapq.heappush(pending, (when, seq, w, kind, task_id, i))
            i += 1
            published.value = i
            if span is not None:
                if i == 1:
                    span[0] = time.time()
                span[1] = time.time()
        now = time.time()
        while pending and pending[0][0] <= now:
            _, _, w, kind, task_id, n = heapq.heappop(pending)
            wire = workers[w]
            name, kwargs = info[task_id]
            if kind == "received":
                wire.buffered(
                    pipe,
                    "task-received",
                    uuid=task_id,
                    name=name,
                    args="()",
                    kwargs=kwargs,
                    root_id=task_id,
                    parent_id=None,
                    retries=0,
                    eta=None,
                    expires=None,
                )
            elif kind == "started":
                wire.buffered(pipe, "task-started", uuid=task_id)
            else:
                del info[task_id]
                processed[w] += 1
                if rng.random() < FAIL_RATIO:
                    wire.buffered(
                        pipe,
                        "task-failed",
                        uuid=task_id,
                        exception="ConnectionError('scan of 203.0.113.7 failed: host unreachable')",
                        traceback=TRACEBACK,
                    )
                else:
                    wire.buffered(
                        pipe,
                        "task-succeeded",
                        uuid=task_id,
                        result="{'statistic': {'domain': 12, 'ip': 4, 'site': 3}}",
                        runtime=round(rng.uniform(*runtime), 4),
                    )
                if n % sample_every == 0 and samples is not None:
                    samples.put((task_id, time.time()))
        if now - last_flush >= 0.1:
            last_flush = now
            for wire in workers:
                wire.flush(pipe)
        if len(pipe):
            pipe.execute()
        if now - last_beat >= 2.0:
            last_beat = now
            for n, d in enumerate(dispatchers):
                d.send(
                    "worker-heartbeat",
                    freq=2.0,
                    active=0,
                    processed=processed[n],
                    loadavg=list(os.getloadavg()),
                    sw_ident="py-celery",
                    sw_ver="5.7.0",
                    sw_sys="Linux",
                )
        if i >= count and not pending:
            break
        # Passes at most every 10 ms: each costs a round trip, and a message 10 ms late
        # is still well inside the 0.1 s a worker's dispatcher buffers its events.
        next_task = t0 + i / rate if i < min(count, allowed.value) else now + 0.01
        next_event = pending[0][0] if pending else now + 0.01
        pause = max(min(next_task, next_event, last_flush + 0.1), now + 0.01) - time.time()
        if pause > 0:
            time.sleep(min(pause, 0.01))
    for wire in workers:
        wire.flush(pipe)
    if len(pipe):
        pipe.execute()
    r.close()
    for d in dispatchers:
        d.close()
    conn.release()
    conn2.release()


class Publisher:
    """Handle of a publisher process."""

    def __init__(
        self,
        broker_url: str,
        rate: float,
        count: int,
        *,
        allowed: int | None = None,
        sample_every: int = 0,
        seed: int = 1,
    ) -> None:
        ctx = mp.get_context("spawn")
        self.published = ctx.Value("q", 0, lock=False)
        self.allowed = ctx.Value("q", count if allowed is None else allowed, lock=False)
        self.stop_event = ctx.Event()
        self.samples = ctx.Queue() if sample_every else None
        self.span = ctx.Array("d", 2, lock=False)  # first and last task-sent times
        self.count = count
        self.rate = rate
        self.proc = ctx.Process(
            target=run,
            args=(
                broker_url,
                rate,
                count,
                self.published,
                self.allowed,
                self.stop_event,
                self.samples,
                max(1, sample_every),
                seed,
                self.span,
            ),
            daemon=True,
        )
        self.started = time.monotonic()
        self.proc.start()

    def allow(self, n: int) -> None:
        self.allowed.value = min(self.count, n)

    def achieved_rate(self) -> float:
        """Tasks per second actually sent (first to last task-sent)."""
        n = int(self.published.value)
        seconds = self.span[1] - self.span[0]
        return (n - 1) / seconds if n > 1 and seconds > 0 else 0.0

    def done(self) -> bool:
        return not self.proc.is_alive()

    def join(self, timeout: float | None = None) -> None:
        self.proc.join(timeout)

    def stop(self) -> None:
        self.stop_event.set()
        self.proc.join(10)
        if self.proc.is_alive():
            self.proc.kill()


def probe(broker_url: str, task_id: str, name: str = "controlplane.domain_task") -> None:
    """Send one short task lifecycle (used to check a consumer is listening)."""
    from celery import Celery
    from celery.events import EventDispatcher

    app = Celery("bench-probe", broker=broker_url, set_as_current=False)
    with app.connection_for_write() as conn:
        d = EventDispatcher(conn, hostname="celery@bench-probe", app=app)
        d.send("task-sent", uuid=task_id, name=name, args="()", kwargs="{}", retries=0)
        d.send("task-started", uuid=task_id)
        d.send("task-succeeded", uuid=task_id, result="None", runtime=0.0)
        d.close()
