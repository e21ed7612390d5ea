"""Moving model files: digests, the models store, partial files, sources and the swarm."""
