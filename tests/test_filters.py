"""Resource query filters: RQ-6 (Location), RQ-7 (Prefix), RQ-8 (Scope), RQ-9 (Select).

Also the combined ResourceQuery over the resource kinds of RQ-1/RQ-2.
"""

from __future__ import annotations

import math
import random

import pytest

from iec62676_2_33.domain.filters import (
    EARTH_RADIUS_M,
    MATCH_RFC3986,
    MATCH_STRCMP0,
    InvalidFilter,
    LocationFilter,
    PrefixFilter,
    ResourceQuery,
    ScopeFilter,
    SelectFilter,
    great_circle_distance,
    scope_matches,
    token_prefix,
)
from iec62676_2_33.domain.resources import GeoLocation, Resource
from iec62676_2_33.errors import ConfigurationError

RFC3986_2009 = "http://docs.oasis-open.org/ws-dd/ns/discovery/2009/01/rfc3986"
STRCMP0_2009 = "http://docs.oasis-open.org/ws-dd/ns/discovery/2009/01/strcmp0"
LOC = "onvif://www.onvif.org/location"


def at(lon: float, lat: float, elevation: float | None = None, token: str = "d:t") -> Resource:
    return Resource(token, "MediaProfile", location=GeoLocation(lon, lat, elevation))


def destination(lon: float, lat: float, bearing_deg: float, dist_m: float) -> tuple[float, float]:
    """The point ``dist_m`` from (lon, lat) on the initial bearing (spherical formula)."""
    d = dist_m / EARTH_RADIUS_M
    th = math.radians(bearing_deg)
    p1, l1 = math.radians(lat), math.radians(lon)
    p2 = math.asin(math.sin(p1) * math.cos(d) + math.cos(p1) * math.sin(d) * math.cos(th))
    l2 = l1 + math.atan2(
        math.sin(th) * math.sin(d) * math.cos(p1), math.cos(d) - math.sin(p1) * math.sin(p2)
    )
    lon2 = (math.degrees(l2) + 540.0) % 360.0 - 180.0
    return lon2, math.degrees(p2)


def in_boxes(lon: float, lat: float, boxes: list[tuple[float, float, float, float]]) -> bool:
    return any(a <= lon <= c and b <= lat <= d for a, b, c, d in boxes)


# --------------------------------------------------------------------------- RQ-6


@pytest.mark.parametrize(
    ("a", "b", "km"),
    [
        ((-0.1278, 51.5074), (2.3522, 48.8566), 343.5),  # London - Paris
        ((13.4050, 52.5200), (11.5820, 48.1351), 504.4),  # Berlin - Munich
        ((-74.0060, 40.7128), (-118.2437, 34.0522), 3935.7),  # New York - Los Angeles
    ],
)
def test_rq6_great_circle_distance_of_city_pairs(a, b, km):
    """RQ-6: haversine on the mean Earth radius gives the published great-circle distances."""
    d = great_circle_distance(a[0], a[1], b[0], b[1])
    assert abs(d - km * 1000) < 500
    assert great_circle_distance(b[0], b[1], a[0], a[1]) == pytest.approx(d, abs=1e-6)


def test_rq6_distance_across_the_antimeridian_and_antipodes():
    """RQ-6: 0.2 degrees of longitude across 180 at the equator, and pole to pole."""
    assert great_circle_distance(179.9, 0, -179.9, 0) == pytest.approx(22239.016, abs=0.01)
    assert great_circle_distance(0, 90, 180, -90) == pytest.approx(math.pi * EARTH_RADIUS_M)


def test_rq6_points_100_m_apart_at_lat_52_pass_101_fail_99():
    """RQ-6: two points 100 m apart (north and east) match radius 101, not radius 99."""
    north = at(13.4, 52.0 + math.degrees(100 / EARTH_RADIUS_M))
    # 100 m due east at lat 52: sin(dlon/2) = sin(d/2) / cos(lat)
    dlon = 2 * math.asin(math.sin(100 / EARTH_RADIUS_M / 2) / math.cos(math.radians(52.0)))
    east = at(13.4 + math.degrees(dlon), 52.0)
    for r in (north, east):
        assert LocationFilter(13.4, 52.0, 100.0).distance_to(r.location) == pytest.approx(
            100.0, abs=1e-6
        )
        assert LocationFilter(13.4, 52.0, 101.0).matches(r) is True
        assert LocationFilter(13.4, 52.0, 99.0).matches(r) is False


