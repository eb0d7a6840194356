#!/usr/bin/env python3
"""Generic events from one source to 100 pull points with different MessageContent filters (issue 10).

In this process, on the event service's own objects (no HTTP: the question is the cost of filtering and
delivery): one source publishes EVENTS events on ``tns1:Bench/Level`` (Source ``Token``, Data ``Level``
cycling through 0 … 99) with :meth:`EventServiceContext.publish`; 100 pull points each hold a different
ItemFilter, ``boolean(//tt:SimpleItem[@Name="Token" and @Value="cam-1"]) and
boolean(//tt:SimpleItem[@Name="Level" and @Value="<i>"])``, so every event reaches exactly one of them.
Every DRAIN events all pull points are pulled (``SubscriptionManager.pull``) and the answers written as
XML (``notifications_xml``), as PullMessages would.

The baseline, same run: the same 100 pull points with the topic filter only (every event reaches all
100, no expression evaluated) — reported as events/s and as delivered messages/s; the ratio printed is
filtered events/s over baseline events/s.

Push (EVT-10): one base-notification subscription on the same topic, drained every DRAIN events by
:class:`PushDelivery` (batches of 100 messages as ``wsnt:Notify``) to a consumer on loopback
(``http.server``, keep-alive off: one connection per Notify, as the delivery opens it); the baseline,
same run, takes the same messages and writes the same envelopes without HTTP.

Usage: ``python bench/bench_events.py [--events 20000] [--subscribers 100]``.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from iec62676_2_33.domain.event_filters import MessageContentFilter
from iec62676_2_33.domain.filters import ResourceQuery
from iec62676_2_33.domain.generic_events import TopicDescription
from iec62676_2_33.domain.registry import ResourceRegistry
from iec62676_2_33.domain.subscriptions import SubscriptionManager
from iec62676_2_33.services.events import EventServiceContext, notifications_xml, notify_envelope, producer_xml

TOPIC = TopicDescription("Bench/Level", source=(("Token", "tt:ReferenceToken"),), data=(("Level", "xs:int"),),
                         is_property=False)
DRAIN = 500
PRODUCER = producer_xml("http://127.0.0.1:8080/onvif/event_service")


def run(subscribers: int, events: int, *, filtered: bool) -> tuple[float, int]:
    """(seconds, messages delivered) for one configuration."""
    with tempfile.TemporaryDirectory() as folder, ResourceRegistry(Path(folder) / "r.db") as registry:
        clock = [1_700_000_000.0]
        context = EventServiceContext(registry=registry, clock=lambda: clock[0],
                                      manager=SubscriptionManager(registry, max_pull_points=subscribers))
        context.declare(TOPIC)
        subs = []
        for i in range(subscribers):
            content = MessageContentFilter(
                'boolean(//tt:SimpleItem[@Name="Token" and @Value="cam-1"]) and '
                f'boolean(//tt:SimpleItem[@Name="Level" and @Value="{i}"])') if filtered else None
            subs.append(context.manager.create(ResourceQuery(kinds=frozenset(), content=content), clock[0],
                                               clock[0] + 3600, topics=frozenset({TOPIC.path})))
        delivered = 0
        started = time.perf_counter()
        for n in range(events):
            context.publish(TOPIC, (("Token", "cam-1"),), (("Level", str(n % 100)),))
            if (n + 1) % DRAIN == 0 or n + 1 == events:
                for sub in subs:
                    messages = context.manager.pull(sub.id, 1000, clock[0]).messages
                    if messages:
                        notifications_xml(messages, PRODUCER)
                        delivered += len(messages)
        return time.perf_counter() - started, delivered


def push(events: int, *, over_http: bool) -> tuple[float, int]:
    """(seconds, messages) for one base-notification subscription drained by ``PushDelivery`` to a consumer
    on loopback (``over_http``), or, as the baseline, pulled and written without HTTP."""
    received = [0]

    class Consumer(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            received[0] += body.count(b"<wsnt:NotificationMessage>")
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *_args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Consumer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    consumer = f"http://127.0.0.1:{server.server_address[1]}/notify"
    try:
        with tempfile.TemporaryDirectory() as folder, ResourceRegistry(Path(folder) / "r.db") as registry:
            clock = [1_700_000_000.0]
            context = EventServiceContext(registry=registry, clock=lambda: clock[0],
                                          manager=SubscriptionManager(registry))
            context.declare(TOPIC)
            sub = context.manager.create(ResourceQuery(kinds=frozenset()), clock[0], clock[0] + 3600,
                                         topics=frozenset({TOPIC.path}), consumer=consumer)
            context.push.register(sub.id, PRODUCER)
            started = time.perf_counter()
            for n in range(events):
                context.publish(TOPIC, (("Token", "cam-1"),), (("Level", str(n % 100)),))
                if (n + 1) % DRAIN == 0:
                    if over_http:
                        while True:  # until a round delivers nothing more
                            seen = received[0]
                            for sub_id in context.push.due():
                                context.push.deliver(sub_id)
                            if received[0] == seen:
                                break
                    else:
                        while messages := context.manager.pull(sub.id, 100, clock[0]).messages:
                            notify_envelope(messages, consumer, PRODUCER)
                            received[0] += len(messages)
            return time.perf_counter() - started, received[0]
    finally:
        server.shutdown()
        server.server_close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--subscribers", type=int, default=100)
    args = parser.parse_args()
    base_s, base_n = run(args.subscribers, args.events, filtered=False)
    filt_s, filt_n = run(args.subscribers, args.events, filtered=True)
    print(f"{args.subscribers} pull points, {args.events} events from one source, drained every {DRAIN}")
    print(f"baseline (topic filter only): {args.events / base_s:10.0f} events/s, "
          f"{base_n / base_s:10.0f} messages delivered/s ({base_n} messages)")
    print(f"MessageContent filters:       {args.events / filt_s:10.0f} events/s, "
          f"{filt_n / filt_s:10.0f} messages delivered/s ({filt_n} messages)")
    print(f"ratio filtered/baseline events/s: {base_s / filt_s:.2f}x")
    local_s, local_n = push(args.events, over_http=False)
    http_s, http_n = push(args.events, over_http=True)
    print(f"Notify to a consumer on loopback: {http_n / http_s:10.0f} messages/s ({http_n} messages, "
          f"batches of 100); baseline without HTTP {local_n / local_s:10.0f} messages/s; "
          f"ratio {local_s / http_s:.2f}x")


if __name__ == "__main__":
    main()
