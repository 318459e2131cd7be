"""An example of a method added outside ``scaffolding_nats``: one class, one config line."""
