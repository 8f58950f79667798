"""bus/log.py: the JSON line's fields, the ids it finds, the text line as before, and no secret
in any line of either format (message, arguments, traceback, ids, a URL's credentials)."""

from __future__ import annotations

import io
import json
import logging
import re
import sys
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from bus import log as buslog

SECRET = "S3cr3t-Venue-Key-0042"
NATS_PASSWORD = "nats-pw-Quokka-77"
ROLE_PASSWORD = "role-pw-Wombat-88"
GATEWAY_TOKEN = "gw-token-0123456789abcdef"
WEBHOOK = "https://hooks.example/secret-value-123"
ALL_SECRETS = (SECRET, NATS_PASSWORD, ROLE_PASSWORD, GATEWAY_TOKEN, WEBHOOK)
FIELDS = {"time", "level", "component", "instance", "logger", "event", "ids"}


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.captureWarnings(False)


@pytest.fixture
def secrets_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SQT_BINANCEUSDM_API_KEY", SECRET)
    monkeypatch.setenv("SQT_NATS_PASSWORD", NATS_PASSWORD)
    monkeypatch.setenv("SQT_NATS_PASSWORD_GRID", ROLE_PASSWORD)
    monkeypatch.setenv("SQT_GATEWAY_TOKENS", f"alice=operator:{GATEWAY_TOKEN}")
    monkeypatch.setenv("SQT_SLACK_WEBHOOK_URL", WEBHOOK)


Output = Callable[[], str]


@pytest.fixture
def logs(monkeypatch: pytest.MonkeyPatch) -> Callable[..., Output]:
    """setup(...) writing into a buffer; returns what was written so far."""

    def start(component: str = "grid:btc", fmt: str | None = None, level: str = "DEBUG") -> Output:
        out = io.StringIO()
        monkeypatch.setattr(sys, "stderr", out)
        buslog.setup(component, level, fmt)
        return out.getvalue

    return start


def lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines()]


def only(text: str) -> dict[str, Any]:
    parsed = lines(text)
    assert len(parsed) == 1, text
    return parsed[0]


# --- the JSON line ---------------------------------------------------------------------------


def test_a_json_line_has_every_field(logs: Callable[..., Output]) -> None:
    out = logs("grid:btc", "json")
    logging.getLogger("grid.runner").warning("placed %d orders on %s", 3, "sim")
    line = only(out())
    assert set(line) == FIELDS  # no `exc` without a traceback
    assert line["level"] == "WARNING"
    assert line["component"] == "grid" and line["instance"] == "btc"
    assert line["logger"] == "grid.runner"
    assert line["event"] == "placed 3 orders on sim"
    assert line["ids"] == {}
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line["time"])


def test_the_time_is_utc_with_milliseconds() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "m", None, None)
    record.created, record.msecs = 1_700_000_000.5, 500.0  # 2023-11-14T22:13:20.5 UTC
    line = json.loads(buslog.formatter("sim", "json", secrets=[]).format(record))
    assert line["time"] == "2023-11-14T22:13:20.500Z"


def test_a_component_without_an_instance_has_instance_null(logs: Callable[..., Output]) -> None:
    out = logs("executor", "json")
    logging.getLogger("executor").info("up")
    line = only(out())
    assert line["component"] == "executor" and line["instance"] is None


def test_a_component_instance_is_everything_after_the_first_colon(logs: Callable[..., Output]) -> None:
    out = logs("executor:sim2-arb", "json")
    logging.getLogger("executor").info("up")
    line = only(out())
    assert (line["component"], line["instance"]) == ("executor", "sim2-arb")


def test_ids_are_the_known_key_value_tokens_of_the_message(logs: Callable[..., Output]) -> None:
    out = logs("executor", "json")
    logging.getLogger("executor").info(
        "placed client_id=%s order_id=%d, symbol=BTC/USDT:USDT venue=sim (account=main) seq=17. "
        'cmd_id="a b" color=blue xorder_id=nope stream=COMMAND',
        "grid-btc-1",
        42,
    )
    line = only(out())
    assert line["ids"] == {
        "client_id": "grid-btc-1",
        "order_id": "42",
        "symbol": "BTC/USDT:USDT",
        "venue": "sim",
        "account": "main",
        "seq": "17",
        "cmd_id": "a b",
        "stream": "COMMAND",
    }


def test_ids_passed_as_extra_join_those_of_the_message_and_win(logs: Callable[..., Output]) -> None:
    out = logs("executor", "json")
    logging.getLogger("executor").info("cancel order_id=1 venue=sim", extra={"ids": {"order_id": "2", "consumer": "executor-sim"}})
    assert only(out())["ids"] == {"order_id": "2", "venue": "sim", "consumer": "executor-sim"}


