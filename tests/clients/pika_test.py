"""Client compatibility tests with Python's `pika` (BlockingConnection).

Runs against the broker at $AMQP_URL (default amqp://guest:guest@127.0.0.1:5672/%2f),
which must already be listening. Every test uses names of its own, so the tests can run
against a shared broker and repeatedly. Written and checked against RabbitMQ 3.10; Warren
must behave the same.

    pip install pika pytest
    AMQP_URL=amqp://guest:guest@127.0.0.1:5672/%2f python3 -m pytest -q tests/clients/pika_test.py
"""

import os
import uuid

import pika
import pika.exceptions
import pytest

AMQP_URL = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f")


def unique(prefix):
    return f"pika-test.{prefix}.{uuid.uuid4().hex[:12]}"


@pytest.fixture
def connection():
    params = pika.URLParameters(AMQP_URL)
    params.socket_timeout = 10
    params.blocked_connection_timeout = 10
    conn = pika.BlockingConnection(params)
    yield conn
    if conn.is_open:
        conn.close()


@pytest.fixture
def channel(connection):
    return connection.channel()


@pytest.fixture
def queue(connection):
    """A fresh durable=False, non-exclusive queue, deleted after the test."""
    name = unique("q")
    ch = connection.channel()
    ok = ch.queue_declare(queue=name)
    assert ok.method.queue == name
    assert ok.method.message_count == 0
    assert ok.method.consumer_count == 0
    yield name
    if connection.is_open:
        connection.channel().queue_delete(queue=name)


def ready_count(connection, name):
    """Messages ready in `name`, by passive declare on a throwaway channel."""
    ch = connection.channel()
    n = ch.queue_declare(queue=name, passive=True).method.message_count
    ch.close()
    return n


def test_server_named_queue(channel):
    ok = channel.queue_declare(queue="", exclusive=True)
    assert ok.method.queue, "server must name the queue"
    assert ok.method.message_count == 0


def test_declare_publish_get(channel, queue):
    props = pika.BasicProperties(
        content_type="text/plain",
        correlation_id="corr-1",
        delivery_mode=2,
        headers={"x-test": "yes", "n": 42},
    )
    channel.basic_publish(exchange="", routing_key=queue, body=b"hello pika", properties=props)
    method, got_props, body = channel.basic_get(queue=queue, auto_ack=True)
    assert method is not None, "basic_get found no message"
    assert body == b"hello pika"
    assert method.redelivered is False
    assert method.exchange == ""
    assert method.routing_key == queue
    assert method.message_count == 0  # messages left after this one
    assert got_props.content_type == "text/plain"
    assert got_props.correlation_id == "corr-1"
    assert got_props.delivery_mode == 2
    assert got_props.headers == {"x-test": "yes", "n": 42}
    # Empty queue: basic.get-empty
    assert channel.basic_get(queue=queue, auto_ack=True) == (None, None, None)


def test_get_reports_remaining_count(channel, queue):
    for i in range(3):
        channel.basic_publish(exchange="", routing_key=queue, body=f"m{i}".encode())
    method, _, body = channel.basic_get(queue=queue, auto_ack=True)
    assert body == b"m0"
    assert method.message_count == 2


def test_consume_manual_ack(connection, channel, queue):
    bodies = [f"msg-{i}".encode() for i in range(5)]
    for b in bodies:
        channel.basic_publish(exchange="", routing_key=queue, body=b)
    channel.basic_qos(prefetch_count=2)
    got = []
    for method, _props, body in channel.consume(queue=queue, auto_ack=False, inactivity_timeout=5):
        assert method is not None, f"timed out waiting; got {got}"
        assert method.redelivered is False
        got.append(body)
        channel.basic_ack(delivery_tag=method.delivery_tag)
        if len(got) == len(bodies):
            break
    channel.cancel()
    assert got == bodies, "messages must arrive in publish order"
    assert ready_count(connection, queue) == 0


