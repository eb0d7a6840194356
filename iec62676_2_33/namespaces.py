"""XML namespaces of the wire contract (REQUIREMENTS.md "Wire contract")."""

from __future__ import annotations

from typing import Final

SOAP_ENV: Final = "http://www.w3.org/2003/05/soap-envelope"
TUP: Final = "http://www.onvif.org/ver10/uplink/wsdl"
TT: Final = "http://www.onvif.org/ver10/schema"
TEV: Final = "http://www.onvif.org/ver10/events/wsdl"
TDS: Final = "http://www.onvif.org/ver10/device/wsdl"
TER: Final = "http://www.onvif.org/ver10/error"
TNS1: Final = "http://www.onvif.org/ver10/topics"
WSNT: Final = "http://docs.oasis-open.org/wsn/b-2"
WSTOP: Final = "http://docs.oasis-open.org/wsn/t-1"
WSA: Final = "http://www.w3.org/2005/08/addressing"
WSSE: Final = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
WSU: Final = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd"

#: Conventional prefixes, used whenever we write XML ourselves.
PREFIXES: Final = {
    "env": SOAP_ENV,
    "tup": TUP,
    "tt": TT,
    "tev": TEV,
    "tds": TDS,
    "ter": TER,
    "tns1": TNS1,
    "wsnt": WSNT,
    "wstop": WSTOP,
    "wsa": WSA,
    "wsse": WSSE,
    "wsu": WSU,
}

SOAP12_CONTENT_TYPE: Final = "application/soap+xml; charset=utf-8"
