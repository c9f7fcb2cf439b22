"""Diagnosis: rules that turn what the kernel shows into findings with evidence and fixes."""
