"""Admin tasks that need the NATS admin role (the only one that may create streams)."""
