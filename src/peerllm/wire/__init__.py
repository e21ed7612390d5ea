"""Sans-IO wire formats of PeerLLM: framing, node-info messages and signed DHT records.

Nothing here performs I/O, reads a clock or does cryptography: bytes go in, frozen
dataclasses come out, and time or signatures are passed in as parameters.
"""
