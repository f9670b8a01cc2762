"""The worker's Redis transport gives back reserved messages it could not restore, on a real Redis."""

from __future__ import annotations

import pytest
import redis
from kombu import Connection, Exchange, Queue

from controlplane.celeryapp import redis_transport
from tests.conftest import fresh_redis_url

pytestmark = pytest.mark.integration


def test_a_message_whose_restore_broke_as_the_channel_closed_is_given_back_later() -> None:
    url = fresh_redis_url()
    queue = Queue("leftovers", Exchange("leftovers", type="direct"), routing_key="leftovers")
    raw = redis.Redis.from_url(url)
    first = Connection(url, transport=redis_transport.Transport)
    second = Connection(url, transport=redis_transport.Transport)
    try:
        channel = first.channel()
        producer = first.Producer(channel)
        producer.publish({"task": "x"}, exchange=queue.exchange, routing_key="leftovers", declare=[queue])
        message = channel.basic_get("leftovers", no_ack=False)
        assert message is not None
        assert raw.llen("leftovers") == 0 and raw.hlen(channel.unacked_key) == 1

        # What a worker's channel meets when it closes on a lost broker: its pool already
        # dropped, the connection being released (kombu then fails with AttributeError).
        channel._disconnect_pools()
        channel.connection.client = None
        channel.qos.restore_unacked()  # must not raise: the tag is kept for later
        assert raw.llen("leftovers") == 0 and raw.hlen(channel.unacked_key) == 1

        # A new channel of the same process starts consuming: the message is back in its queue.
        consumer = second.channel()
        consumer.basic_consume("leftovers", no_ack=False, callback=lambda *_: None, consumer_tag="t")
        assert raw.llen("leftovers") == 1 and raw.hlen(channel.unacked_key) == 0
    finally:
        redis_transport._unrestored.clear()
        second.release()
        raw.close()
