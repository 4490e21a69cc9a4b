"""Test kit for projects using multistore."""
