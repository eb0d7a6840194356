"""Layer 6 (domain): the Annex A 20-digit device ID (ANX-A-1 .. ANX-A-5).

Theory of operation
-------------------
Annex A (informative) proposes a 20-digit device ID that a VSS can use as the
remote-token prefix of a device (ADR-4)::

    positions  1-8         9-10     11-13        14       15-20
               zone        agency   device type  network  serial
               PP CC DD UU

* zone (ANX-A-1): province, city, district (together the GB/T 2260
  administrative division code) and unit (``00`` = surveillance centre,
  ``01``.. user-defined);
* agency / industry code (ANX-A-2), device type code (ANX-A-3);
* the 7-digit serial number = network ID (1 digit) + serial (6 digits)
  (ANX-A-4).

The code tables are data (exact codes in dicts, ranges as tuples); a code that
falls in a reserved or extended range is described as such, a code outside
every range as ``"undefined"``. Only the *shape* (20 ASCII digits) is
enforced: the annex is informative, so an undefined code still parses.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ConfigurationError

__all__ = [
    "AGENCY_NAMES",
    "AGENCY_RANGES",
    "DEVICE_ID_LENGTH",
    "DEVICE_TYPE_NAMES",
    "DEVICE_TYPE_RANGES",
    "FIELDS",
    "NETWORK_RANGES",
    "UNDEFINED",
    "DeviceId",
    "InvalidDeviceId",
    "agency_name",
    "device_type_name",
    "network_name",
    "unit_name",
]

#: Length of an Annex A device ID.
DEVICE_ID_LENGTH = 20
#: Description of a code outside every table range.
UNDEFINED = "undefined"

#: (field, first position, last position), 1-based, inclusive (ANX-A-1, ANX-A-4).
FIELDS: tuple[tuple[str, int, int], ...] = (
    ("province", 1, 2),
    ("city", 3, 4),
    ("district", 5, 6),
    ("unit", 7, 8),
    ("agency", 9, 10),
    ("device_type", 11, 13),
    ("network", 14, 14),
    ("serial", 15, 20),
)

#: ANX-A-2: agency (industry) codes with a name of their own.
AGENCY_NAMES: dict[int, str] = {
    0: "urban roadway",
    1: "society community",
    2: "social security agency",
    3: "other security agencies",
    4: "traffic roadway",
    5: "traffic checkpoints",
    6: "traffic management agency",
    7: "agency related to traffic management",
    8: "city management",
    9: "health & environmental management",
    10: "commodity inspection & customs",
    11: "education",
    40: "farming/forestry/husbandry/fishery",
    41: "mining",
    42: "manufacturing",
    43: "metallurgy",
    44: "electric power",
    45: "gas",
    46: "construction",
    47: "logistics",
    48: "postal services",
    49: "IT",
    50: "hotels & catering",
    51: "financing",
    52: "real estate",
    53: "commercial services",
    54: "water resources enterprises",
    55: "entertainment",
}

#: ANX-A-2: reserved agency ranges (first, last, description).
AGENCY_RANGES: tuple[tuple[int, int, str], ...] = (
    (12, 39, "reserved (government subjects)"),
    (56, 79, "reserved (enterprises)"),
    (80, 89, "dwellers building (reserved)"),
    (90, 99, "other entities (reserved)"),
)

#: ANX-A-3: device type codes with a name of their own.
DEVICE_TYPE_NAMES: dict[int, str] = {
    111: "DVR",
    112: "video server",
    113: "encoder",
    114: "decoder",
    115: "video switching matrix",
    116: "audio switching matrix",
    117: "alarm controller",
    118: "NVR",
    119: "online information acquisition device",
    120: "online information acquisition system",
    121: "roadway checkpoint",
    130: "HVR",
    131: "camera",
    132: "IPC",
    133: "display encoding",
    134: "alarm input device",
    135: "alarm output device",
    136: "audio input",
    137: "audio output",
    138: "mobile transmission device",
    139: "other peripheral",
    200: "central signalling control server",
    201: "web application server",
    202: "media distribution server",
    203: "proxy server",
    204: "security server",
    205: "alarm server",
    206: "database server",
    207: "GIS server",
    208: "management server",
    209: "access gateway",
    210: "media storage server",
    215: "traffic grouping",
    216: "virtual grouping",
    300: "central user",
    400: "terminal user",
    500: "signalling server of video/image application platform",
    501: "signalling server of maintenance platform",
    502: "video/image analysis device/system",
    503: "video/image information database",
    504: "video/image information platform",
}

#: ANX-A-3: device type ranges (first, last, description, category). A code
#: with a name of its own that also lies in a range (121: roadway checkpoint,
#: in 121..129 extended front-end devices) is described as "name (category)".
DEVICE_TYPE_RANGES: tuple[tuple[int, int, str, str], ...] = (
    (121, 129, "extended front-end devices", "front-end device"),
    (140, 149, "extended peripherals", "peripheral"),
    (211, 214, "extended platform devices", "platform device"),
    (217, 299, "extended platform devices", "platform device"),
    (301, 343, "industrial role users (central)", "central user"),
    (344, 399, "extended (central users)", "central user"),
    (401, 443, "industrial role users (terminal)", "terminal user"),
    (444, 499, "extended (terminal users)", "terminal user"),
    (505, 599, "extended external platform servers", "external platform server"),
    (600, 699, "extended types", "extended type"),
)

#: ANX-A-4: network ID ranges (first, last, description).
NETWORK_RANGES: tuple[tuple[int, int, str], ...] = (
    (0, 4, "surveillance alarm network"),
    (5, 5, "public security network"),
    (6, 6, "government network"),
    (7, 7, "internet"),
    (8, 9, "reserved"),
)


class InvalidDeviceId(ConfigurationError):
    """A device ID or one of its fields is not the digits Annex A expects (ANX-A-1 .. ANX-A-4)."""


def _is_ascii_digits(text: str) -> bool:
    return bool(text) and all("0" <= c <= "9" for c in text)


def _digits(value: str | int, width: int, field: str) -> str:
    """*value* as exactly *width* ASCII digits; an int is zero-padded."""
    unit = "digit" if width == 1 else "digits"
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise InvalidDeviceId(f"{field} must be {width} ASCII {unit}, not a {type(value).__name__}")
    if isinstance(value, int):
        if not 0 <= value < 10**width:
            raise InvalidDeviceId(f"{field} {value} does not fit in {width} {unit}")
        return str(value).zfill(width)
    if len(value) != width or not _is_ascii_digits(value):
        raise InvalidDeviceId(f"{field} must be exactly {width} ASCII {unit}, got {value!r}")
    return value


def _lookup(code: int, names: dict[int, str], ranges: tuple[tuple[int, int, str], ...]) -> str:
    name = names.get(code)
    if name is not None:
        return name
    for first, last, description in ranges:
        if first <= code <= last:
            return description
    return UNDEFINED


def agency_name(code: str | int) -> str:
    """Description of an agency (industry) code ``00``..``99`` (ANX-A-2)."""
    return _lookup(int(_digits(code, 2, "agency")), AGENCY_NAMES, AGENCY_RANGES)


def device_type_name(code: str | int) -> str:
    """Description of a device type code ``000``..``999`` (ANX-A-3)."""
    value = int(_digits(code, 3, "device type"))
    name = DEVICE_TYPE_NAMES.get(value)
    for first, last, description, category in DEVICE_TYPE_RANGES:
        if first <= value <= last:
            return description if name is None else f"{name} ({category})"
    return UNDEFINED if name is None else name


def network_name(n: str | int) -> str:
    """Description of a network ID ``0``..``9`` (ANX-A-4)."""
    return _lookup(int(_digits(n, 1, "network")), {}, NETWORK_RANGES)


def unit_name(code: str | int) -> str:
    """Description of a unit code (ANX-A-1): ``00`` surveillance centre, else user-defined."""
    digits = _digits(code, 2, "unit")
    return "surveillance centre" if digits == "00" else f"user-defined unit {digits}"


@dataclass(frozen=True)
class DeviceId:
    """An Annex A device ID: zone(8) agency(2) device_type(3) network(1) serial(6).

    Fields are digit strings; construction checks each width. The zone's parts
    (province, city, district, unit — ANX-A-1) are properties.
    """

    zone: str
    agency: str
    device_type: str
    network: str
    serial: str

    def __post_init__(self) -> None:
        _digits(self.zone, 8, "zone")
        _digits(self.agency, 2, "agency")
        _digits(self.device_type, 3, "device_type")
        _digits(self.network, 1, "network")
        _digits(self.serial, 6, "serial")

    @classmethod
    def parse(cls, text: str) -> DeviceId:
        """Parse exactly 20 ASCII digits (ANX-A-1 .. ANX-A-4).

        Any other length, or a non-digit, raises :class:`InvalidDeviceId`
        naming the position and the field it falls in.
        """
        if not isinstance(text, str):
            raise InvalidDeviceId(
                f"device ID must be a string of {DEVICE_ID_LENGTH} digits, "
                f"not {type(text).__name__}"
            )
        for position, char in enumerate(text, start=1):
            if not "0" <= char <= "9":
                where = _field_at(position)
                raise InvalidDeviceId(
                    f"device ID {text!r}: position {position} ({where}) is {char!r}, "
                    "expected an ASCII digit 0-9"
                )
        if len(text) != DEVICE_ID_LENGTH:
            raise InvalidDeviceId(
                f"device ID {text!r} has {len(text)} digits, expected exactly "
                f"{DEVICE_ID_LENGTH} (zone 8, agency 2, type 3, network 1, serial 6)"
            )
        return cls(
            zone=text[0:8],
            agency=text[8:10],
            device_type=text[10:13],
            network=text[13],
            serial=text[14:20],
        )

    @classmethod
    def build(
        cls,
        zone: str | int,
        agency: str | int,
        device_type: str | int,
        network: str | int,
        serial: str | int,
    ) -> DeviceId:
        """Assemble an ID from its fields, checking each width (ints are zero-padded)."""
        return cls(
            zone=_digits(zone, 8, "zone"),
            agency=_digits(agency, 2, "agency"),
            device_type=_digits(device_type, 3, "device_type"),
            network=_digits(network, 1, "network"),
            serial=_digits(serial, 6, "serial"),
        )

    @property
    def province(self) -> str:
        return self.zone[0:2]

    @property
    def city(self) -> str:
        return self.zone[2:4]

    @property
    def district(self) -> str:
        return self.zone[4:6]

    @property
    def unit(self) -> str:
        return self.zone[6:8]

    @property
    def division(self) -> str:
        """The six-digit GB/T 2260 administrative division code (ANX-A-1)."""
        return self.zone[0:6]

    def __str__(self) -> str:
        return f"{self.zone}{self.agency}{self.device_type}{self.network}{self.serial}"

    def as_prefix(self) -> str:
        """The remote-token prefix for this device: the 20 digits (ADR-4, Annex A)."""
        return str(self)

    def explain(self) -> list[tuple[str, str, str]]:
        """``(field, digits, meaning)`` for every field, in ID order (ANX-A-1 .. ANX-A-4)."""
        p, c, d = self.province, self.city, self.district
        district = (
            f"city level, no district (division {p}{c}00)"
            if d == "00"
            else f"district/county (GB/T 2260 division {p}{c}{d})"
        )
        return [
            ("province", p, f"province (GB/T 2260 division {p}0000)"),
            ("city", c, f"city (GB/T 2260 division {p}{c}00)"),
            ("district", d, district),
            ("unit", self.unit, unit_name(self.unit)),
            ("agency", self.agency, agency_name(self.agency)),
            ("device_type", self.device_type, device_type_name(self.device_type)),
            ("network", self.network, network_name(self.network)),
            ("serial", self.serial, f"device serial number {self.serial}"),
        ]


def _field_at(position: int) -> str:
    for name, first, last in FIELDS:
        if first <= position <= last:
            return name
    return "beyond the 20 digits"
