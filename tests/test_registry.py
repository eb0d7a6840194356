"""The resource model (RQ-2, RQ-3) and the SQLite resource registry.

Covers RQ-4 (Initialized / Changed / Deleted, offline changes), RQ-5 (the
enumeration a pull point streams page by page), RQ-6 (R*Tree pre-filter equal
to a full scan), RQ-7 (prefix), EVT-6 (events carry the kind for the topic and
the data items) and ADR-1 (a token names one resource).
"""

from __future__ import annotations

import json
import math
import random
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from iec62676_2_33.domain import registry as registry_module
from iec62676_2_33.domain.filters import (
    InvalidFilter,
    LocationFilter,
    PrefixFilter,
    ResourceQuery,
    ScopeFilter,
    SelectFilter,
)
from iec62676_2_33.domain.registry import ChangesPruned, ResourceRegistry, UnknownResource
from iec62676_2_33.domain.resources import (
    RESOURCE_KINDS,
    GeoLocation,
    InvalidResource,
    Resource,
    ResourceEvent,
)
from iec62676_2_33.errors import ConfigurationError

LOC = "onvif://www.onvif.org/location"


@pytest.fixture
def reg(tmp_path: Path):
    with ResourceRegistry(tmp_path / "registry.db") as r:
        yield r


def cam(token: str, **kw) -> Resource:
    return Resource(token, kw.pop("kind", "MediaProfile"), **kw)


# --------------------------------------------------------------------------- model (RQ-2, RQ-3)


def test_rq2_resource_kinds():
    """RQ-2: the twelve enumerable kinds plus VideoSource and Recording from the examples."""
    assert RESOURCE_KINDS == (
        "VideoSourceConfiguration",
        "AudioSourceConfiguration",
        "VideoEncoderConfiguration",
        "AudioEncoderConfiguration",
        "AudioOutputConfiguration",
        "AudioDecoderConfiguration",
        "MetadataConfiguration",
        "AnalyticsConfiguration",
        "PTZConfiguration",
        "OSDConfiguration",
        "MaskConfiguration",
        "MediaProfile",
        "VideoSource",
        "Recording",
    )


def test_rq3_resource_json_round_trip():
    """RQ-3: token, kind and the optional data items survive to_json / from_json."""
    full = Resource(
        "dev1:p1",
        "VideoSource",
        name="Gate ü",
        location=GeoLocation(8, 50.5, 112),
        scopes=[f"{LOC}/city/x", f"{LOC}/city/y"],  # type: ignore[arg-type]
        offline=True,
    )
    assert full.scopes == (f"{LOC}/city/x", f"{LOC}/city/y")
    assert full.location == GeoLocation(8.0, 50.5, 112.0)
    assert full.to_json() == {
        "token": "dev1:p1",
        "kind": "VideoSource",
        "name": "Gate ü",
        "location": {"lon": 8.0, "lat": 50.5, "elevation": 112.0},
        "scopes": [f"{LOC}/city/x", f"{LOC}/city/y"],
        "offline": True,
    }
    assert Resource.from_json(full.to_json()) == full
    bare = Resource("a:b", "Recording")
    assert bare.to_json() == {"token": "a:b", "kind": "Recording"}
    assert Resource.from_json({"token": "a:b", "kind": "Recording", "location": None}) == bare


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        (
            {"token": "a:b", "kind": "MediaProfile", "colour": 1, "size": 2},
            "unknown key(s) 'colour', 'size'; allowed: token, kind, name, location, scopes, offline",
        ),
        ({"kind": "MediaProfile"}, "missing required key(s): token"),
        ([1], "a resource must be a JSON object, got list"),
        ({"token": "", "kind": "MediaProfile"}, "token must be a non-empty string, got ''"),
        (
            {"token": "p:" + "x" * 63, "kind": "MediaProfile"},
            (
                f"token {'p:' + 'x' * 63!r} is 65 characters long; a tt:ReferenceToken allows at "
                "most 64"
            ),
        ),
        (
            {"token": "a:b", "kind": "Camera"},
            "unknown resource kind 'Camera' for token 'a:b'; expected one of: "
            + ", ".join(RESOURCE_KINDS),
        ),
        (
            {"token": "a:b", "kind": "VideoSource", "name": 5},
            "name of 'a:b' must be a string, got 5",
        ),
        (
            {"token": "a:b", "kind": "VideoSource", "scopes": "x"},
            "scopes must be a list of strings, got 'x'",
        ),
        (
            {"token": "a:b", "kind": "VideoSource", "scopes": ["x", ""]},
            "each scope of 'a:b' must be a non-empty string, got ''",
        ),
        (
            {"token": "a:b", "kind": "VideoSource", "offline": "no"},
            "offline of 'a:b' must be true, false or absent, got 'no'",
        ),
        (
            {"token": "a:b", "kind": "VideoSource", "location": {"lon": 1}},
            "location lacks lat",
        ),
        (
            {"token": "a:b", "kind": "VideoSource", "location": {"lon": 1, "lat": 2, "alt": 3}},
            "unknown location key(s) 'alt'; allowed: lon, lat, elevation",
        ),
        (
            {"token": "a:b", "kind": "VideoSource", "location": {"lon": 181, "lat": 2}},
            "location lon must be within -180..180 degrees, got 181.0",
        ),
        (
            {"token": "a:b", "kind": "VideoSource", "location": {"lon": 1, "lat": -90.5}},
            "location lat must be within -90..90 degrees, got -90.5",
        ),
        (
            {"token": "a:b", "kind": "VideoSource", "location": {"lon": 1, "lat": True}},
            "location lat must be a number, got True",
        ),
        (
            {"token": "a:b", "kind": "VideoSource", "location": [1, 2]},
            "location must be an object with lon, lat and optional elevation, got [1, 2]",
        ),
    ],
)
def test_rq3_bad_resources_are_refused_with_the_reason(obj, message):
    """RQ-3 / ADR-3: malformed resources raise InvalidResource saying what is wrong."""
    with pytest.raises(InvalidResource) as e:
        Resource.from_json(obj)
    assert str(e.value) == message
    assert isinstance(e.value, ConfigurationError)


