"""Sans-IO wire formats of PeerLLM: framing, the infer and node-info protocols, signed DHT
records, the mDNS TXT record, and the request limits they share (``limits``).

Nothing here performs I/O, reads a clock or does cryptography: bytes go in, frozen
dataclasses come out, and time or signatures are passed in as parameters.
"""