def test_rq6_radius_is_inclusive_and_zero_matches_the_same_point():
    """RQ-6: distance == radius matches; radius 0 matches only the very point."""
    assert LocationFilter(8.0, 50.0, 0.0).matches(at(8.0, 50.0)) is True
    assert LocationFilter(8.0, 50.0, 0.0).matches(at(8.0, 50.000001)) is False
    d = great_circle_distance(8.0, 50.0, 8.001, 50.001)
    assert LocationFilter(8.0, 50.0, d).matches(at(8.001, 50.001)) is True


def test_rq6_include_unknown():
    """RQ-6: a resource without a location matches only when includeUnknown is true."""
    nowhere = Resource("d:t", "VideoSource")
    assert LocationFilter(8.0, 50.0, 1e7).matches(nowhere) is False
    assert LocationFilter(8.0, 50.0, 1e7, include_unknown=True).matches(nowhere) is True
    # includeUnknown does not widen the circle for located resources
    assert LocationFilter(8.0, 50.0, 10.0, include_unknown=True).matches(at(9, 50)) is False


def test_rq6_height_uses_the_3d_distance_when_both_heights_are_known():
    """RQ-6: with height and elevation, distance = sqrt(arc^2 + dh^2); else the 2-D arc."""
    north60 = 50.0 + math.degrees(60 / EARTH_RADIUS_M)
    cam = at(8.0, north60, elevation=100.0)  # 60 m away, 80 m above the filter height
    f = LocationFilter(8.0, 50.0, 100.0, height=20.0)
    assert f.distance_to(cam.location) == pytest.approx(100.0, abs=1e-6)
    assert LocationFilter(8.0, 50.0, 100.001, height=20.0).matches(cam) is True
    assert LocationFilter(8.0, 50.0, 99.9, height=20.0).matches(cam) is False
    # same point, 130 m above
    tower = at(8.0, 50.0, elevation=150.0)
    assert LocationFilter(8.0, 50.0, 129.0, height=20.0).matches(tower) is False
    assert LocationFilter(8.0, 50.0, 131.0, height=20.0).matches(tower) is True
    # one height missing: the 2-D arc decides
    assert LocationFilter(8.0, 50.0, 61.0).matches(cam) is True
    assert LocationFilter(8.0, 50.0, 61.0, height=20.0).matches(at(8.0, north60)) is True


def test_rq6_bounding_box_of_a_small_circle_is_tight():
    """RQ-6: away from poles and the antimeridian the pre-filter is one tight box."""
    f = LocationFilter(8.0, 50.0, 1000.0)
    [(w, s, e, n)] = f.bounding_boxes()
    dlat = math.degrees(1000.0 / EARTH_RADIUS_M)
    assert s == pytest.approx(50.0 - dlat, abs=1e-6)
    assert n == pytest.approx(50.0 + dlat, abs=1e-6)
    half = math.degrees(math.asin(math.sin(1000.0 / EARTH_RADIUS_M) / math.cos(math.radians(50))))
    assert (w, e) == (pytest.approx(8.0 - half, abs=1e-6), pytest.approx(8.0 + half, abs=1e-6))


@pytest.mark.parametrize("lat", [89.95, -89.95])
def test_rq6_bounding_box_around_a_pole_spans_every_longitude(lat):
    """RQ-6: a circle containing a pole gives one box over all longitudes up to the pole."""
    boxes = LocationFilter(30.0, lat, 10_000.0).bounding_boxes()
    dlat = math.degrees(10_000.0 / EARTH_RADIUS_M)
    if lat > 0:
        assert boxes == [(-180.0, pytest.approx(lat - dlat, abs=1e-6), 180.0, 90.0)]
    else:
        assert boxes == [(-180.0, -90.0, 180.0, pytest.approx(lat + dlat, abs=1e-6))]
    # the point on the far side of the pole, 180 degrees of longitude away, is inside
    far = destination(30.0, lat, 0.0 if lat > 0 else 180.0, 9_000.0)
    assert in_boxes(*far, boxes)
    assert LocationFilter(30.0, lat, 10_000.0).matches(at(*far)) is True


