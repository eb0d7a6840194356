"""GEN-2, CFG-1, PROV-4: GetServices reports, per service, the release whose vocabulary the service speaks.

The uplink service speaks the 26.06 wording (AccessToken, the Connected status, a UserLevel that lists user
roles), the device service the 25.12 user roles; every service the device can list has its own version, and
GetServices answers it through the device service with the authored XSD's shape.
"""

from __future__ import annotations

from test_device_service import answer, services_of, wsgi_call

from iec62676_2_33 import schemas
from iec62676_2_33.namespaces import TDS, TEV, TUP
from iec62676_2_33.security.access import operation_access_from
from iec62676_2_33.security.middleware import ENVIRON_UPLINK_LEVEL, AccessControlMiddleware
from iec62676_2_33.services.device import (
    OPERATION_ACCESS,
    SERVICE_VERSIONS,
    DeviceServiceContext,
    ServiceEntry,
    device_endpoint,
)
from iec62676_2_33.services.media2 import TR2
from iec62676_2_33.services.ptz import TPTZ
from iec62676_2_33.services.recording import TRP, TSE
from iec62676_2_33.services.security import TAS

EXPECTED = {TDS: (25, 12), TUP: (26, 6), TEV: (22, 6), TR2: (19, 6), TAS: (25, 12), TPTZ: (17, 6),
            TSE: (26, 6), TRP: (18, 6)}


def test_every_listed_service_reports_its_own_version_gen_2_cfg_1_prov_4() -> None:
    """GEN-2, CFG-1, PROV-4: each of the eight services is listed with its version, not one shared number."""
    assert dict(SERVICE_VERSIONS) == EXPECTED
    entries = [ServiceEntry(namespace, f"/onvif/s{i}") for i, namespace in enumerate(EXPECTED)]
    context = DeviceServiceContext(services=entries, served={entry.path for entry in entries})
    app = AccessControlMiddleware(device_endpoint(context), operation_access=operation_access_from(OPERATION_ACCESS),
                                  wsse=None, digest=None)
    status, root = wsgi_call(app, "<tds:GetServices><tds:IncludeCapability>false</tds:IncludeCapability>"
                                  "</tds:GetServices>", **{ENVIRON_UPLINK_LEVEL: "Administrator"})
    assert status == "200 OK"
    response = answer(root)
    schemas.validate(response, "device")
    assert [(ns, (int(major), int(minor))) for ns, _, major, minor in services_of(response)] == \
        list(EXPECTED.items())
