"""The alerts monitor (`sqt run alerts`): what an operator must hear about, sent to Slack and Telegram.

Pure pieces (`alerts`, `dedupe`, `outbox`, `presence`, `tracker`, `render`) decide which events
become which alerts, what is one alert, when a channel may send and what, and when an input may
be acked; the shell (`consumer`, `sender`, `channels`, `store`, `pinger`, `runner`) does the I/O.
See docs/adr/0013-alerts.md.
"""