@pytest.mark.parametrize(("lon", "west_first"), [(179.95, True), (-179.95, False)])
def test_rq6_bounding_box_across_the_antimeridian_splits_in_two(lon, west_first):
    """RQ-6: a circle crossing longitude 180 gives two boxes meeting at +180 / -180."""
    boxes = LocationFilter(lon, 10.0, 20_000.0).bounding_boxes()
    assert len(boxes) == 2
    (w1, s1, e1, n1), (w2, s2, e2, n2) = boxes
    assert e1 == 180.0 and w2 == -180.0
    assert (s1, n1) == (s2, n2)
    assert 179.5 < w1 < 180.0 and -180.0 < e2 < -179.5
    other_side = destination(lon, 10.0, 90.0 if lon > 0 else 270.0, 19_000.0)
    assert (other_side[0] < 0) == (lon > 0)
    assert in_boxes(*other_side, boxes)
    assert west_first == (lon > 0)


def test_rq6_bounding_box_of_a_huge_circle_is_the_world():
    """RQ-6: a radius of half the circumference or more reaches everything."""
    assert LocationFilter(0, 0, math.pi * EARTH_RADIUS_M).bounding_boxes() == [
        (-180.0, -90.0, 180.0, 90.0)
    ]


def test_rq6_bounding_boxes_contain_every_point_of_random_circles():
    """RQ-6: the pre-filter is a safe superset: every point on the circle lies in a box."""
    rng = random.Random(62676)
    centres = [(rng.uniform(-180, 180), rng.uniform(-90, 90)) for _ in range(150)]
    centres += [(179.999, 0.0), (-180.0, 45.0), (180.0, -45.0), (0.0, 89.999), (10.0, -90.0)]
    for lon, lat in centres:
        radius = 10 ** rng.uniform(0, 6.7)
        f = LocationFilter(lon, lat, radius)
        boxes = f.bounding_boxes()
        for k in range(72):
            p = destination(lon, lat, k * 5.0 + 0.5, radius)
            assert in_boxes(*p, boxes), (lon, lat, radius, k, p, boxes)
            assert f.distance_to(GeoLocation(*p)) == pytest.approx(radius, rel=1e-6, abs=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"radius": -1.0}, "location filter radius must be >= 0 metres, got -1.0"),
        ({"radius": math.inf}, "location filter radius must be a finite number, got inf"),
        ({"lon": 180.5}, "location filter lon must be within -180..180, got 180.5"),
        ({"lat": -91}, "location filter lat must be within -90..90, got -91.0"),
        ({"lat": math.nan}, "location filter lat must be a finite number, got nan"),
        ({"lon": "8"}, "location filter lon must be a number, got '8'"),
        ({"height": math.nan}, "location filter height must be a finite number, got nan"),
        (
            {"include_unknown": "yes"},
            "location filter includeUnknown must be a boolean, got 'yes'",
        ),
    ],
)
def test_rq6_location_filter_validation(kwargs, message):
    """RQ-6: bad filter values are refused with an error naming the value."""
    args = {"lon": 8.0, "lat": 50.0, "radius": 100.0, **kwargs}
    with pytest.raises(InvalidFilter) as e:
        LocationFilter(**args)
    assert str(e.value) == message
    assert isinstance(e.value, ConfigurationError)


# --------------------------------------------------------------------------- RQ-7


def test_rq7_token_prefix_is_the_text_before_the_first_colon():
    """RQ-7 / ADR-2: prefix of 'dev1:a:b' is 'dev1'; a token without ':' has none."""
    assert token_prefix("dev1:prof") == "dev1"
    assert token_prefix("dev1:a:b") == "dev1"
    assert token_prefix(":x") == ""
    assert token_prefix("local") is None


