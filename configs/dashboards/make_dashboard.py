"""Writes opensqt.json beside this file: `.venv/bin/python configs/dashboards/make_dashboard.py`.
tests/test_dashboard.py checks every metric its panels query against live components."""

import json
from pathlib import Path

DS = {"type": "prometheus", "uid": "${datasource}"}
panels = []
y = 0
col = 0


def row(title):
    global y, col
    if col:
        y += 8
        col = 0
    panels.append(
        {
            "type": "row",
            "title": title,
            "collapsed": False,
            "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
            "id": len(panels) + 1,
            "panels": [],
        }
    )
    y += 1


def panel(title, targets, unit="short", kind="timeseries", desc=""):
    global y, col
    p = {
        "id": len(panels) + 1,
        "type": kind,
        "title": title,
        "description": desc,
        "datasource": DS,
        "gridPos": {"h": 8, "w": 12, "x": 12 * col, "y": y},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
            "tooltip": {"mode": "multi", "sort": "none"},
        },
        "targets": [{"datasource": DS, "expr": e, "legendFormat": l, "refId": chr(65 + i)} for i, (e, l) in enumerate(targets)],
    }
    if kind == "state-timeline":
        p["options"] = {"showValue": "never", "mergeValues": True, "rowHeight": 0.9}
    panels.append(p)
    col += 1
    if col == 2:
        col = 0
        y += 8


row("Feeds and consumers")
panel(
    "Feed staleness",
    [("max by (component, venue, symbol) (sqt_feed_staleness_seconds)", "{{component}} {{venue}} {{symbol}}")],
    "s",
    desc="Seconds since the last market event, where it is consumed (grid, gateway) and where it is published (sim)",
)
panel(
    "Consumer lag (pending inputs)",
    [("sum by (job, consumer) (sqt_bus_consumer_pending_messages)", "{{consumer}}")],
    "short",
    desc="Inputs stored but not yet delivered, from the delivery metadata of the last input",
)
panel(
    "Inputs processed",
    [
        ("sum by (consumer) (rate(sqt_bus_inputs_total[1m]))", "{{consumer}}"),
        ("sum by (consumer) (rate(sqt_bus_replayed_inputs_total[1m]))", "{{consumer}} replayed"),
    ],
    "ops",
)
panel(
    "Batch processing time p50 / p99",
    [
        ("histogram_quantile(0.5, sum by (consumer, le) (rate(sqt_bus_batch_seconds_bucket[5m])))", "{{consumer}} p50"),
        ("histogram_quantile(0.99, sum by (consumer, le) (rate(sqt_bus_batch_seconds_bucket[5m])))", "{{consumer}} p99"),
    ],
    "s",
)
panel("Redeliveries", [("sum by (consumer) (increase(sqt_bus_redeliveries_total[5m]))", "{{consumer}}")], "short")
panel(
    "DLQ arrivals by reason", [("sum by (consumer, reason) (increase(sqt_bus_dead_letters_total[5m]))", "{{consumer}} {{reason}}")], "short"
)
panel(
    "NATS reconnects and disconnects",
    [
        ("sum by (job) (increase(sqt_bus_reconnects_total[5m]))", "{{job}} reconnects"),
        ("sum by (job) (increase(sqt_bus_disconnects_total[5m]))", "{{job}} disconnects"),
    ],
    "short",
)
panel(
    "NATS connected / consumer live",
    [("min by (job) (sqt_bus_connected)", "{{job}} connected"), ("min by (job, consumer) (sqt_bus_consumer_live)", "{{consumer}} live")],
    "short",
)
panel(
    "Session failures and checkpoints",
    [
        ("sum by (consumer, reason) (increase(sqt_bus_session_failures_total[5m]))", "{{consumer}} {{reason}}"),
        ("sum by (consumer) (increase(sqt_bus_checkpoints_total[5m]))", "{{consumer}} checkpoints"),
    ],
    "short",
)
panel(
    "Publish retries, timeouts, errors",
    [
        ("sum by (job) (increase(sqt_bus_publish_retries_total[5m]))", "{{job}} retries"),
        ("sum by (job) (increase(sqt_bus_publish_timeouts_total[5m]))", "{{job}} timeouts"),
        ("sum by (job) (increase(sqt_bus_publish_errors_total[5m]))", "{{job}} errors"),
    ],
    "short",
)

