"""Encoders and the XMC model (encoder → classifier); import the submodule you need."""