@pytest.mark.parametrize(
    ("token", "expected"),
    [
        ("dev1:p1", True),
        ("dev1:a:b", True),
        ("dev10:p1", False),
        ("dev1", False),
        ("xdev1:p", False),
    ],
)
def test_rq7_prefix_filter_matches_the_exact_prefix(token, expected):
    """RQ-7: the device prefix must equal the filter's Prefix exactly."""
    assert PrefixFilter("dev1").matches(Resource(token, "MediaProfile")) is expected


@pytest.mark.parametrize(
    ("prefix", "message"),
    [
        ("", "prefix filter needs a non-empty Prefix, got ''"),
        (
            "dev1:p",
            (
                "prefix 'dev1:p' contains ':'; a prefix is the part of a remote token before its "
                "first ':', so give only that part"
            ),
        ),
    ],
)
def test_rq7_prefix_filter_validation(prefix, message):
    """RQ-7: an empty prefix or one with a colon can never name a device."""
    with pytest.raises(InvalidFilter) as e:
        PrefixFilter(prefix)
    assert str(e.value) == message


# --------------------------------------------------------------------------- RQ-8


@pytest.mark.parametrize(
    ("wanted", "rule", "scope", "expected"),
    [
        (f"{LOC}/country", None, f"{LOC}/country/china", True),
        (f"{LOC}/country", None, f"{LOC}/countryside", False),
        (f"{LOC}/country", None, f"{LOC}/country", True),
        (f"{LOC}/country/china", None, f"{LOC}/country", False),
        ("ONVIF://WWW.ONVIF.ORG/location/country", None, f"{LOC}/country/china", True),
        (f"{LOC}/country", None, "Onvif://Www.Onvif.Org/location/country/china", True),
        ("onvif://www.onvif.org/Location/country", None, f"{LOC}/country/china", False),
        ("onvif://www.onvif.org", None, f"{LOC}/city/x", True),
        ("onvif://www.onvif.org/", None, f"{LOC}/city/x", True),
        (f"{LOC}/", None, f"{LOC}/city", True),
        ("onvif://example.com/location", None, f"{LOC}/city", False),
        ("http://www.onvif.org/location", None, f"{LOC}/city", False),
        ("onvif://www.onvif.org/name/My%20Cam", None, "onvif://www.onvif.org/name/My Cam", True),
        (f"{LOC}/%41", None, f"{LOC}/A/b", True),
        ("onvif://www%2Eonvif.org/location", None, f"{LOC}/x", True),
        (f"{LOC}/a/b", None, f"{LOC}/a%2Fb", False),
        (f"{LOC}/./country", None, f"{LOC}/country", False),
        (f"{LOC}/country", None, f"{LOC}/x/../country", False),
        (f"{LOC}/%2E%2E/country", None, f"{LOC}/country", False),
        ("onvif://www.onvif.org/name?x=1#frag", None, "onvif://www.onvif.org/name/cam", True),
        ("onvif://www.onvif.org/name", None, "onvif://www.onvif.org/name/cam?q#f", True),
        ("onvif://[::1/location", None, f"{LOC}/x", False),
        (f"{LOC}/country", MATCH_RFC3986, f"{LOC}/country/china", True),
        (f"{LOC}/country", RFC3986_2009, f"{LOC}/countryside", False),
        (f"{LOC}/country", MATCH_STRCMP0, f"{LOC}/country/china", False),
        (f"{LOC}/country", MATCH_STRCMP0, f"{LOC}/country", True),
        ("ONVIF://www.onvif.org/location/country", MATCH_STRCMP0, f"{LOC}/country", False),
        (f"{LOC}/country", STRCMP0_2009, f"{LOC}/country", True),
    ],
)
def test_rq8_scope_matching_table(wanted, rule, scope, expected):
    """RQ-8: WS-Discovery RFC 3986 rule (case-insensitive scheme/authority, segment prefix,
    canonicalised, no dot segments, query/fragment ignored) and the strcmp0 rule."""
    assert scope_matches(wanted, scope, rule) is expected


