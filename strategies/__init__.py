"""Trading strategies: pure decision cores and the thin runners that wire them to the bus."""
