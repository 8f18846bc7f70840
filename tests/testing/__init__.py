"""`amaimedia.testing`: the offline server, its faults, loopback serving, the pytest plugin."""