def test_rq3_geolocation_rejects_non_finite_values():
    """RQ-3: tt:GeoLocation values must be finite numbers."""
    with pytest.raises(InvalidResource) as e:
        GeoLocation(1.0, 2.0, math.inf)
    assert str(e.value) == "location elevation must be a finite number, got inf"


# --------------------------------------------------------------------------- events (RQ-4)


def test_rq4_event_sequence_initialized_none_changed_deleted(reg):
    """RQ-4: new → Initialized, identical → None, different → Changed, removed → Deleted."""
    a = cam("dev1:p1", name="Gate", location=GeoLocation(8.0, 50.0))
    assert reg.last_seq() == 0
    assert reg.upsert(a) == ResourceEvent("Initialized", a, 1)
    assert reg.upsert(a) is None
    a2 = cam("dev1:p1", name="Gate 2", location=GeoLocation(8.0, 50.0))
    assert reg.upsert(a2) == ResourceEvent("Changed", a2, 2)
    a3 = cam("dev1:p1", name="Gate 2")  # location dropped
    assert reg.upsert(a3) == ResourceEvent("Changed", a3, 3)
    assert reg.get("dev1:p1") == a3
    assert reg.query(ResourceQuery(location=LocationFilter(8.0, 50.0, 10.0))) == []
    assert reg.remove("dev1:p1") == ResourceEvent("Deleted", Resource("dev1:p1", "MediaProfile"), 4)
    assert reg.get("dev1:p1") is None
    assert reg.count() == 0
    assert reg.last_seq() == 4
    with pytest.raises(UnknownResource) as e:
        reg.remove("dev1:p1")
    assert str(e.value) == "no resource has the token 'dev1:p1'"
    assert isinstance(e.value, LookupError) and isinstance(e.value, ConfigurationError)
    assert reg.last_seq() == 4