def test_unacked_messages_requeued_on_channel_close(connection, queue):
    ch = connection.channel()
    ch.basic_publish(exchange="", routing_key=queue, body=b"not acked")
    method, _, body = ch.basic_get(queue=queue, auto_ack=False)
    assert body == b"not acked"
    ch.close()  # never acked: goes back to the queue
    ch2 = connection.channel()
    method, _, body = ch2.basic_get(queue=queue, auto_ack=True)
    assert body == b"not acked"
    assert method.redelivered is True


def test_nack_requeue_sets_redelivered(channel, queue):
    channel.basic_publish(exchange="", routing_key=queue, body=b"again")
    method, _, body = channel.basic_get(queue=queue, auto_ack=False)
    assert body == b"again"
    assert method.redelivered is False
    channel.basic_nack(delivery_tag=method.delivery_tag, requeue=True)
    method, _, body = channel.basic_get(queue=queue, auto_ack=False)
    assert method is not None, "nacked message was not requeued"
    assert body == b"again"
    assert method.redelivered is True
    channel.basic_ack(delivery_tag=method.delivery_tag)
    assert channel.basic_get(queue=queue, auto_ack=True) == (None, None, None)


def test_nack_requeue_redelivered_to_consumer(channel, queue):
    channel.basic_publish(exchange="", routing_key=queue, body=b"c")
    seen = []
    for method, _props, body in channel.consume(queue=queue, auto_ack=False, inactivity_timeout=5):
        assert method is not None, f"timed out; seen {seen}"
        seen.append(method.redelivered)
        if len(seen) == 1:
            channel.basic_nack(delivery_tag=method.delivery_tag, requeue=True)
        else:
            channel.basic_ack(delivery_tag=method.delivery_tag)
            break
    channel.cancel()
    assert seen == [False, True]


def test_reject_without_requeue_drops(connection, channel, queue):
    channel.basic_publish(exchange="", routing_key=queue, body=b"drop me")
    method, _, _ = channel.basic_get(queue=queue, auto_ack=False)
    channel.basic_reject(delivery_tag=method.delivery_tag, requeue=False)
    assert channel.basic_get(queue=queue, auto_ack=True) == (None, None, None)
    assert ready_count(connection, queue) == 0


def test_publisher_confirms(connection, channel, queue):
    channel.confirm_delivery()
    for i in range(10):
        # With confirms on, BlockingChannel.basic_publish waits for the ack and
        # raises NackError/UnroutableError on failure.
        channel.basic_publish(exchange="", routing_key=queue, body=f"c{i}".encode())
    assert ready_count(connection, queue) == 10


def test_mandatory_unroutable_raises(channel):
    channel.confirm_delivery()
    with pytest.raises(pika.exceptions.UnroutableError) as info:
        channel.basic_publish(
            exchange="", routing_key=unique("nowhere"), body=b"lost", mandatory=True
        )
    returned = info.value.messages
    assert len(returned) == 1
    assert returned[0].body == b"lost"
    assert returned[0].method.reply_code == 312  # NO_ROUTE
    # The channel stays usable after a basic.return.
    assert channel.is_open
    channel.basic_publish(exchange="", routing_key=unique("nowhere"), body=b"not mandatory")


def test_mandatory_unroutable_via_exchange_without_bindings(channel):
    exchange = unique("x")
    channel.exchange_declare(exchange=exchange, exchange_type="direct", auto_delete=False)
    try:
        channel.confirm_delivery()
        with pytest.raises(pika.exceptions.UnroutableError):
            channel.basic_publish(exchange=exchange, routing_key="k", body=b"x", mandatory=True)
    finally:
        channel.exchange_delete(exchange=exchange)


