"""Conformance kit: test a third-party device or cloud against IEC 62676-2-33 (TEST-1).

``iec62676 conformance device`` plays the cloud a device dials and the client
on its direct address (:mod:`.device_session`, :mod:`.toolcloud`); its cases
are in :mod:`.device_cases`, :mod:`.device_parallel` (two uplinks at once),
:mod:`.device_robustness` (hostile frames of :mod:`.hostile`, an outage of the
cloud; :mod:`.device_pair` compares two instances of one model in one) and
:mod:`.device_token` (the
access-token variant against the tool's authorization server,
:mod:`.toolauth`). ``iec62676 conformance cloud`` plays the device a cloud
accepts (:mod:`.cloud_cases`; its WebSocket and access-token variants in
:mod:`.cloud_variants`, the token from :mod:`.tokensource`). Cases are registered with an ID and the
requirement IDs they check (:mod:`.registry`), run in order (:mod:`.runner`)
and reported as JUnit XML and one HTML page (:mod:`.report`).
"""

from __future__ import annotations

from . import (  # noqa: F401 - they register cases
    cloud_variants,
    device_pair,
    device_parallel,
    device_robustness,
    device_token,
)
from .cloud_cases import CLOUD_CASES, CloudSession, CloudTarget
from .device_cases import DEVICE_CASES
from .device_session import DeviceSession, DeviceTarget
from .registry import Case, Evidence, Registry, Result, Verdict
from .report import html_report, junit_xml, write_reports
from .runner import Report, run

__all__ = ["CLOUD_CASES", "DEVICE_CASES", "Case", "CloudSession", "CloudTarget", "DeviceSession", "DeviceTarget", "Evidence", "Registry", "Report", "Result",
           "Verdict", "html_report", "junit_xml", "run", "write_reports"]