def test_rq8_every_filter_scope_must_match_some_resource_scope():
    """RQ-8: several Scope entries are ANDed (WS-Discovery Probe semantics)."""
    cam = Resource(
        "d:t",
        "MediaProfile",
        scopes=(f"{LOC}/country/china", "onvif://www.onvif.org/type/video_encoder"),
    )
    both = ScopeFilter([(f"{LOC}/country", None), ("onvif://www.onvif.org/type", MATCH_RFC3986)])
    assert both.matches(cam) is True
    other = ScopeFilter([(f"{LOC}/country", None), ("onvif://www.onvif.org/type/ptz", None)])
    assert other.matches(cam) is False
    assert ScopeFilter([(LOC, None)]).matches(Resource("d:u", "MediaProfile")) is False
    assert both.scopes == (
        (f"{LOC}/country", None),
        ("onvif://www.onvif.org/type", MATCH_RFC3986),
    )


def test_rq8_scope_filter_strips_xml_whitespace():
    """RQ-8: Scope text and Match attribute are trimmed like XML list values."""
    f = ScopeFilter([(f"  {LOC}/country\n", f" {MATCH_STRCMP0} ")])
    assert f.scopes == ((f"{LOC}/country", MATCH_STRCMP0),)


def test_rq8_unknown_match_rule_is_refused_naming_it():
    """RQ-8: a Match rule we do not implement is an InvalidFilter naming the rule."""
    ldap = "http://schemas.xmlsoap.org/ws/2005/04/discovery/ldap"
    with pytest.raises(InvalidFilter) as e:
        ScopeFilter([(LOC, ldap)])
    assert str(e.value) == (
        f"unsupported scope Match rule {ldap!r}; supported: "
        "http://schemas.xmlsoap.org/ws/2005/04/discovery/rfc3986, "
        "http://schemas.xmlsoap.org/ws/2005/04/discovery/strcmp0, "
        f"{RFC3986_2009}, {STRCMP0_2009} (no Match attribute means RFC 3986)"
    )
    with pytest.raises(InvalidFilter, match="unsupported scope Match rule 'x'"):
        scope_matches(LOC, LOC, "x")


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ([], "a scope filter needs at least one Scope"),
        ([("  ", None)], "a scope filter Scope must be a non-empty string, got '  '"),
        (["onvif://x"], "a scope filter entry is (scope, match rule), got 'onvif://x'"),
        ([(LOC, 3)], "a scope Match rule must be a URI string, got 3"),
    ],
)
def test_rq8_scope_filter_validation(entries, message):
    """RQ-8: malformed Scope entries are refused with the offending value."""
    with pytest.raises(InvalidFilter) as e:
        ScopeFilter(entries)
    assert str(e.value) == message


# --------------------------------------------------------------------------- RQ-9

FULL = Resource(
    "dev1:p1",
    "MediaProfile",
    name="Gate",
    location=GeoLocation(8.5, 50.1, 12.0),
    scopes=(
        f"{LOC}/country/germany",
        "onvif://www.onvif.org/name/gate",
        "ONVIF://WWW.ONVIF.ORG/Location/city/frankfurt",
        "http://example.com/location/x",
    ),
    offline=False,
)


@pytest.mark.parametrize(
    ("paths", "expected"),
    [
        (["/Name"], Resource("dev1:p1", "MediaProfile", name="Gate")),
        (["/Location"], Resource("dev1:p1", "MediaProfile", location=GeoLocation(8.5, 50.1, 12.0))),
        (["/Offline"], Resource("dev1:p1", "MediaProfile", offline=False)),
        (["/Scope"], Resource("dev1:p1", "MediaProfile", scopes=FULL.scopes)),
        (
            ["/Name", "/Scope/Location"],
            Resource(
                "dev1:p1",
                "MediaProfile",
                name="Gate",
                scopes=(f"{LOC}/country/germany", "ONVIF://WWW.ONVIF.ORG/Location/city/frankfurt"),
            ),
        ),
        (
            ["/Scope/name", "/Scope/location"],
            Resource("dev1:p1", "MediaProfile", scopes=FULL.scopes[:3]),
        ),
        (
            ["/Data/Name", " /Data/Offline "],
            Resource("dev1:p1", "MediaProfile", "Gate", offline=False),
        ),
        (["/Name", "/Location", "/Scope", "/Offline"], FULL),
    ],
)
def test_rq9_select_keeps_only_the_selected_items_and_the_token(paths, expected):
    """RQ-9: the Select filter keeps the named data items; the Source Token always stays."""
    assert SelectFilter(paths).apply(FULL) == expected


