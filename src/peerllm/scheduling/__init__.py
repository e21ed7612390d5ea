"""Pure scheduling: MCDA scoring, circuit breakers (no I/O, no clock reads)."""