def test_topic_exchange_routing(connection, channel):
    exchange = unique("topic")
    channel.exchange_declare(exchange=exchange, exchange_type="topic")
    queues = {}
    try:
        for name, patterns in {
            "q1": ["*.orange.*"],
            "q2": ["*.*.rabbit", "lazy.#"],
            "all": ["#"],
        }.items():
            q = channel.queue_declare(queue="", exclusive=True).method.queue
            for p in patterns:
                channel.queue_bind(queue=q, exchange=exchange, routing_key=p)
            queues[name] = q
        channel.confirm_delivery()
        keys = [
            "quick.orange.rabbit",
            "lazy.orange.elephant",
            "quick.orange.fox",
            "lazy.brown.fox",
            "lazy.pink.rabbit",
            "quick.brown.fox",
            "orange",
            "lazy",
        ]
        for k in keys:
            channel.basic_publish(exchange=exchange, routing_key=k, body=k.encode())
        expected = {
            "q1": ["quick.orange.rabbit", "lazy.orange.elephant", "quick.orange.fox"],
            "q2": [
                "quick.orange.rabbit",
                "lazy.orange.elephant",
                "lazy.brown.fox",
                "lazy.pink.rabbit",  # matches both bindings, delivered once
                "lazy",
            ],
            "all": keys,
        }
        for name, q in queues.items():
            got = []
            while True:
                method, _, body = channel.basic_get(queue=q, auto_ack=True)
                if method is None:
                    break
                assert method.exchange == exchange
                assert method.routing_key == body.decode()
                got.append(body.decode())
            assert got == expected[name], name
    finally:
        channel.exchange_delete(exchange=exchange)


def test_bind_unbind_direct_and_fanout(channel):
    direct = unique("direct")
    fanout = unique("fanout")
    channel.exchange_declare(exchange=direct, exchange_type="direct")
    channel.exchange_declare(exchange=fanout, exchange_type="fanout")
    try:
        q = channel.queue_declare(queue="", exclusive=True).method.queue
        channel.queue_bind(queue=q, exchange=direct, routing_key="a")
        channel.queue_bind(queue=q, exchange=fanout, routing_key="ignored")
        channel.confirm_delivery()
        channel.basic_publish(exchange=direct, routing_key="a", body=b"direct-a")
        channel.basic_publish(exchange=direct, routing_key="b", body=b"direct-b")  # no route
        channel.basic_publish(exchange=fanout, routing_key="anything", body=b"fanout")
        channel.queue_unbind(queue=q, exchange=direct, routing_key="a")
        channel.basic_publish(exchange=direct, routing_key="a", body=b"after-unbind")
        got = []
        while True:
            method, _, body = channel.basic_get(queue=q, auto_ack=True)
            if method is None:
                break
            got.append(body)
        assert got == [b"direct-a", b"fanout"]
    finally:
        channel.exchange_delete(exchange=direct)
        channel.exchange_delete(exchange=fanout)


def test_exchange_redeclare_with_other_type_is_406(connection):
    exchange = unique("x")
    ch = connection.channel()
    ch.exchange_declare(exchange=exchange, exchange_type="direct")
    try:
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as info:
            ch.exchange_declare(exchange=exchange, exchange_type="fanout")
        assert info.value.reply_code == 406  # PRECONDITION_FAILED
        assert connection.is_open
    finally:
        connection.channel().exchange_delete(exchange=exchange)


def test_channel_error_then_connection_still_usable(connection):
    ch = connection.channel()
    missing = unique("missing")
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as info:
        ch.queue_declare(queue=missing, passive=True)
    assert info.value.reply_code == 404  # NOT_FOUND
    assert "NOT_FOUND" in info.value.reply_text
    assert ch.is_closed
    assert connection.is_open, "a channel error must not close the connection"

    # A new channel on the same connection works normally.
    ch2 = connection.channel()
    assert ch2.channel_number != 0
    q = ch2.queue_declare(queue="", exclusive=True).method.queue
    ch2.basic_publish(exchange="", routing_key=q, body=b"still alive")
    method, _, body = ch2.basic_get(queue=q, auto_ack=True)
    assert body == b"still alive"


def test_purge_and_delete_report_counts(channel):
    name = unique("purge")
    channel.queue_declare(queue=name)
    try:
        for i in range(4):
            channel.basic_publish(exchange="", routing_key=name, body=b"x")
        # make sure they are all enqueued before purging
        channel.confirm_delivery()
        channel.basic_publish(exchange="", routing_key=name, body=b"x")
        assert channel.queue_purge(queue=name).method.message_count == 5
        channel.basic_publish(exchange="", routing_key=name, body=b"y")
    finally:
        ok = channel.queue_delete(queue=name)
    assert ok.method.message_count == 1
