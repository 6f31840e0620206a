"""The `x-death` dead-lettering history as Python's `pika` decodes it.

Dead-letters messages by reject and by TTL, and through a retry loop, and checks the `x-death`
array, the `x-first-death-*` / `x-last-death-*` headers and their Python types: a list of
dicts, `count` an int, `time` a datetime, `routing-keys` a list of str.

Runs against the broker at $AMQP_URL (default amqp://guest:guest@127.0.0.1:5672/%2f). Warren
writes `x-death` as RabbitMQ 3.13+ does; against an older RabbitMQ (checked with 3.10) the
`x-last-death-*` checks are skipped, as 3.10 does not write those headers.

    pip install pika pytest
    AMQP_URL=amqp://guest:guest@127.0.0.1:5672/%2f python3 -m pytest -q tests/clients/pika_x_death_test.py
"""

import datetime
import os
import time
import uuid

import pika
import pytest

AMQP_URL = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f")
TIMEOUT = 5.0


def unique(prefix):
    return f"pika-xdeath.{prefix}.{uuid.uuid4().hex[:12]}"


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


def writes_last_death(connection):
    """Whether the broker writes x-last-death-*: Warren, or RabbitMQ 3.13 and later."""
    props = connection._impl.server_properties
    product = props.get("product", b"")
    product = product.decode() if isinstance(product, bytes) else product
    if product != "RabbitMQ":
        return True
    version = props.get("version", b"0.0")
    version = version.decode() if isinstance(version, bytes) else version
    major, minor = (int(x) for x in version.split(".")[:2])
    return (major, minor) >= (3, 13)


def declare(channel, prefix, arguments=None):
    name = unique(prefix)
    channel.queue_declare(queue=name, exclusive=True, arguments=arguments)
    return name


def dlx_to(target, **more):
    args = {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": target}
    args.update(more)
    return args


def get_eventually(channel, queue):
    """basic.get (auto-ack) until a message arrives: dead-lettering is asynchronous."""
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        method, props, body = channel.basic_get(queue=queue, auto_ack=True)
        if method is not None:
            return method, props, body
        time.sleep(0.02)
    pytest.fail(f"no message in {queue} within {TIMEOUT}s")


def check_entry(entry, queue, reason, count, exchange, routing_keys):
    assert isinstance(entry, dict)
    assert entry["queue"] == queue
    assert entry["reason"] == reason
    assert isinstance(entry["count"], int) and entry["count"] == count
    assert entry["exchange"] == exchange
    assert entry["routing-keys"] == routing_keys
    assert all(isinstance(k, str) for k in entry["routing-keys"])
    assert isinstance(entry["time"], datetime.datetime)
    when = entry["time"]
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)
    age = datetime.datetime.now(datetime.timezone.utc) - when
    assert datetime.timedelta(seconds=-5) < age < datetime.timedelta(minutes=5), when


def test_reject_writes_x_death(connection, channel):
    dlq = declare(channel, "dlq")
    work = declare(channel, "work", dlx_to(dlq))
    props = pika.BasicProperties(expiration="60000", headers={"app": "kept"}, message_id="m-1")
    channel.basic_publish(exchange="", routing_key=work, body=b"poison", properties=props)
    method, _, _ = channel.basic_get(queue=work, auto_ack=False)
    assert method is not None
    channel.basic_reject(delivery_tag=method.delivery_tag, requeue=False)

    method, props, body = get_eventually(channel, dlq)
    assert body == b"poison"
    assert method.routing_key == dlq
    h = props.headers
    deaths = h["x-death"]
    assert isinstance(deaths, list) and len(deaths) == 1
    check_entry(deaths[0], work, "rejected", 1, "", [work])
    assert deaths[0]["original-expiration"] == "60000"
    assert set(deaths[0]) == {
        "count",
        "reason",
        "queue",
        "time",
        "exchange",
        "routing-keys",
        "original-expiration",
    }
    assert h["x-first-death-queue"] == work
    assert h["x-first-death-reason"] == "rejected"
    assert h["x-first-death-exchange"] == ""
    if writes_last_death(connection):
        assert h["x-last-death-queue"] == work
        assert h["x-last-death-reason"] == "rejected"
        assert h["x-last-death-exchange"] == ""
    assert h["app"] == "kept"
    assert props.expiration is None, "expiration is removed on dead-lettering"
    assert props.message_id == "m-1"


def test_ttl_writes_x_death(connection, channel):
    dlq = declare(channel, "dlq")
    work = declare(channel, "ttl", dlx_to(dlq, **{"x-message-ttl": 50}))
    channel.basic_publish(exchange="", routing_key=work, body=b"stale")

    _, props, body = get_eventually(channel, dlq)
    assert body == b"stale"
    deaths = props.headers["x-death"]
    assert len(deaths) == 1
    check_entry(deaths[0], work, "expired", 1, "", [work])
    assert "original-expiration" not in deaths[0], "a queue TTL is not an expiration"
    assert props.headers["x-first-death-reason"] == "expired"
    if writes_last_death(connection):
        assert props.headers["x-last-death-reason"] == "expired"


def test_per_message_expiration_writes_original_expiration(channel):
    dlq = declare(channel, "dlq")
    work = declare(channel, "exp", dlx_to(dlq))
    props = pika.BasicProperties(expiration="50")
    channel.basic_publish(exchange="", routing_key=work, body=b"short", properties=props)

    _, props, _ = get_eventually(channel, dlq)
    entry = props.headers["x-death"][0]
    assert entry["reason"] == "expired"
    assert entry["original-expiration"] == "50"
    assert props.expiration is None


def test_retry_loop_counts_each_death_most_recent_first(connection, channel):
    work_name, retry_name = unique("work"), unique("retry")
    channel.queue_declare(queue=work_name, exclusive=True, arguments=dlx_to(retry_name))
    channel.queue_declare(
        queue=retry_name, exclusive=True, arguments=dlx_to(work_name, **{"x-message-ttl": 50})
    )
    channel.basic_publish(exchange="", routing_key=work_name, body=b"job")

    for round_ in range(3):
        deadline = time.monotonic() + TIMEOUT
        while True:
            method, props, _ = channel.basic_get(queue=work_name, auto_ack=False)
            if method is not None:
                break
            assert time.monotonic() < deadline, f"round {round_}: the job did not come back"
            time.sleep(0.02)
        deaths = (props.headers or {}).get("x-death", [])
        if round_ == 0:
            assert deaths == []
        else:
            assert [(d["queue"], d["reason"], d["count"]) for d in deaths] == [
                (retry_name, "expired", round_),
                (work_name, "rejected", round_),
            ]
            assert props.headers["x-first-death-queue"] == work_name
            assert props.headers["x-first-death-reason"] == "rejected"
            if writes_last_death(connection):
                assert props.headers["x-last-death-queue"] == retry_name
                assert props.headers["x-last-death-reason"] == "expired"
        if round_ < 2:
            channel.basic_reject(delivery_tag=method.delivery_tag, requeue=False)
        else:
            channel.basic_ack(delivery_tag=method.delivery_tag)