def test_rq4_remove_many_deletes_present_tokens_in_one_run_of_events(reg):
    """RQ-4: remove_many gives one Deleted per present token, in the order given; absent and repeated
    tokens are skipped, and nothing at all changes no sequence number."""
    reg.upsert_many([cam("dev1:a"), cam("dev1:b"), cam("dev1:c")])
    events = reg.remove_many(["dev1:c", "dev1:missing", "dev1:a", "dev1:c"])
    assert events == [ResourceEvent("Deleted", Resource("dev1:c", "MediaProfile"), 4),
                      ResourceEvent("Deleted", Resource("dev1:a", "MediaProfile"), 5)]
    assert [r.token for r in reg.query(ResourceQuery())] == ["dev1:b"]
    assert reg.remove_many(["dev1:missing"]) == [] and reg.remove_many([]) == []
    assert reg.last_seq() == 5


def test_rq4_offline_change_is_changed_only_when_the_item_is_carried(reg):
    """RQ-4: Offline None → False is a change of the carried items; equal values are not."""
    reg.upsert(cam("dev1:p1"))
    assert reg.upsert(cam("dev1:p1")) is None
    ev = reg.upsert(cam("dev1:p1", offline=False))
    assert ev is not None and ev.operation == "Changed" and ev.resource.offline is False
    assert reg.upsert(cam("dev1:p1", offline=False)) is None


def test_adr1_a_token_cannot_change_kind(reg):
    """ADR-1: a token names one resource; re-using it for another kind is refused."""
    reg.upsert(cam("dev1:x"))
    with pytest.raises(InvalidResource) as e:
        reg.upsert(cam("dev1:x", kind="Recording"))
    assert str(e.value) == (
        "token 'dev1:x' already names a MediaProfile, not a Recording; tokens are unique in "
        "the serving system (ADR-1): remove it first"
    )
    assert reg.get("dev1:x") == cam("dev1:x")


def test_rq4_upsert_many_is_atomic_and_ordered(reg):
    """RQ-4: a batch applies in order (repeat → Changed) and all or nothing."""
    reg.upsert(cam("dev1:x"))
    seq = reg.last_seq()
    batch = [cam("dev2:a"), cam("dev2:b"), cam("dev1:x", kind="Recording")]
    with pytest.raises(InvalidResource):
        reg.upsert_many(batch)
    assert reg.count() == 1 and reg.last_seq() == seq and reg.get("dev2:a") is None

    b1, b2 = cam("dev2:b", name="one"), cam("dev2:b", name="two")
    events = reg.upsert_many([cam("dev2:a"), b1, b2, cam("dev1:x"), b2])
    assert events == [
        ResourceEvent("Initialized", cam("dev2:a"), seq + 1),
        ResourceEvent("Initialized", b1, seq + 2),
        ResourceEvent("Changed", b2, seq + 3),
    ]
    assert reg.get("dev2:b") == b2
    assert reg.upsert_many([]) == []


def test_rq4_set_prefix_offline_marks_every_resource_of_the_device(reg):
    """RQ-4 / ADR-4: device dev1 goes offline: Changed for each of its resources only."""
    reg.upsert_many(
        [cam("dev1:a"), cam("dev1:b", offline=True), cam("dev1:c", offline=False), cam("dev10:a")]
    )
    events = reg.set_prefix_offline("dev1", True)
    assert [(e.operation, e.resource) for e in events] == [
        ("Changed", cam("dev1:a", offline=True)),
        ("Changed", cam("dev1:c", offline=True)),
    ]
    assert [e.seq for e in events] == [5, 6]
    assert reg.set_prefix_offline("dev1", True) == []
    assert reg.get("dev10:a") == cam("dev10:a")
    back = reg.set_prefix_offline("dev1", False)
    assert [e.resource.token for e in back] == ["dev1:a", "dev1:b", "dev1:c"]
    assert all(reg.get(t).offline is False for t in ("dev1:a", "dev1:b", "dev1:c"))
    assert reg.changes_since(4) == events + back
    with pytest.raises(InvalidFilter) as e:
        reg.set_prefix_offline("dev1:a", True)
    assert str(e.value).startswith("prefix 'dev1:a' contains ':'")
    with pytest.raises(ConfigurationError) as e:
        reg.set_prefix_offline("dev1", 1)  # type: ignore[arg-type]
    assert str(e.value) == "offline must be True or False, got 1"


# --------------------------------------------------------------------------- change log (EVT-6)


