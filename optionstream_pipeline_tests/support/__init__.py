"""Helpers shared by the test suite: the one wait helper and a TCP proxy for network faults."""
