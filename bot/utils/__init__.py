"""Helpers shared by the adapters: composing and encoding result images."""