def test_evt6_change_log_is_read_by_another_process(tmp_path):
    """EVT-6 / RQ-4: a second connection (another process) follows the change log."""
    path = tmp_path / "shared.db"
    writer = ResourceRegistry(path)
    reader = ResourceRegistry(path)
    try:
        assert writer._db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        made = writer.upsert_many(
            [cam("dev1:a", location=GeoLocation(1, 2, 3), scopes=(f"{LOC}/x",)), cam("dev1:b")]
        )
        made.append(writer.remove("dev1:b"))
        assert reader.last_seq() == 3
        seen = reader.changes_since(0)
        assert seen == made
        assert [(e.operation, e.resource.kind, e.seq) for e in seen] == [
            ("Initialized", "MediaProfile", 1),
            ("Initialized", "MediaProfile", 2),
            ("Deleted", "MediaProfile", 3),
        ]
        assert reader.changes_since(0, limit=2) == made[:2]
        assert reader.changes_since(3) == []
        later = writer.upsert(cam("dev1:a", name="renamed"))
        assert reader.changes_since(3) == [later]
        assert reader.get("dev1:a") == cam("dev1:a", name="renamed")
        # the log is plain SQL too: a process without this library can read it
        raw = sqlite3.connect(path)
        assert raw.execute("SELECT seq, token, operation, resource FROM changes").fetchall()[
            2:
        ] == [(3, "dev1:b", "Deleted", None), (4, "dev1:a", "Changed", _json(later.resource))]
        raw.close()
    finally:
        writer.close()
        reader.close()


def _json(r: Resource) -> str:
    return json.dumps(r.to_json(), ensure_ascii=False, separators=(",", ":"))


def test_evt6_pruned_change_log_says_so(reg):
    """EVT-6: a follower behind a pruned log gets ChangesPruned, never a silent gap."""
    reg.upsert_many([cam(f"d:{i}") for i in range(5)])
    assert reg.prune_changes(3) == 3
    assert [e.seq for e in reg.changes_since(3)] == [4, 5]
    with pytest.raises(ChangesPruned) as e:
        reg.changes_since(2)
    assert str(e.value) == (
        "changes up to #3 were pruned; cannot follow from #2. "
        "Re-read the resources with query() and follow from last_seq()"
    )
    reg.prune_changes(5)
    assert reg.last_seq() == 5  # numbers are never reused
    assert reg.upsert(cam("d:new")).seq == 6


# --------------------------------------------------------------------------- JSONL


def test_rq3_load_jsonl_is_all_or_nothing_listing_every_bad_line(reg, tmp_path):
    """RQ-3: one bad line means nothing is loaded; the error lists each bad line."""
    good = json.dumps({"token": "dev1:a", "kind": "MediaProfile"})
    lines = [
        good,
        "{not json",
        "",
        json.dumps({"token": "dev1:b", "kind": "MediaProfile", "zoom": 2}),
        json.dumps({"token": "dev1:a", "kind": "MediaProfile", "name": "again"}),
        json.dumps({"token": "dev1:c", "kind": "Dome"}),
        json.dumps({"token": "dev1:d", "kind": "VideoSource"}),
    ]
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(InvalidResource) as e:
        reg.load_jsonl(path)
    assert str(e.value) == (
        f"{str(path)!r}: 4 bad line(s), nothing was loaded:\n"
        "  line 2: not JSON (Expecting property name enclosed in double quotes at column 2)\n"
        "  line 4: unknown key(s) 'zoom'; allowed: token, kind, name, location, scopes, offline\n"
        "  line 5: token 'dev1:a' already given on line 1\n"
        "  line 6: unknown resource kind 'Dome' for token 'dev1:c'; expected one of: "
        + ", ".join(RESOURCE_KINDS)
    )
    assert reg.count() == 0 and reg.last_seq() == 0

    path.write_text(good + "\n\n" + lines[-1] + "\n", encoding="utf-8")
    events = reg.load_jsonl(path)
    assert [(e.operation, e.resource.token, e.seq) for e in events] == [
        ("Initialized", "dev1:a", 1),
        ("Initialized", "dev1:d", 2),
    ]
    assert reg.load_jsonl(path) == []