@pytest.mark.parametrize(
    ("paths", "bad"),
    [
        (["/Name", "/Foo"], "/Foo"),
        (["/name"], "/name"),
        (["Name"], "Name"),
        (["/Scope/"], "/Scope/"),
    ],
)
def test_rq9_unknown_select_path_is_refused_with_the_allowed_ones(paths, bad):
    """RQ-9: a Path naming no data item is an InvalidFilter listing the allowed paths."""
    with pytest.raises(InvalidFilter) as e:
        SelectFilter(paths)
    assert str(e.value).startswith(f"unsupported select Path {bad!r}: ")
    assert str(e.value).endswith(
        "use /Name, /Location, /Scope, /Offline, /Scope/<Category> (each optionally under /Data) "
        'or an XPath over the message such as //tt:SimpleItem[@Name="Scope"]'
    )


def test_rq9_select_needs_at_least_one_path():
    """RQ-9: an empty Select filter is refused (one or more Path)."""
    with pytest.raises(InvalidFilter) as e:
        SelectFilter([])
    assert str(e.value) == "a select filter needs at least one Path"
    with pytest.raises(InvalidFilter) as e:
        SelectFilter("/Name")
    assert str(e.value) == "select filter paths must be a list of paths, got '/Name'"


# --------------------------------------------------------------------------- query


def test_rq1_resource_query_combines_kinds_and_filters():
    """RQ-1/RQ-2, RQ-6..RQ-9: all present filters must match; select shapes the answer."""
    q = ResourceQuery(
        kinds=frozenset({"MediaProfile", "VideoSource"}),
        location=LocationFilter(8.5, 50.1, 1000.0),
        prefix=PrefixFilter("dev1"),
        scope=ScopeFilter([(f"{LOC}/country", None)]),
        select=SelectFilter(["/Name"]),
    )
    assert q.matches(FULL) is True
    assert q.project(FULL) == Resource("dev1:p1", "MediaProfile", name="Gate")
    assert q.matches(Resource("dev1:p1", "Recording", location=FULL.location)) is False
    assert q.matches(FULL.__class__("dev2:p1", "MediaProfile", **_data(FULL))) is False
    far = Resource("dev1:p1", "MediaProfile", location=GeoLocation(9.5, 50.1), scopes=FULL.scopes)
    assert q.matches(far) is False
    assert q.filter([FULL, far]) == [Resource("dev1:p1", "MediaProfile", name="Gate")]
    assert ResourceQuery().matches(far) is True
    assert ResourceQuery().project(FULL) is FULL
    assert ResourceQuery(kinds=frozenset()).matches(FULL) is False


def _data(r: Resource) -> dict[str, object]:
    return {"name": r.name, "location": r.location, "scopes": r.scopes, "offline": r.offline}


def test_rq2_query_kinds_must_be_resource_kinds():
    """RQ-2: a topic for an unknown resource kind is refused, naming it."""
    with pytest.raises(InvalidFilter) as e:
        ResourceQuery(kinds=frozenset({"MediaProfile", "Camera", "Dome"}))
    assert str(e.value).startswith(
        "unknown resource kind(s) 'Camera', 'Dome'; expected some of: VideoSourceConfiguration, "
    )
    with pytest.raises(InvalidFilter) as e:
        ResourceQuery(kinds="MediaProfile")  # type: ignore[arg-type]
    assert str(e.value) == "kinds must be a set of resource kinds, got 'MediaProfile'"
