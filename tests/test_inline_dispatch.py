"""SEC-1, SEC-3, UPL-16: the device runs quick read-only operations on its event loop
(``DeviceApplication.runs_inline``) without a second parse and without a way around access control.

* The operation that decides where a request runs is the one access control decides on and the
  dispatcher runs: ``runs_inline`` parses with the same function and leaves the parse to the
  middleware, so every request that parses is parsed exactly once, inline or in a worker.
* Only operations from the read-only list run inline: a generated request variant (encodings,
  SOAPAction and ``action`` parameters, WS-Addressing, several bodies, comments, ...) runs inline
  only when what access control decided on is such an operation.
* On the real runtime (``WsgiHandler``) a quick operation runs on the loop's thread, a writing one
  (SetUplink) in a worker, and both answer correctly.
"""

from __future__ import annotations

import asyncio
import io
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from conftest import seed_device
from hypothesis import HealthCheck, given, settings
from test_edge_dispatch import RecordingExchange
from test_single_parse import DANGEROUS, HARMLESS, SOAP_CT, variants, wrap

from iec62676_2_33.domain.ptz import SimulatedPtz
from iec62676_2_33.namespaces import TUP
from iec62676_2_33.runtime.wsgi_handler import WsgiHandler
from iec62676_2_33.security import middleware
from iec62676_2_33.security.access import operation_access_from
from iec62676_2_33.security.middleware import ENVIRON_PARSED, ENVIRON_UPLINK_LEVEL, AccessControlMiddleware
from iec62676_2_33.services import inline
from iec62676_2_33.services.app import UPLINK_PATH, DeviceApplication, build_device_app
from iec62676_2_33.services.inline import INLINE_OPERATIONS
from iec62676_2_33.services.uplink import OPERATION_ACCESS, UplinkServiceContext, uplink_endpoint
from iec62676_2_33.soap import envelope
from iec62676_2_33.store import DeviceStore

TIMEOUT = 10.0


class Counted:
    """The device app on the uplink route, with every parse and every access decision counted."""

    def __init__(self, store: DeviceStore, monkeypatch: pytest.MonkeyPatch) -> None:
        self.parses = 0
        self.decided: list[tuple[str, str]] = []
        table = operation_access_from(OPERATION_ACCESS)

        def decide(namespace: str, name: str) -> Any:
            self.decided.append((namespace, name))
            return table(namespace, name)

        def parse(content_type: str | None, data: bytes) -> envelope.SoapRequest:
            self.parses += 1
            return envelope.parse_request(content_type, data)

        monkeypatch.setattr(inline, "parse_request", parse)
        monkeypatch.setattr(middleware, "parse_request", parse)
        gate = AccessControlMiddleware(uplink_endpoint(UplinkServiceContext(store=store)), operation_access=decide,
                                       wsse=None, digest=None)
        self.app = DeviceApplication(store=store, uplink=UplinkServiceContext(store=store),
                                     routes={UPLINK_PATH: gate})

    def reset(self) -> None:
        self.parses = 0
        self.decided.clear()


@pytest.fixture
def counted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Counted, DeviceStore]]:
    seed_device(tmp_path / "d")  # cert-1 exists: SetUplink can succeed
    with DeviceStore(tmp_path / "d") as store:
        yield Counted(store, monkeypatch), store


def environ(data: bytes, content_type: str | None, headers: dict[str, str] | None = None,
            **extra: Any) -> dict[str, Any]:
    env: dict[str, Any] = {"REQUEST_METHOD": "POST", "PATH_INFO": UPLINK_PATH, "CONTENT_LENGTH": str(len(data)),
                           "wsgi.input": io.BytesIO(data), "wsgi.url_scheme": "http", "SERVER_NAME": "cam.local",
                           "SERVER_PORT": "80", "SCRIPT_NAME": "", **extra}
    if content_type is not None:
        env["CONTENT_TYPE"] = content_type
    for name, value in (headers or {}).items():
        env["HTTP_" + name.upper().replace("-", "_")] = value
    return env


def run(app: Callable[..., Any], env: dict[str, Any]) -> int:
    got: dict[str, str] = {}
    b"".join(app(env, lambda status, headers, exc_info=None: got.setdefault("status", status)))
    return int(got["status"].split()[0])


def test_inline_list_is_read_only_operations() -> None:
    """SEC-1: every operation allowed inline only reads (Get...); PullMessages, subscriptions and every
    operation that writes are not on the list."""
    assert all(name.startswith("Get") for _ns, name in INLINE_OPERATIONS)
    names = {name for _ns, name in INLINE_OPERATIONS}
    assert not names & {"PullMessages", "Subscribe", "Renew", "Unsubscribe", "CreatePullPointSubscription",
                        "SetUplink", "DeleteUplink", "SetSynchronizationPoint"}


