"""The test kit: what every consumer's tests share, importable (as NautilusTrader ships test_kit).

- `testkit.events`: event and command factories, one place, sensible defaults;
- `testkit.bus`: a real nats-server per test (pytest fixtures `nats_server`, `nc`, `bus`) and
  `eventually` for awaiting a condition instead of sleeping;
- `testkit.venue`: `ScriptedVenue`, a Venue whose answers a test dictates call by call;
- `testkit.grid`: drivers for the grid core alone and wired to the simulated exchange's engine;
- `testkit.cores`: a minimal core for exercising the consumer runtime;
- `testkit.hostile`: generated bad payloads, and the declared inputs of every consumer;
- `testkit.chaos`: real processes killed with SIGKILL and compared with an uninterrupted run.

A new consumer's tests start here: declare its inputs in `testkit.hostile.CONSUMERS` and the
bad-input suite covers it.
"""