def test_a_traceback_is_in_exc_and_the_record_stays_one_line(logs: Callable[..., Output]) -> None:
    out = logs("sim", "json")
    try:
        raise ValueError("boom\nsecond line")
    except ValueError:
        logging.getLogger("sim").exception("failed\non two lines")
    text = out()
    assert text.count("\n") == 1 and text.endswith("\n")
    line = only(text)
    assert line["event"] == "failed\non two lines"
    assert line["exc"].startswith("Traceback (most recent call last):")
    assert "ValueError: boom\nsecond line" in line["exc"]
    assert "test_log_format.py" in line["exc"]


def test_a_python_warning_is_a_json_line_too(logs: Callable[..., Output]) -> None:
    out = logs("sim", "json")
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("careful", UserWarning, stacklevel=1)
    line = only(out())
    assert line["logger"] == "py.warnings" and "careful" in line["event"]


def test_the_level_filters_in_json_as_in_text(logs: Callable[..., Output]) -> None:
    out = logs("sim", "json", level="INFO")
    logging.getLogger("sim").debug("hidden")
    logging.getLogger("sim").info("shown")
    assert [line["event"] for line in lines(out())] == ["shown"]


# --- choosing the format ---------------------------------------------------------------------


def test_text_is_the_default_and_todays_line(logs: Callable[..., Output], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SQT_LOG_FORMAT", raising=False)
    out = logs("grid:btc")
    logging.getLogger("grid.runner").info("hello %s", "world")
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO  grid:btc grid\.runner: hello world\n", out())


def test_sqt_log_format_chooses_json(logs: Callable[..., Output], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SQT_LOG_FORMAT", "json")
    out = logs("sim")
    logging.getLogger("sim").info("hello")
    assert only(out())["event"] == "hello"


def test_the_argument_wins_over_the_environment(logs: Callable[..., Output], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SQT_LOG_FORMAT", "json")
    out = logs("sim", "text")
    logging.getLogger("sim").info("hello")
    assert out().endswith(" INFO  sim sim: hello\n")


@pytest.mark.parametrize("fmt", ["xml", "", "jsonl"])
def test_an_unknown_format_is_a_value_error_naming_log_format_and_the_choices(fmt: str) -> None:
    with pytest.raises(ValueError, match=r"`log_format` must be one of text, json, not '" + fmt + "'"):
        buslog.setup("sim", fmt=fmt)


def test_an_unknown_format_from_the_environment_is_a_value_error_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SQT_LOG_FORMAT", "yaml")
    before = logging.getLogger().handlers[:]
    with pytest.raises(ValueError, match="log_format.*text, json.*'yaml'"):
        buslog.setup("sim")
    assert logging.getLogger().handlers == before  # nothing changed


# --- secrets -----------------------------------------------------------------------------------


def test_the_nats_passwords_are_secrets() -> None:
    env = {
        "SQT_NATS_PASSWORD": NATS_PASSWORD,
        "SQT_NATS_PASSWORD_GRID": ROLE_PASSWORD,
        "SQT_NATS_PASSWORD_EXECUTOR": "role-pw-Numbat-99",
        "SQT_NATS_URL": "nats://127.0.0.1:4222",
        "SQT_NATS_PORT": "4222222",
    }
    assert set(buslog.secret_values(env)) == {NATS_PASSWORD, ROLE_PASSWORD, "role-pw-Numbat-99"}


def test_the_secret_variables_of_bus_secrets_and_each_gateway_token_are_secrets() -> None:
    other = "gw-token-fedcba9876543210"
    env = {
        "SQT_GATEWAY_TOKENS": f"alice=operator:{GATEWAY_TOKEN},bob=viewer:{other}",
        "SQT_SLACK_WEBHOOK_URL": WEBHOOK,
        "SQT_TELEGRAM_CHAT_ID": "-100123456789",
        "SQT_BINANCEUSDM_SECRET": SECRET,
        "SQT_SHORT_TOKEN": "abc",  # too short to mask without masking half of every line
    }
    found = buslog.secret_values(env)
    assert {GATEWAY_TOKEN, other, WEBHOOK, "-100123456789", SECRET, env["SQT_GATEWAY_TOKENS"]} <= set(found)
    assert "abc" not in found and "alice" not in found and "operator" not in found
    assert found == sorted(found, key=len, reverse=True)


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_a_secret_in_the_message_is_masked(fmt: str, secrets_env: None, logs: Callable[..., Output]) -> None:
    out = logs("executor", fmt)
    logging.getLogger("executor").info(f"key {SECRET} and password {NATS_PASSWORD} and {ROLE_PASSWORD}")
    text = out()
    assert "key *** and password *** and ***" in text
    assert not [s for s in ALL_SECRETS if s in text]


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_a_secret_in_the_arguments_is_masked(fmt: str, secrets_env: None, logs: Callable[..., Output]) -> None:
    out = logs("gateway", fmt)
    logging.getLogger("gateway").warning("token %s, hook %r, config %s", GATEWAY_TOKEN, WEBHOOK, {"api_key": SECRET})
    text = out()
    assert "token ***, hook '***', config {'api_key': '***'}" in text
    assert not [s for s in ALL_SECRETS if s in text]


class VenueError(Exception):
    def __init__(self, key: str) -> None:
        super().__init__(f"401 for apiKey={key}")
        self.key = key


def _fail_with_secret() -> None:
    raise VenueError(SECRET)


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_a_secret_in_a_traceback_is_masked(fmt: str, secrets_env: None, logs: Callable[..., Output]) -> None:
    out = logs("executor", fmt)
    log = logging.getLogger("executor")
    try:
        try:
            _fail_with_secret()
        except VenueError as exc:
            raise RuntimeError(f"the venue refused {NATS_PASSWORD}") from exc
    except RuntimeError as exc:
        log.error("stopped on an unexpected error: %r", exc, exc_info=True)
    text = out()
    assert "Traceback" in text and "VenueError: 401 for apiKey=***" in text and "RuntimeError: the venue refused ***" in text
    assert not [s for s in ALL_SECRETS if s in text]


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_a_secret_in_the_ids_is_masked(fmt: str, secrets_env: None, logs: Callable[..., Output]) -> None:
    out = logs("executor", fmt)
    logging.getLogger("executor").info("placed client_id=%s", SECRET, extra={"ids": {"account": NATS_PASSWORD, SECRET: "x"}})
    text = out()
    if fmt == "json":
        assert only(text)["ids"] == {"client_id": "***", "account": "***", "***": "x"}
    assert not [s for s in ALL_SECRETS if s in text]


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_credentials_in_a_url_are_masked_wherever_they_are(fmt: str, logs: Callable[..., Output]) -> None:
    out = logs("sim", fmt)
    log = logging.getLogger("sim")
    log.info("connecting to %s and tls://grid:hunter2@nats.internal:4443", "nats://sqt:pa55word@127.0.0.1:4222")
    log.info("bare token nats://s3cretTok3n@host:4222, plain https://example.com/a@b and user@example.com")
    try:
        raise ConnectionError("nats://admin:letmein@10.0.0.1:4222 refused")
    except ConnectionError:
        log.exception("no bus")
    text = out()
    assert "nats://***@127.0.0.1:4222" in text and "tls://***@nats.internal:4443" in text
    assert "nats://***@host:4222" in text and "nats://***@10.0.0.1:4222 refused" in text
    assert "https://example.com/a@b" in text and "user@example.com" in text  # an @ after the path, a mail address: not credentials
    for leaked in ("pa55word", "hunter2", "s3cretTok3n", "letmein", "sqt:", "admin:", "grid:hunter"):
        assert leaked not in text


def test_a_secret_json_would_escape_is_masked_before_encoding(monkeypatch: pytest.MonkeyPatch, logs: Callable[..., Output]) -> None:
    odd = 'pa"ss\\word\u00e9'
    monkeypatch.setenv("SQT_ODD_PASSWORD", odd)
    out = logs("sim", "json")
    logging.getLogger("sim").info("odd %s", odd)
    text = out()
    assert only(text)["event"] == "odd ***"
    assert odd not in text and json.dumps(odd)[1:-1] not in text


def test_a_secret_straddling_two_fields_withholds_the_line_and_keeps_it_json(
    monkeypatch: pytest.MonkeyPatch, logs: Callable[..., Output]
) -> None:
    straddle = 'gw", "ids": {'  # nobody's password; but were it one, the encoded line would hold it
    monkeypatch.setenv("SQT_ODD_PASSWORD", straddle)
    out = logs("sim", "json")
    logging.getLogger("sim").info("ends in gw")
    text = out()
    line = only(text)
    assert set(line) == FIELDS and line["event"] == "(a log line withheld: it held a secret)"
    assert straddle not in text


def test_every_server_of_a_url_list_loses_its_credentials() -> None:
    """`NATS_URL` may list several servers: each one's login is masked, and no server is lost."""
    from bus.secrets import redact

    assert redact("nats://a:pw1@h1:4222,nats://b:pw2@h2:4222") == "nats://***@h1:4222,nats://***@h2:4222"
    assert redact("nats://h1:4222,nats://u:pw@h2:4222") == "nats://h1:4222,nats://***@h2:4222"
    assert redact("nats://h1:4222") == "nats://h1:4222"
