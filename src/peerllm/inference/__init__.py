"""Local inference: the llama.cpp engine, model registry and specs, resource probe."""