row("Execution")
panel(
    "Command latency p50 / p99 (stored -> venue answer)",
    [
        ("histogram_quantile(0.5, sum by (verb, le) (rate(sqt_executor_command_to_venue_seconds_bucket[5m])))", "{{verb}} p50"),
        ("histogram_quantile(0.99, sum by (verb, le) (rate(sqt_executor_command_to_venue_seconds_bucket[5m])))", "{{verb}} p99"),
    ],
    "s",
)
panel(
    "Decision -> answer p50 / p99",
    [
        ("histogram_quantile(0.5, sum by (verb, le) (rate(sqt_executor_decision_to_answer_seconds_bucket[5m])))", "{{verb}} p50"),
        ("histogram_quantile(0.99, sum by (verb, le) (rate(sqt_executor_decision_to_answer_seconds_bucket[5m])))", "{{verb}} p99"),
    ],
    "s",
)
panel("Retries by reason", [("sum by (verb, reason) (increase(sqt_executor_retries_total[5m]))", "{{verb}} {{reason}}")], "short")
panel("Failures by reason", [("sum by (verb, reason) (increase(sqt_executor_failures_total[5m]))", "{{verb}} {{reason}}")], "short")
panel("Commands by outcome", [("sum by (verb, outcome) (rate(sqt_executor_commands_total[5m]))", "{{verb}} {{outcome}}")], "ops")
panel(
    "Breaker refusals and unknown outcomes",
    [
        ('sum(increase(sqt_executor_failures_total{reason="breaker_open"}[5m]))', "refused by a breaker"),
        ("sum(increase(sqt_executor_retry_later_total[5m]))", "batches left for later"),
    ],
    "short",
)
panel("Simulated exchange requests", [("sum by (method, outcome) (rate(sqt_sim_requests_total[1m]))", "{{method}} {{outcome}}")], "reqps")
panel(
    "Simulated exchange request time p99",
    [("histogram_quantile(0.99, sum by (method, le) (rate(sqt_sim_request_seconds_bucket[5m])))", "{{method}}")],
    "s",
)

row("Trading")
panel(
    "Fills",
    [
        ("sum by (grid, symbol) (increase(sqt_grid_fills_total[5m]))", "grid {{grid}} {{symbol}}"),
        ("sum by (venue, symbol) (increase(sqt_sim_fills_total[5m]))", "venue {{venue}} {{symbol}}"),
        ("sum by (venue, symbol) (increase(sqt_executor_reported_fills_total[5m]))", "executor reports {{symbol}}"),
    ],
    "short",
)
panel("Position", [("sqt_grid_position_contracts", "{{grid}} {{symbol}}")], "short")
panel(
    "PnL",
    [
        ("sqt_grid_realized_pnl_quote", "{{grid}} realized"),
        ("sqt_grid_unrealized_pnl_quote", "{{grid}} unrealized"),
        ("sqt_grid_fees_quote", "{{grid}} fees"),
    ],
    "short",
)
panel(
    "Open orders",
    [("sqt_grid_open_orders", "grid {{grid}}"), ("sum by (venue, account, symbol) (sqt_sim_open_orders)", "venue {{account}} {{symbol}}")],
    "short",
)
panel("Grid status", [("max by (grid, status) (sqt_grid_status) == 1", "{{grid}} {{status}}")], "short", "state-timeline")
panel("Events published by the exchange", [("sum by (type) (rate(sqt_sim_events_total[1m]))", "{{type}}")], "ops")

