"""Rendering: terminal tables (rich), JSON, and later HTML and plots."""