def test_rq3_load_jsonl_names_a_bounded_number_of_bad_lines_in_one_error(reg, tmp_path, monkeypatch):
    """RQ-3: a file of bad lines is one error naming the first MAX_REPORTED_LINES and counting the rest; a line
    nested too deep for the JSON reader, or longer than MAX_LINE_BYTES (read no further than that), is a bad
    line like any other; the good lines around them are read as usual."""
    monkeypatch.setattr(registry_module, "MAX_LINE_BYTES", 10_000)
    good = json.dumps({"token": "dev1:a", "kind": "MediaProfile"})
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(["[" * 5000, "x" * 25_000, good, *["{not json"] * 200]) + "\n", encoding="utf-8")
    with pytest.raises(InvalidResource) as e:
        reg.load_jsonl(path)
    lines = str(e.value).splitlines()
    assert lines[0] == f"{str(path)!r}: 202 bad line(s), nothing was loaded:"
    assert lines[1:3] == ["  line 1: JSON nested too deep", "  line 2: longer than 10000 bytes"]
    assert lines[3].startswith("  line 4: not JSON")
    assert len(lines) == 1 + registry_module.MAX_REPORTED_LINES + 1
    assert lines[-1] == f"  … and {202 - registry_module.MAX_REPORTED_LINES} more"
    path.write_text(good + "\n" + "x" * 9_999 + "\n", encoding="utf-8")  # a line of exactly the bound is read
    with pytest.raises(InvalidResource, match="line 2: not JSON"):
        reg.load_jsonl(path)


def test_rq3_load_jsonl_reports_unreadable_files(reg, tmp_path):
    """RQ-3: a missing file or a non-UTF-8 line is a clear ConfigurationError."""
    missing = tmp_path / "none.jsonl"
    with pytest.raises(ConfigurationError) as e:
        reg.load_jsonl(missing)
    assert str(e.value).startswith(f"cannot read resource file {str(missing)!r}: ")
    binary = tmp_path / "bin.jsonl"
    binary.write_bytes(b'{"token": "a:b", "kind": "VideoSource"}\n\xff\xfe\n')
    with pytest.raises(InvalidResource) as e:
        reg.load_jsonl(binary)
    assert str(e.value) == (
        f"{str(binary)!r}: 1 bad line(s), nothing was loaded:\n  line 2: not UTF-8 (invalid start byte at byte 1)"
    )


# --------------------------------------------------------------------------- queries (RQ-5..RQ-9)


def test_rq7_query_by_prefix_kind_scope_and_select(reg):
    """RQ-7 / RQ-8 / RQ-9: SQL-side prefix and kind, Python-side scope, projection."""
    reg.upsert_many(
        [
            cam("dev1:a", name="A", scopes=(f"{LOC}/country/china",)),
            cam("dev1:b", name="B", kind="VideoSource", scopes=(f"{LOC}/country/china",)),
            cam("dev1:c", name="C", scopes=(f"{LOC}/countryside",)),
            cam("dev10:a", name="D", scopes=(f"{LOC}/country/china",)),
        ]
    )
    q = ResourceQuery(
        kinds=frozenset({"MediaProfile"}),
        prefix=PrefixFilter("dev1"),
        scope=ScopeFilter([(f"{LOC}/country", None)]),
        select=SelectFilter(["/Name"]),
    )
    assert reg.query(q) == [cam("dev1:a", name="A")]
    assert reg.query_full_scan(q) == [cam("dev1:a", name="A")]
    tokens = [r.token for r in reg.query(ResourceQuery(prefix=PrefixFilter("dev1")))]
    assert tokens == ["dev1:a", "dev1:b", "dev1:c"]
    assert reg.query(ResourceQuery(kinds=frozenset())) == []


def test_rq6_query_location_include_unknown_and_height(reg):
    """RQ-6: exact distance after the R*Tree; unknown locations only with includeUnknown."""
    d = math.degrees(100 / 6_371_008.8)
    reg.upsert_many(
        [
            cam("d:near", location=GeoLocation(8.0, 50.0 + d, 0.0)),
            cam("d:far", location=GeoLocation(8.0, 50.0 + 3 * d)),
            cam("d:high", location=GeoLocation(8.0, 50.0, 150.0)),
            cam("d:nowhere"),
        ]
    )
    f = LocationFilter(8.0, 50.0, 101.0)
    tokens = [r.token for r in reg.query(ResourceQuery(location=f))]
    assert tokens == ["d:high", "d:near"]
    f = LocationFilter(8.0, 50.0, 101.0, height=0.0, include_unknown=True)
    assert [r.token for r in reg.query(ResourceQuery(location=f))] == ["d:near", "d:nowhere"]
    assert [r.token for r in reg.query_full_scan(ResourceQuery(location=f))] == [
        "d:near",
        "d:nowhere",
    ]


