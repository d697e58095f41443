#!/usr/bin/env python3
"""End-to-end: `mlopsd kafka-mock` is a Kafka that ordinary clients can use.

The client is confluent_kafka (python3-confluent-kafka), so these tests
check the mock through the normal client API, not through our own code.
"""

import signal
import subprocess
import time

from mtest import KafkaMock, binary, import_optional, run, skip, test

confluent_kafka = import_optional("confluent_kafka")


def need_client():
    if confluent_kafka is None:
        skip("python3-confluent-kafka not installed")


def client_conf(bootstrap, **kw):
    # The mock goes away at the end of each test; that is not news.
    conf = {"bootstrap.servers": bootstrap, "log.connection.close": False,
            "log_level": 2}
    conf.update({k.replace("_", "."): v for k, v in kw.items()})
    return conf


def partitions_of(bootstrap, topic):
    p = confluent_kafka.Producer(client_conf(bootstrap))
    md = p.list_topics(topic, timeout=10)
    t = md.topics[topic]
    assert t.error is None, t.error
    return len(t.partitions)


@test
def first_line_is_bootstrap():
    k = KafkaMock("--topic", "t:3")
    host, _, port = k.bootstrap.partition(":")
    assert host == "127.0.0.1" and port.isdigit(), k.first_line
    assert k.stop() == 0


@test
def topic_with_partition_count():
    need_client()
    k = KafkaMock("--topic", "t:3", "--partitions", "2", "--topic", "u")
    assert partitions_of(k.bootstrap, "t") == 3
    # --partitions is the count of --topic topics given without one ...
    assert partitions_of(k.bootstrap, "u") == 2
    # ... while librdkafka 2.0.2 auto-creates any other topic with 4.
    assert partitions_of(k.bootstrap, "other") == 4
    assert k.stop() == 0


@test
def produce_and_consume():
    need_client()
    k = KafkaMock("--topic", "t:3")
    p = confluent_kafka.Producer(client_conf(k.bootstrap))
    sent = {}
    for i in range(30):
        key = ("k%d" % (i % 7)).encode()
        p.produce("t", key=key, value=b"v%d" % i)
        sent[b"v%d" % i] = key
    assert p.flush(10) == 0

    c = confluent_kafka.Consumer(client_conf(k.bootstrap, group_id="g",
                                             auto_offset_reset="earliest"))
    c.subscribe(["t"])
    got = {}
    parts = {}
    deadline = time.monotonic() + 20
    while len(got) < len(sent) and time.monotonic() < deadline:
        m = c.poll(0.5)
        if m is None:
            continue
        assert m.error() is None, m.error()
        got[m.value()] = m.key()
        parts.setdefault(m.key(), set()).add(m.partition())
    c.close()
    assert got == sent, (len(got), len(sent))
    # Keyed messages stay on one partition each; 3 partitions in all.
    assert all(len(ps) == 1 for ps in parts.values()), parts
    assert set().union(*parts.values()) <= {0, 1, 2}
    assert k.stop() == 0


@test
def sigterm_and_sigint_exit_0():
    for sig in (signal.SIGTERM, signal.SIGINT):
        k = KafkaMock()
        t0 = time.monotonic()
        assert k.stop(sig) == 0, k.log()
        assert time.monotonic() - t0 < 10
        k.wait_log(r"kafka-mock: SIG(TERM|INT): stopping")


@test
def bad_topic_is_a_usage_error():
    p = subprocess.run([binary(), "kafka-mock", "--topic", "t:zero"],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=10)
    assert p.returncode == 2, p
    assert p.stdout == b""
    assert b"--topic t:zero: the partition count must be" in p.stderr, p.stderr
    # The same topic twice was created once, then the second failed (1).
    p = subprocess.run([binary(), "kafka-mock", "--topic", "a:1", "--topic",
                        "ab", "--topic", "a:2"], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=10)
    assert p.returncode == 2, p
    assert p.stdout == b""
    assert b"--topic a:2: topic a is given twice" in p.stderr, p.stderr


@test
def several_brokers():
    need_client()
    k = KafkaMock("--brokers", "3", "--topic", "r:6")
    assert len(k.bootstrap.split(",")) == 3, k.bootstrap
    p = confluent_kafka.Producer(client_conf(k.bootstrap))
    md = p.list_topics("r", timeout=10)
    assert len(md.brokers) == 3
    assert len(md.topics["r"].partitions) == 6
    assert k.stop() == 0


run()
