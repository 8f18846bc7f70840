"""Metered blocks and the decorator, in process, over respx."""
