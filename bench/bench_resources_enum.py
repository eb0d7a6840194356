#!/usr/bin/env python3
"""Full enumeration of 1,000,000 resources through a pull point (issue 4, benchmark 2).

A device runs in a separate process (``run_device``: direct HTTP, hypercorn,
the device's thread pool) on the cached registry of
``bench_resources_query.py``. This process is the client:
:class:`iec62676_2_33.query.ResourceQueryClient` (zeep builds the requests,
answers are parsed with lxml and turned into ``Resource`` objects by
``parse_message``), CreatePullPointSubscription without a filter, then
``resources()`` — PullMessages pages of MessageLimit 1000 (the device's
MaxMessageLimit), Timeout PT0S — until the first short page. Time runs from
the subscribe to the last resource; every resource is counted and the first
and last tokens checked. Goal: >= 20,000 events/s.

The device's RSS is sampled (psutil, every 10 ms) from just before the
subscription to the end; the peak growth over the starting RSS is reported.
Goal: < 100 MiB.

Baseline (same run, same client, same device code): a device process in
which the subscription address is served by a variant built here only —
PullMessages builds the answer as Spyne ``ComplexModel`` objects
(``PullMessagesResponse`` → ``wsnt:NotificationMessage`` → ``tt:Message`` →
``tt:SimpleItem`` / ``tt:ElementItem`` / ``tt:GeoLocation``) and Spyne's
Soap12 protocol serialises them, instead of the library's lxml writer. The
registry, subscription manager, access control and HTTP server are the same.
The baseline enumerates the first ``--baseline-count`` resources (it is much
slower); the ratio compares events/s.

Usage: ``python bench/bench_resources_enum.py [--count 1000000] [--baseline-count 200000]``
(``--serve`` is the device process's own entry point).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC
from pathlib import Path
from typing import Any

import psutil
from bench_resources_query import USER, DeviceProcess, device_data, machine, resource_database

MESSAGE_LIMIT = 1000


# --------------------------------------------------------------------------- the device process


def spyne_subscription_app(context: Any) -> Any:
    """The subscription address served with Spyne object serialisation for PullMessages (baseline)."""
    from datetime import datetime

    from spyne import ComplexModel, DateTime, Double, Unicode, XmlAttribute, XmlData, rpc

    from iec62676_2_33.namespaces import TEV, TT, WSNT
    from iec62676_2_33.security.middleware import ENVIRON_REQUEST
    from iec62676_2_33.services import events as ev
    from iec62676_2_33.soap.spyne_glue import SoapEndpoint, SoapService, service_context

    class SimpleItem(ComplexModel):  # type: ignore[misc]
        __namespace__ = TT
        _type_info = [("Name", XmlAttribute(Unicode)), ("Value", XmlAttribute(Unicode))]

    class GeoLocation(ComplexModel):  # type: ignore[misc]
        __namespace__ = TT
        _type_info = [("lon", XmlAttribute(Double)), ("lat", XmlAttribute(Double)),
                      ("elevation", XmlAttribute(Double))]

    class ElementItem(ComplexModel):  # type: ignore[misc]
        __namespace__ = TT
        _type_info = [("GeoLocation", GeoLocation), ("Name", XmlAttribute(Unicode))]

    class ItemList(ComplexModel):  # type: ignore[misc]
        __namespace__ = TT
        _type_info = [("SimpleItem", SimpleItem.customize(max_occurs="unbounded")),
                      ("ElementItem", ElementItem.customize(max_occurs="unbounded"))]

    class EventMessage(ComplexModel):  # type: ignore[misc]
        __namespace__ = TT
        _type_info = [("Source", ItemList), ("Data", ItemList), ("UtcTime", XmlAttribute(DateTime)),
                      ("PropertyOperation", XmlAttribute(Unicode))]

    class MessageHolder(ComplexModel):  # type: ignore[misc]
        __namespace__ = TT
        _type_info = [("Message", EventMessage)]

    class Topic(ComplexModel):  # type: ignore[misc]
        __namespace__ = WSNT
        _type_info = [("Dialect", XmlAttribute(Unicode)), ("text", XmlData(Unicode))]

    class NotificationMessage(ComplexModel):  # type: ignore[misc]
        __namespace__ = WSNT
        _type_info = [("Topic", Topic), ("Message", MessageHolder)]

    class PullMessagesResponse(ComplexModel):  # type: ignore[misc]
        __namespace__ = TEV
        _type_info = [("CurrentTime", DateTime), ("TerminationTime", DateTime),
                      ("NotificationMessage", NotificationMessage.customize(max_occurs="unbounded", sub_ns=WSNT))]

    def when(epoch: float) -> datetime:
        return datetime.fromtimestamp(epoch, UTC)

    def message_object(n: Any) -> NotificationMessage:
        res = n.resource
        data = None
        if n.operation != "Deleted":
            items = []
            if res.name is not None:
                items.append(SimpleItem(Name="Name", Value=res.name))
            items.extend(SimpleItem(Name="Scope", Value=s) for s in res.scopes)
            if res.offline is not None:
                items.append(SimpleItem(Name="Offline", Value="true" if res.offline else "false"))
            elements = []
            if res.location is not None:
                loc = res.location
                elements.append(ElementItem(Name="Location", GeoLocation=GeoLocation(
                    lon=loc.lon, lat=loc.lat, elevation=loc.elevation)))
            data = ItemList(SimpleItem=items, ElementItem=elements)
        return NotificationMessage(
            Topic=Topic(Dialect=ev.DIALECT_ONVIF_CONCRETE_SET, text="tns1:Resource/" + res.kind),
            Message=MessageHolder(Message=EventMessage(
                Source=ItemList(SimpleItem=[SimpleItem(Name="Token", Value=res.token)]), Data=data,
                UtcTime=when(n.utc_time), PropertyOperation=n.operation)))

    class SpynePullPoint(SoapService):  # type: ignore[misc]
        __service_name__ = "PullPointSubscription"

        @rpc(_returns=PullMessagesResponse, _body_style="bare")  # type: ignore[misc]
        def PullMessages(ctx: Any) -> PullMessagesResponse:
            ctxt = service_context(ctx)
            request = ctx.in_body_doc
            timeout = ev.parse_duration((request.findtext(f"{{{TEV}}}Timeout") or "PT0S").strip())
            limit = min(int(request.findtext(f"{{{TEV}}}MessageLimit") or "1"), ctxt.max_message_limit)
            now = ctxt.clock()
            result = ctxt.manager.pull(ev._subscription_id(ctx.transport.req_env), limit, now, keep_alive=timeout)
            return PullMessagesResponse(CurrentTime=when(now), TerminationTime=when(result.termination),
                                        NotificationMessage=[message_object(m) for m in result.messages])

    pull = SoapEndpoint([SpynePullPoint], TEV, xsd="events", context=context, name="PullPointSubscription")
    library = ev.event_endpoints(context)[1]  # Renew, Unsubscribe, SetSynchronizationPoint

    def subscription(environ: dict[str, Any], start_response: Any) -> Any:
        request = environ.get(ENVIRON_REQUEST)
        spyne = request is not None and request.operation_name == (TEV, "PullMessages")
        return (pull if spyne else library)(environ, start_response)
    return subscription


def serve(data: str, variant: str) -> None:
    """Entry point of the device process: ``run_device`` (direct HTTP only), optionally the Spyne variant."""
    import asyncio
    import time as _time

    import iec62676_2_33.runtime.device as runtime_device

    if variant == "spyne":
        from iec62676_2_33.security.middleware import AccessControlMiddleware
        from iec62676_2_33.services import app as app_module

        original = runtime_device.build_device_app

        def build(uplink: Any, *, clock: Any = _time.time, events: Any = None, **services: Any) -> Any:
            app = original(uplink, clock=clock, events=events, **services)
            gate = app.routes[app_module.SUBSCRIPTION_PATH]  # same credentials and access table
            app.routes[app_module.SUBSCRIPTION_PATH] = AccessControlMiddleware(  # type: ignore[index]
                spyne_subscription_app(events), operation_access=gate.operation_access, wsse=gate.wsse,
                digest=gate.digest, clock=gate.clock)
            return app

        runtime_device.build_device_app = build  # type: ignore[assignment]

    async def main() -> None:
        stop = asyncio.Event()
        await runtime_device.run_device(data, "127.0.0.1:0", stop, lambda text: print(text, flush=True),
                                        uplinks=False)

    asyncio.run(main())


# --------------------------------------------------------------------------- the client


class RssSampler(threading.Thread):
    """Peak RSS of another process, sampled every ``interval`` seconds."""

    def __init__(self, pid: int, interval: float = 0.01) -> None:
        super().__init__(daemon=True)
        self.process = psutil.Process(pid)
        self.interval = interval
        self.start_rss = self.process.memory_info().rss
        self.peak = self.start_rss
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.wait(self.interval):
            try:
                self.peak = max(self.peak, self.process.memory_info().rss)
            except psutil.Error:
                return

    def finish(self) -> float:
        self._done.set()
        self.join(5)
        self.peak = max(self.peak, self.process.memory_info().rss)
        return (self.peak - self.start_rss) / 2**20


_SIMPLE = "{http://www.onvif.org/ver10/schema}SimpleItem"
_GEO = "{http://www.onvif.org/ver10/schema}GeoLocation"
_NOTIFICATION = "{http://docs.oasis-open.org/wsn/b-2}NotificationMessage"


def raw_events(answer: Any) -> list[tuple[Any, ...]]:
    """Every event of a PullMessagesResponse as (topic, operation, [(item name, value)], location)."""
    out = []
    for holder in answer.iterchildren(_NOTIFICATION):
        topic, message = holder[0], holder[-1][0]  # wsnt:Message is last (after ProducerReference)
        geo = next(message.iter(_GEO), None)
        out.append((topic.text, message.get("PropertyOperation"),
                    [(item.get("Name"), item.get("Value")) for item in message.iter(_SIMPLE)],
                    None if geo is None else (float(geo.get("lon")), float(geo.get("lat")), geo.get("elevation"))))
    return out


def raw_resources(base: str) -> Iterator[str]:
    """The enumeration with hand-written envelopes over http.client, answers parsed with lxml."""
    from bench_resources_query import RawClient

    client = RawClient(base)
    try:
        client.call(base + "/onvif/event_service", "<tev:GetServiceCapabilities/>")  # warm
        yield "started"
        address = client.subscribe(base, None)
        try:
            while True:
                answer = client.call(address, "<tev:PullMessages><tev:Timeout>PT0S</tev:Timeout>"
                                              f"<tev:MessageLimit>{MESSAGE_LIMIT}</tev:MessageLimit></tev:PullMessages>")
                events = raw_events(answer)
                for _topic, _operation, items, _location in events:
                    yield items[0][1]  # the Source item Token comes first
                if len(events) < MESSAGE_LIMIT:
                    return
        finally:
            client.unsubscribe(address)
    finally:
        client.close()


def query_client_resources(base: str) -> Iterator[str]:
    """The enumeration through :class:`ResourceQueryClient` (zeep requests, ``parse_message`` answers)."""
    from iec62676_2_33.query import ResourceQueryClient

    client = ResourceQueryClient(base + "/onvif/event_service", username=USER[0], password=USER[1],
                                 message_limit=MESSAGE_LIMIT, timeout=120, pull_timeout=60, grace=60)
    client.kinds()  # warm: zeep, the connection, the device's services
    yield "started"
    with client.subscribe(termination="PT300S") as subscription:
        for resource in subscription.resources():
            yield resource.token


CLIENTS = {"raw": raw_resources, "query": query_client_resources}


def enumerate_all(base: str, pid: int, client: str, limit: int | None) -> dict[str, Any]:
    tokens = CLIENTS[client](base)
    assert next(tokens) == "started"
    sampler = RssSampler(pid)
    sampler.start()
    cpu_before = psutil.Process(pid).cpu_times()
    started = time.perf_counter()
    count = 0
    first = last = None
    for token in tokens:
        if first is None:
            first = token
        last = token
        count += 1
        if limit is not None and count >= limit:
            tokens.close()  # type: ignore[attr-defined]
            break
    elapsed = time.perf_counter() - started
    cpu_after = psutil.Process(pid).cpu_times()
    growth = sampler.finish()
    server_cpu = (cpu_after.user + cpu_after.system) - (cpu_before.user + cpu_before.system)
    return {"count": count, "seconds": elapsed, "rate": count / elapsed, "first": first, "last": last,
            "rss_start": sampler.start_rss / 2**20, "rss_growth": growth, "server_cpu": server_cpu}


def run_variant(database: Path, variant: str, client: str, limit: int | None) -> dict[str, Any]:
    data = device_data(database)
    device = DeviceProcess(data, argv=[sys.executable, os.path.abspath(__file__), "--serve", variant,
                                       "--data", str(data)])
    try:
        return enumerate_all(device.base, device.pid, client, limit)
    finally:
        device.stop()
        shutil.rmtree(data, ignore_errors=True)


def report(name: str, r: dict[str, Any]) -> None:
    print(f"   {name:<31} {r['count']:>9,} events in {r['seconds']:6.1f} s = {r['rate']:8,.0f} events/s; "
          f"device CPU {r['server_cpu']:5.1f} s ({r['server_cpu'] / r['count'] * 1e6:5.1f} us/event); "
          f"device RSS {r['rss_start']:.0f} MiB, peak growth {r['rss_growth']:.1f} MiB", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=1_000_000)
    parser.add_argument("--baseline-count", type=int, default=100_000,
                        help="resources the Spyne-serialisation baseline enumerates (0: skip it)")
    parser.add_argument("--query-client", type=int, default=1_000_000, metavar="N",
                        help="also enumerate N resources with ResourceQueryClient (0: skip)")
    parser.add_argument("--serve", choices=("lxml", "spyne"), help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.data, args.serve)
        return
    print(f"bench_resources_enum: {args.count:,} resources, MessageLimit {MESSAGE_LIMIT}, Timeout PT0S; "
          f"{machine()}", flush=True)
    database = resource_database(args.count)
    ours = run_variant(database, "lxml", "raw", None)
    report("library, raw HTTP+lxml client", ours)
    assert ours["count"] == args.count, f"enumerated {ours['count']} of {args.count}"
    print(f"   goal >= 20,000 events/s: {'met' if ours['rate'] >= 20_000 else 'MISSED'}; "
          f"goal device RSS growth < 100 MiB: {'met' if ours['rss_growth'] < 100 else 'MISSED'}", flush=True)
    if args.query_client:
        limit = None if args.query_client >= args.count else args.query_client
        zeep_run = run_variant(database, "lxml", "query", limit)
        report("library, ResourceQueryClient", zeep_run)
        assert zeep_run["first"] == ours["first"]
    if args.baseline_count:
        base = run_variant(database, "spyne", "raw", args.baseline_count)
        report("Spyne objects, raw client", base)
        assert base["first"] == ours["first"], "the variants disagree on the first resource"
        print(f"   library / Spyne-object baseline (raw client both): {ours['rate'] / base['rate']:.1f}x events/s")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
