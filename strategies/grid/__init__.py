"""Grid trading: a pure decision core and the thin runner that wires it to the bus."""
