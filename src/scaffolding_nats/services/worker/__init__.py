"""The worker service: any Worker class served on the bus by a WorkerHost."""
