"""Exchange -> bus publishers for real venues (market data and private streams); the simulated exchange publishes its own."""
