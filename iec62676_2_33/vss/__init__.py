"""The upper-level VSS of a hierarchical system (GEN-1, clause 6, Annex B).

A VSS is a device runtime plus its *lower systems* (devices or lower VSSs,
reached by URL or through a cloud uplink): :mod:`.lower` keeps their
configuration, :mod:`.adaption` adds and strips remote-token prefixes driven by
the authored XSD, :mod:`.gateway` forwards operations to the lower system a
token names, :mod:`.resources` keeps the union of the lower systems' resources
in the VSS's own registry, :mod:`.events` forwards their events with adapted
tokens, :mod:`.searches` runs a search
over all of them, :mod:`.rtsp` relays adapted stream and replay URIs and
:mod:`.runtime` runs it all (``iec62676 vss serve``).
"""