row("Risk, reconciliation, alerts")
panel(
    "Breaker states (0 ok, 1 reduce_only, 2 halted)",
    [
        ("max by (scope) (sqt_risk_breaker_state)", "{{scope}}"),
        (
            '2 * sum by (grid) (sqt_grid_breaker_state{state="halted"}) + sum by (grid) (sqt_grid_breaker_state{state="reduce_only"})',
            "grid {{grid}} sees",
        ),
    ],
    "short",
    "state-timeline",
)
panels[-1]["fieldConfig"]["defaults"]["mappings"] = [
    {
        "type": "value",
        "options": {
            "0": {"text": "ok", "color": "green"},
            "1": {"text": "reduce_only", "color": "orange"},
            "2": {"text": "halted", "color": "red"},
        },
    }
]
panel(
    "Risk monitor",
    [
        ("sqt_risk_daily_pnl_quote", "PnL since 00:00 UTC (the daily loss limit's measure)"),
        ("max by (venue, symbol) (sqt_risk_feed_staleness_seconds)", "{{venue}} {{symbol}} feed silent, as judged"),
        ("sqt_risk_behind_seconds", "judgement behind the clock (heartbeat stops past 2 s)"),
        ("sum by (scope, breaker) (sqt_risk_trips)", "{{scope}} {{breaker}} latched"),
    ],
    "short",
)
panel("Exposure", [("sum by (venue, symbol) (sqt_risk_exposure_quote)", "{{venue}} {{symbol}}")], "short")
panel(
    "Margin ratio and liquidation distance",
    [
        ("min by (venue, account) (sqt_risk_margin_ratio)", "{{venue}} {{account}} margin"),
        ("min by (venue, symbol) (sqt_risk_liquidation_distance_ratio)", "{{venue}} {{symbol}} liquidation distance"),
    ],
    "percentunit",
)
panel("Reconciliation findings", [("sum by (venue, kind) (increase(sqt_reconciler_findings_total[1h]))", "{{venue}} {{kind}}")], "short")
panel(
    "Alerts",
    [
        ("sum by (channel, kind) (increase(sqt_alerts_delivered_total[1h]))", "{{channel}} {{kind}} delivered"),
        ("sum by (channel, outcome) (increase(sqt_alerts_requests_total[1h]))", "{{channel}} {{outcome}} requests"),
    ],
    "short",
)
panel(
    "Gateway clients and frames",
    [("sum(sqt_gateway_clients)", "clients"), ("sum by (type) (rate(sqt_gateway_frames_sent_total[1m]))", "frames {{type}}")],
    "short",
)

row("Real venues (ccxt): publishers and venue calls")
panel(
    "Venue messages and events published",
    [
        ("sum by (venue, feed) (rate(sqt_publisher_messages_total[1m]))", "{{venue}} {{feed}} messages"),
        ("sum by (venue, kind) (rate(sqt_publisher_events_total[1m]))", "{{venue}} {{kind}} events"),
    ],
    "ops",
)
panel(
    "Feeds: up, silent, gaps",
    [
        ("min by (venue, feed, symbol) (sqt_publisher_stream_up)", "{{venue}} {{feed}} {{symbol}} up"),
        ("max by (venue, feed, symbol) (sqt_publisher_silence_seconds)", "{{venue}} {{feed}} {{symbol}} silent (s)"),
        ("sum by (venue, feed) (increase(sqt_publisher_gaps_total[1h]))", "{{venue}} {{feed}} gaps in the hour"),
        ("sum by (venue, feed) (increase(sqt_publisher_reconnects_total[1h]))", "{{venue}} {{feed}} reconnects in the hour"),
    ],
    "short",
    desc="A stream silent for 10 expected intervals is dead: reconnected, marked as a gap, backfilled (docs/adr/0017).",
)
panel(
    "Venue calls and rate limits",
    [
        ("sum by (venue, method, outcome) (rate(sqt_venue_calls_total[5m]))", "{{venue}} {{method}} {{outcome}}"),
        ("sum by (venue) (increase(sqt_venue_rate_limited_total[1h]))", "{{venue}} told to slow down (trading)"),
        ("sum by (venue) (increase(sqt_publisher_rate_limited_total[1h]))", "{{venue}} told to slow down (publisher)"),
    ],
    "short",
)
panel(
    "Venue call time p99",
    [("histogram_quantile(0.99, sum by (venue, method, le) (rate(sqt_venue_call_seconds_bucket[5m])))", "{{venue}} {{method}}")],
    "s",
)

dash = {
    "__inputs": [],
    "annotations": {"list": []},
    "description": "OpenSQT: feeds, consumers, execution, trading, risk (docs/adr/0015-observability.md)",
    "editable": True,
    "graphTooltip": 1,
    "links": [],
    "panels": panels,
    "refresh": "10s",
    "schemaVersion": 39,
    "tags": ["opensqt"],
    "templating": {
        "list": [
            {
                "name": "datasource",
                "label": "Prometheus",
                "type": "datasource",
                "query": "prometheus",
                "current": {},
                "hide": 0,
                "refresh": 1,
                "options": [],
            }
        ]
    },
    "time": {"from": "now-1h", "to": "now"},
    "timepicker": {},
    "timezone": "",
    "title": "OpenSQT",
    "uid": "opensqt",
    "version": 1,
}
(Path(__file__).parent / "opensqt.json").write_text(json.dumps(dash, indent=2) + "\n")
print(len(panels))
