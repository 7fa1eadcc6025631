"""Drift and data quality: reference bins, sliding windows, statistics, the engine."""
