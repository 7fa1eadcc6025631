"""modelmon: a Prometheus-native monitoring sidecar for machine-learning models."""

__version__ = "0.1.0"
