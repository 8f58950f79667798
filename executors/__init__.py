"""The order executor: commands from the bus -> venue calls, idempotent by client order id."""