def _random_resources(rng: random.Random, n: int) -> list[Resource]:
    centres = [(179.9, 10.0), (-179.95, -20.0), (0.0, 89.9), (45.0, -89.95), (8.0, 50.0)]
    centres += [(rng.uniform(-180, 180), rng.uniform(-80, 80)) for _ in range(10)]
    scopes = [f"{LOC}/country/china", f"{LOC}/country/germany", "onvif://www.onvif.org/type/ptz"]
    out = []
    for i in range(n):
        loc = None
        if rng.random() > 0.1:
            lon, lat = rng.choice(centres)
            lat = max(-90.0, min(90.0, lat + rng.gauss(0, 0.5)))
            lon = (lon + rng.gauss(0, 0.5) + 540.0) % 360.0 - 180.0
            loc = GeoLocation(lon, lat, rng.choice([None, rng.uniform(0, 300)]))
        out.append(
            Resource(
                f"dev{rng.randrange(40)}:r{i}",
                rng.choice(("MediaProfile", "VideoSource", "Recording")),
                name=f"cam {i}",
                location=loc,
                scopes=tuple(s for s in scopes if rng.random() < 0.5),
                offline=rng.choice([None, True, False]),
            )
        )
    return out


def test_rq6_rtree_query_equals_full_scan_on_random_data(reg):
    """RQ-6: on 5,000 random resources, 50 random queries give identical answers either way."""
    rng = random.Random(2676)
    resources = _random_resources(rng, 5000)
    assert len(reg.upsert_many(resources)) == 5000
    centres = [(179.99, 10.0), (-180.0, -20.0), (0.0, 90.0), (45.0, -89.9), (8.0, 50.0)]
    centres += [(r.location.lon, r.location.lat) for r in resources[:25] if r.location]
    nonempty = 0
    for _ in range(50):
        lon, lat = rng.choice(centres)
        location = LocationFilter(
            lon,
            lat,
            10 ** rng.uniform(2, 6.5),
            height=rng.choice([None, 100.0]),
            include_unknown=rng.random() < 0.3,
        )
        q = ResourceQuery(
            kinds=rng.choice([None, frozenset({"MediaProfile", "Recording"})]),
            location=location,
            prefix=rng.choice([None, PrefixFilter(f"dev{rng.randrange(40)}")]),
            scope=rng.choice([None, ScopeFilter([(f"{LOC}/country", None)])]),
            select=rng.choice([None, SelectFilter(["/Name", "/Location"])]),
        )
        fast = reg.query(q, limit=10_000)
        slow = reg.query_full_scan(q, limit=10_000)
        assert fast == slow, q
        assert fast == [q.project(r) for r in sorted(resources, key=_tok) if q.matches(r)]
        nonempty += bool(fast)
        page = rng.randrange(1, 50)
        after = fast[len(fast) // 2].token if fast else None
        assert reg.query(q, after_token=after, limit=page) == reg.query_full_scan(
            q, after_token=after, limit=page
        )
    assert nonempty >= 25


def _tok(r: Resource) -> str:
    return r.token


@pytest.mark.parametrize("located", [True, False])
def test_rq5_pagination_over_1050_matches_is_complete_and_ordered(reg, located):
    """RQ-5: 1,050 matches read in pages of 100 by keyset: 11 pages, each token once, in order."""
    rng = random.Random(5)
    resources = []
    for i in range(2100):
        match = i % 2 == 0
        lon = 8.0 + rng.uniform(-0.01, 0.01) if match else -70.0
        resources.append(
            cam(
                f"dev{i % 7}:{rng.getrandbits(40):010x}",
                location=GeoLocation(lon, 50.0) if located else None,
                kind="MediaProfile" if match else "Recording",
            )
        )
    reg.upsert_many(resources)
    expected = sorted(r.token for r in resources if r.kind == "MediaProfile")
    assert len(expected) == 1050
    q = ResourceQuery(
        kinds=frozenset({"MediaProfile"}),
        location=LocationFilter(8.0, 50.0, 5000.0, include_unknown=not located),
    )
    pages, after = [], None
    while True:
        page = reg.query(q, after_token=after, limit=100)
        pages.append(page)
        if len(page) < 100:
            break
        after = page[-1].token
    assert [len(p) for p in pages] == [100] * 10 + [50]
    assert [r.token for p in pages for r in p] == expected


def test_rq5_query_argument_validation(reg):
    """RQ-5: a page needs a limit of at least 1 and a ResourceQuery."""
    with pytest.raises(ConfigurationError) as e:
        reg.query(ResourceQuery(), limit=0)
    assert str(e.value) == "limit must be an integer >= 1, got 0"
    with pytest.raises(ConfigurationError) as e:
        reg.query({"prefix": "x"})  # type: ignore[arg-type]
    assert str(e.value) == "query must be a ResourceQuery, got {'prefix': 'x'}"
    with pytest.raises(ConfigurationError) as e:
        reg.changes_since(0, limit=0)
    assert str(e.value) == "limit must be >= 1, got 0"


# --------------------------------------------------------------------------- plumbing


def test_rq5_registry_is_safe_from_a_thread_pool(reg):
    """RQ-5: an asyncio runtime calls the registry from worker threads concurrently."""

    def work(n: int) -> int:
        reg.upsert(cam(f"dev{n}:a", location=GeoLocation(n % 180, 0)))
        reg.query(ResourceQuery(location=LocationFilter(0, 0, 1e6)))
        return len(reg.changes_since(0))

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(work, range(200)))
    assert reg.count() == 200
    assert [e.seq for e in reg.changes_since(0, limit=500)] == list(range(1, 201))


