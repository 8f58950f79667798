"""The bus: NATS connection, streams and buckets, publishing, the consumer runtime, replay reads."""
