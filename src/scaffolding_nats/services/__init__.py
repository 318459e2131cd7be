"""Deployable services: each one an entry point over the shared runtime."""
