"""The built-in demo: a real (small) model server, the sidecar in front of it, and traffic."""
