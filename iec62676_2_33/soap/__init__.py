"""Layer 5 helpers shared by every SOAP service: faults and envelopes."""
