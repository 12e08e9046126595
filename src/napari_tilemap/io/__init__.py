"""Lazy image sources, checks of in-memory images and labels, and the built-in sample."""
