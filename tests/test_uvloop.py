"""The runtimes on uvloop's event loop, as a VMS application embedding them may run them
(UPL-1, UPL-16).

uvloop's transports do not subclass :class:`asyncio.Transport`, so the TLS engine and
the TCP stream take the transport they are given as it is. Here the cloud and the
device both run on uvloop: the device dials its mTLS uplink, the cloud calls it in
reverse, and the device's direct port answers too.
"""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
import uvloop

SOAP = (b'<?xml version="1.0" encoding="utf-8"?><env:Envelope xmlns:env="http://www.w3.org/2003/05/soap-envelope"'
        b' xmlns:tds="http://www.onvif.org/ver10/device/wsdl"><env:Body><tds:GetServiceCapabilities/></env:Body>'
        b"</env:Envelope>")
HEADERS = (("content-type", "application/soap+xml; charset=utf-8"),)


@pytest.fixture
def on_uvloop() -> Iterator[None]:
    """Every event loop made while the test runs is uvloop's (the background services call ``asyncio.run``)."""
    before = asyncio.get_event_loop_policy()
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    try:
        yield
    finally:
        asyncio.set_event_loop_policy(before)


def test_uplink_and_direct_port_on_uvloop(on_uvloop: None, uplinked_device: Any) -> None:
    cloud = uplinked_device.cloud
    assert isinstance(cloud.loop, uvloop.Loop)
    assert isinstance(uplinked_device.device.service.loop, uvloop.Loop)

    reverse = cloud.request("device-1", "POST", "/onvif/device_service", HEADERS, SOAP)
    assert reverse.status == 200
    assert b"Capabilities" in reverse.body

    direct = urllib.request.Request(uplinked_device.device.device_service, data=SOAP, headers=dict(HEADERS))
    with urllib.request.urlopen(direct, timeout=10) as answer:
        assert answer.status == 200
        assert b"Capabilities" in answer.read()

    proxied = urllib.request.Request(f"{cloud.proxy_url}/devices/device-1/onvif/device_service", data=SOAP,
                                     headers=dict(HEADERS))
    with urllib.request.urlopen(proxied, timeout=10) as answer:
        assert answer.status == 200
        assert b"Capabilities" in answer.read()
