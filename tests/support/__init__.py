"""Helpers shared by kernel and e2e tests."""
