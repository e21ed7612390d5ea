"""The node's behaviour in the mesh: who is in it (membership), where a request runs
(router, failover), serving peers' requests (serving) and how we describe ourselves.

Every module here works over the small ports in :mod:`peerllm.mesh.ports`, never over
the ``Node`` facade; ``node.open_node`` wires the real adapters in.
"""
