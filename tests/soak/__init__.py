"""Soaks: the fault soak, shared clients at scale, and the property tests.

All marked slow, but for the plain examples that pin what the properties found.
"""
