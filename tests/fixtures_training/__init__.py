"""Helpers for the training tests: an FMA fixture in FMA's real formats, a local Genius stand-in."""
