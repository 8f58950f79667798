"""Venues: the Venue protocol and its implementations (the simulated exchange; ccxt later)."""
