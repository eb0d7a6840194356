"""Test scaffolding for suites that test uplink devices and clouds: a pytest plugin and its parts (TEST-1).

Installed with the library, pytest loads :mod:`.plugin` through the
``pytest11`` entry point ``iec62676``, so a vendor's suite gets these
fixtures without a line of configuration:

``uplink_pki``
    A CA, the cloud's server certificate (``localhost``, ``127.0.0.1``) and
    device certificates on demand, written to a temporary folder
    (:class:`.harness.UplinkPki`).
``cloud``
    Our cloud (TLS listener and HTTP proxy) running on loopback
    (:class:`.harness.RunningCloud`): ``devices()``, ``request()``, ``wait_for()``,
    ``transport(device_id)`` for zeep, ``proxy_url``.
``device``
    Our device running on loopback with a data folder and an administrator
    (:class:`.harness.RunningDevice`): ``url``, ``device_service``, ``data``.
``uplinked_device``
    A device whose uplink to ``cloud`` is up (:class:`.harness.Uplinked`).
``resource_registry``
    A resource registry filled with deterministic sample resources.
``conformance``
    A function that runs conformance cases against a device URL inside a
    test and returns the :class:`~iec62676_2_33.conformance.Report`.

Importing this package starts nothing and imports no test framework; the
plugin imports the heavy parts only when a fixture is used.
"""

from __future__ import annotations

__all__: list[str] = []
