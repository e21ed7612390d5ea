"""I/O adapters: the only package that imports libp2p or zeroconf."""
