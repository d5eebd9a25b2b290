"""The simulated cluster's core: its state document, persistence, permissions, tasks, faults."""