def test_rq3_registry_refuses_files_it_cannot_use(tmp_path):
    """RQ-3: a file that is not a registry, or one from a newer schema, is a clear error."""
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(ConfigurationError) as e:
        ResourceRegistry(junk)
    assert (
        str(e.value) == f"{str(junk)!r} is not a usable resource registry: file is not a database"
    )
    newer = tmp_path / "newer.db"
    raw = sqlite3.connect(newer)
    raw.execute("PRAGMA user_version=7")
    raw.close()
    with pytest.raises(ConfigurationError) as e:
        ResourceRegistry(newer)
    assert str(e.value) == (
        f"resource registry {str(newer)!r} has schema version 7, newer than this library's 1; "
        "upgrade the library or use another file"
    )


def test_rq4_registry_state_survives_reopening(tmp_path):
    """RQ-4: resources and the change log persist; sequence numbers continue."""
    path = tmp_path / "r.db"
    with ResourceRegistry(path) as r:
        r.upsert(cam("d:a", location=GeoLocation(1, 1)))
    with ResourceRegistry(path) as r:
        assert r.get("d:a") == cam("d:a", location=GeoLocation(1, 1))
        assert r.query(ResourceQuery(location=LocationFilter(1, 1, 1))) == [r.get("d:a")]
        assert r.upsert(cam("d:b")).seq == 2


def test_characters_xml_cannot_carry_are_refused_at_load_rq_3(tmp_path: Path) -> None:
    """RQ-3: every item travels in an XML event message, so a control character in a token, name or
    scope is refused when the resource is loaded (with its line), never at PullMessages time."""
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        json.dumps({"token": "d:1", "kind": "MediaProfile", "name": "ok"}) + "\n"
        + json.dumps({"token": "d:2", "kind": "MediaProfile", "name": "bad\u0001"}) + "\n"
        + json.dumps({"token": "d:3", "kind": "MediaProfile", "scopes": ["onvif://x/\u0000"]}) + "\n")
    with ResourceRegistry(tmp_path / "r.db") as registry:
        with pytest.raises(InvalidResource) as info:
            registry.load_jsonl(bad)
        message = str(info.value)
        assert "line 2: name of 'd:2' holds '\\x01', a character XML cannot carry" in message
        assert "line 3: scope of 'd:3' holds '\\x00', a character XML cannot carry" in message
        assert registry.count() == 0
