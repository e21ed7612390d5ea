"""Local inference: model catalogue, resource probe (the llama.cpp engine lands here too)."""
