"""Monitors: risk breakers, reconciliation, funding, health and alerts (roadmap)."""