def test_quick_and_writing_requests_are_parsed_once(counted: tuple[Counted, DeviceStore]) -> None:
    """SEC-1, SEC-3: GetServiceCapabilities is declared inline, SetUplink (Administrator uplink) is not; each is
    parsed exactly once, decided once, and answered 200; a body the parser refuses is faulted by the
    middleware as before."""
    device, store = counted
    env = environ(wrap(HARMLESS).encode(), SOAP_CT)
    assert device.app.runs_inline(env) is True
    assert isinstance(env[ENVIRON_PARSED], envelope.SoapRequest)
    assert run(device.app, env) == 200
    assert (device.parses, device.decided) == (1, [(TUP, "GetServiceCapabilities")])

    device.reset()
    env = environ(wrap(DANGEROUS).encode(), SOAP_CT, **{ENVIRON_UPLINK_LEVEL: ["Administrator"]})
    assert device.app.runs_inline(env) is False
    assert run(device.app, env) == 200
    assert (device.parses, device.decided) == (1, [(TUP, "SetUplink")])
    assert len(store.list_uplinks()) == 1

    device.reset()
    env = environ(b"<not-soap/>", SOAP_CT)
    assert device.app.runs_inline(env) is False
    assert run(device.app, env) == 400
    assert device.decided == []


@settings(max_examples=300, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(variant=variants())
def test_inline_only_when_the_decided_operation_is_quick(
        counted: tuple[Counted, DeviceStore], variant: tuple[bytes, str | None, dict[str, str]]) -> None:
    """SEC-1, SEC-3: for every generated variant (anonymous), the request runs inline only if the operation
    access control decided on is on the read-only list, at most one parse and one decision happen, and
    nothing is ever stored."""
    device, store = counted
    device.reset()
    data, content_type, headers = variant
    env = environ(data, content_type, headers)
    quick = device.app.runs_inline(env)
    run(device.app, env)
    assert device.parses <= 1 or not device.decided  # a refused body is parsed again only to be faulted
    assert len(device.decided) <= 1
    if quick:
        assert device.parses == 1 and device.decided[0] in INLINE_OPERATIONS
    assert store.list_uplinks() == []


async def test_quick_operations_run_on_the_loop_thread_upl_16(counted: tuple[Counted, DeviceStore]) -> None:
    """UPL-16: through the runtime's WSGI adapter GetServiceCapabilities runs on the event loop's thread and
    SetUplink in a worker, both answered 200."""
    device, _store = counted
    threads: list[int] = []
    gate = device.app.routes[UPLINK_PATH]

    def spy(env: dict[str, Any], start_response: Any) -> Any:
        threads.append(threading.get_ident())
        return gate(env, start_response)

    app = DeviceApplication(store=device.app.store, uplink=device.app.uplink, routes={UPLINK_PATH: spy})
    app.runs_inline = device.app.runs_inline  # type: ignore[method-assign]  # the spy is no middleware
    loop = asyncio.get_running_loop()
    with ThreadPoolExecutor(1) as pool:
        handler = WsgiHandler(app, executor=pool, extra_environ=lambda: {ENVIRON_UPLINK_LEVEL: ["Administrator"]})
        quick = RecordingExchange(loop, wrap(HARMLESS).encode(), path=UPLINK_PATH, content_type=SOAP_CT)
        await asyncio.wait_for(handler(quick), TIMEOUT)
        writing = RecordingExchange(loop, wrap(DANGEROUS).encode(), path=UPLINK_PATH, content_type=SOAP_CT)
        await asyncio.wait_for(handler(writing), TIMEOUT)
    assert (quick.status, writing.status) == (200, 200)
    assert threads[0] == threading.get_ident() and threads[1] != threading.get_ident()
    assert device.parses == 2


class FirmwareMedia:
    """A media backend of the kind firmware plugs in (its calls may block)."""

    def media_sources(self) -> list[Any]:
        return []

    def media_source(self, token: str) -> Any:
        return None


def test_nothing_runs_inline_with_a_firmware_media_backend(tmp_path: Path) -> None:
    """UPL-16: the quick operations consult the media backend (GetServices, StreamingOverUplink); with the
    store's own backend GetServiceCapabilities runs inline, with a firmware backend nothing does."""
    body = wrap(HARMLESS).encode()
    with DeviceStore(tmp_path / "d") as store:
        own = build_device_app(UplinkServiceContext(store=store))
        firmware = build_device_app(UplinkServiceContext(store=store), media=FirmwareMedia())
        assert own.runs_inline(environ(body, SOAP_CT)) is True
        env = environ(body, SOAP_CT)
        assert firmware.runs_inline(env) is False
        assert ENVIRON_PARSED not in env and run(firmware, env) == 200  # body untouched, parsed by the middleware


class FirmwarePtz:
    """A PTZ backend of firmware: its calls may block (a motor controller on a serial line)."""

    def nodes(self) -> list[Any]:
        return []

    def head(self, token: str) -> None:
        return None


def test_nothing_runs_inline_with_a_firmware_ptz_backend(tmp_path: Path) -> None:
    """UPL-16, ANX-B-2: the quick operations consult the PTZ backend too (GetProfiles' PTZ configurations,
    GetServices' PTZ capabilities): with the library's simulated heads GetServiceCapabilities runs inline, with
    a firmware backend nothing does."""
    body = wrap(HARMLESS).encode()
    with DeviceStore(tmp_path / "d") as store:
        simulated = build_device_app(UplinkServiceContext(store=store), ptz=SimulatedPtz([], 0.0))
        firmware = build_device_app(UplinkServiceContext(store=store), ptz=FirmwarePtz())  # type: ignore[arg-type]
        assert simulated.runs_inline(environ(body, SOAP_CT)) is True
        assert firmware.runs_inline(environ(body, SOAP_CT)) is False
