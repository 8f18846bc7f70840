"""What needs a real socket or real processes: loopback, SIGKILL, interpreter exit."""
