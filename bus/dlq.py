"""Dead letters: a copy of an input a consumer could not process, with the reason in headers."""

from __future__ import annotations

from schemas.subjects import dlq as dlq_subject

ERROR = "Sqt-Error"
CONSUMER = "Sqt-Consumer"
STREAM = "Sqt-Stream"
SEQ = "Sqt-Seq"
SUBJECT = "Sqt-Subject"

__all__ = ["CONSUMER", "ERROR", "SEQ", "STREAM", "SUBJECT", "dead_letter", "dlq_subject"]


def dead_letter(consumer: str, stream: str, seq: int, subject: str, reason: str) -> tuple[str, str, dict[str, str]]:
    """(subject, msg id, headers) for the DLQ copy of input `seq` of `stream`.

    The id names the input, so a replay that meets the same bad input again stores it once.
    """
    # Header values are single lines; keep the reason readable and bounded.
    one_line = " ".join(reason.split())[:1000]
    headers = {ERROR: one_line, CONSUMER: consumer, STREAM: stream, SEQ: str(seq), SUBJECT: subject}
    return dlq_subject(subject), f"dlq:{consumer}:{stream}:{seq}", headers
