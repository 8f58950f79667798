"""The simulated exchange: matching engine, price sources, NATS service and client."""
