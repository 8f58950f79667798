"""Dead letters: a copy of an input a consumer could not process, with the reason in headers.

The copy never exceeds the server's limit for one message: an input near `max_payload` plus
our headers would be refused, and nats-server closes a connection that sends a frame over the
limit. Such a copy is truncated and says so (`Sqt-Truncated` holds the original size); the
original stays in its stream at the sequence `Sqt-Seq` names.
"""

from __future__ import annotations

from schemas.subjects import dlq as dlq_subject

ERROR = "Sqt-Error"
CONSUMER = "Sqt-Consumer"
STREAM = "Sqt-Stream"
SEQ = "Sqt-Seq"
SUBJECT = "Sqt-Subject"
TRUNCATED = "Sqt-Truncated"
MSG_ID = "Nats-Msg-Id"

__all__ = ["CONSUMER", "ERROR", "SEQ", "STREAM", "SUBJECT", "TRUNCATED", "dead_letter", "dlq_subject"]

_FRAME = 64  # "NATS/1.0\r\n", separators and the final CRLF, with room to spare


def dead_letter(
    consumer: str, stream: str, seq: int, subject: str, reason: str, data: bytes, max_payload: int
) -> tuple[str, str, dict[str, str], bytes]:
    """(subject, msg id, headers, payload) for the DLQ copy of input `seq` of `stream`.

    The id names the input, so a replay that meets the same bad input again stores it once.
    """
    # Header values are single lines; keep the reason readable and bounded.
    one_line = "".join(c if c.isprintable() else " " for c in " ".join(reason.split()))[:1000]
    headers = {ERROR: one_line, CONSUMER: consumer, STREAM: stream, SEQ: str(seq), SUBJECT: subject}
    msg_id = f"dlq:{consumer}:{stream}:{seq}"
    room = max_payload - _header_bytes(headers, msg_id) - len(str(len(data))) - len(TRUNCATED) - 4
    if len(data) > room:
        headers[TRUNCATED] = str(len(data))
        data = data[: max(room, 0)]
    return dlq_subject(subject), msg_id, headers, data


def _header_bytes(headers: dict[str, str], msg_id: str) -> int:
    size = _FRAME + len(MSG_ID) + len(msg_id) + 4
    for key, value in headers.items():
        size += len(key.encode()) + len(value.encode()) + 4
    return size
