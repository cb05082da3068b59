"""`scripts/fuzz`: a bounded socket-level fuzzer for Courtyard (random and mutated frames, many connections)."""
