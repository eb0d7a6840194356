"""Layer 5: the authored WSDL/XSD files — where they are, how to parse XML safely,
and how to validate a message against them.

The files live at the top of the source tree (``wsdl/``, ``xsd/``) and are
installed as the ``iec62676_2_33.wsdl`` and ``iec62676_2_33.xsd`` packages, so
the relative ``../xsd/…`` imports of the WSDLs resolve in both layouts and no
schema import ever reaches the network.
"""

from __future__ import annotations

import functools
from pathlib import Path

from lxml import etree

from .errors import SchemaError

_HERE = Path(__file__).resolve().parent


def _root() -> Path:
    """The folder holding ``wsdl/`` and ``xsd/``: the package when installed, else the source tree."""
    for candidate in (_HERE, _HERE.parent):
        if (candidate / "wsdl").is_dir() and (candidate / "xsd").is_dir():
            return candidate
    raise SchemaError(f"the wsdl/ and xsd/ folders are missing beside {_HERE}; reinstall the package")


def wsdl_path(name: str) -> Path:
    """Absolute path of an authored WSDL, e.g. ``wsdl_path("uplink")``."""
    path = _root() / "wsdl" / f"{name}.wsdl"
    if not path.is_file():
        raise SchemaError(f"no WSDL named {name!r} at {path}")
    return path


def xsd_path(name: str) -> Path:
    """Absolute path of an authored XSD, e.g. ``xsd_path("uplink")``."""
    path = _root() / "xsd" / f"{name}.xsd"
    if not path.is_file():
        raise SchemaError(f"no XSD named {name!r} at {path}")
    return path


def safe_parser() -> etree.XMLParser:
    """An lxml parser that loads no DTD, resolves no entity and reaches no network.

    A new parser per call: lxml parsers are not meant to be shared between threads.
    """
    return etree.XMLParser(
        resolve_entities=False, no_network=True, load_dtd=False, dtd_validation=False,
        huge_tree=False, remove_comments=False,
    )


def parse_xml(data: bytes) -> etree._Element:
    """Parse untrusted XML; a document type declaration is refused outright."""
    try:
        tree = etree.fromstring(data, safe_parser())
    except etree.XMLSyntaxError as exc:
        raise SchemaError(f"not well-formed XML: {exc.msg}") from None
    if tree is None:
        raise SchemaError("the XML document is empty")
    docinfo = tree.getroottree().docinfo
    if docinfo.doctype or docinfo.internalDTD is not None or docinfo.externalDTD is not None:
        raise SchemaError("XML with a DOCTYPE is not accepted; DTDs and entities are refused")
    return tree


@functools.cache
def schema(name: str) -> etree.XMLSchema:
    """The compiled XSD ``xsd/<name>.xsd`` (its imports resolved from local files only)."""
    path = xsd_path(name)
    try:
        doc = etree.parse(str(path), safe_parser())
        return etree.XMLSchema(doc)
    except (etree.XMLSyntaxError, etree.XMLSchemaParseError) as exc:
        raise SchemaError(f"{path}: {exc}") from exc


def validate(element: etree._Element, name: str) -> None:
    """Validate one element (a SOAP Body child) against ``xsd/<name>.xsd``."""
    compiled = schema(name)
    doc = etree.ElementTree(etree.fromstring(etree.tostring(element)))
    if not compiled.validate(doc):
        errors = "; ".join(f"line {e.line}: {e.message}" for e in compiled.error_log)
        raise SchemaError(f"{etree.QName(element).localname} does not validate against {name}.xsd: {errors}")
