"""Log lines: Cloud Logging's structured JSON in the cloud, text locally, each with the ids of
the request, trace, session and command it was written for."""

from __future__ import annotations

import io
import json
import logging
from typing import Any

import pytest
from tether import logs

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
log = logging.getLogger("tether.test")


def last(stream: io.StringIO) -> dict[str, Any]:
    return dict(json.loads(stream.getvalue().splitlines()[-1]))


def test_a_line_is_one_json_object_cloud_logging_reads(json_logs: io.StringIO) -> None:
    outer = logs.bind(request_id="req-1", trace=TRACE, span="00f067aa0ba902b7", sampled="1")
    with outer, logs.bind(session_id="ws-1", command_id="cmd-1"):  # nested: both hold
        log.warning("two\nlines", extra={"event": "agent_offline", "agent_id": "a-1"})
    line = last(json_logs)
    assert (line["severity"], line["message"], line["logger"]) == ("WARNING", "two\nlines",
                                                                   "tether.test")  # fmt: skip
    assert line["logging.googleapis.com/trace"] == f"projects/acme-prod/traces/{TRACE}"
    assert line["logging.googleapis.com/spanId"] == "00f067aa0ba902b7"
    assert line["logging.googleapis.com/trace_sampled"] is True
    assert line["logging.googleapis.com/sourceLocation"]["function"] == (
        "test_a_line_is_one_json_object_cloud_logging_reads"
    )
    assert {k: line[k] for k in ("request_id", "session_id", "command_id", "agent_id", "event")} \
        == {"request_id": "req-1", "session_id": "ws-1", "command_id": "cmd-1",
            "agent_id": "a-1", "event": "agent_offline"}  # fmt: skip
    assert line["time"].endswith("+00:00")


def test_ids_end_with_their_scope_and_a_traceback_stays_in_its_line(json_logs: io.StringIO) -> None:
    with logs.bind(request_id="req-1"):
        pass
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        log.exception("failed")
    line = last(json_logs)
    assert line["severity"] == "ERROR" and "request_id" not in line
    assert (
        line["message"].startswith("failed\nTraceback") and "RuntimeError: boom" in line["message"]
    )
    assert len(json_logs.getvalue().splitlines()) == 1


def test_the_trace_comes_from_traceparent_or_google_s_header() -> None:
    w3c = logs.trace_ids({"traceparent": f"00-{TRACE}-00f067aa0ba902b7-00"})
    assert w3c == {"trace": TRACE, "span": "00f067aa0ba902b7", "sampled": "0"}
    google = logs.trace_ids({"X-Cloud-Trace-Context": f"{TRACE.upper()}/12345;o=1"})
    assert google == {"trace": TRACE, "span": f"{12345:016x}", "sampled": "1"}
    zeros = {"traceparent": "00-" + "0" * 32 + "-00f067aa0ba902b7-01"}
    for junk in (zeros, {"traceparent": "nonsense"}, {"X-Cloud-Trace-Context": "x/1;o=1"}, {}):
        assert logs.trace_ids(junk) == {}, junk


def test_a_bound_trace_is_passed_on_as_a_traceparent() -> None:
    assert logs.traceparent() is None
    with logs.bind(**logs.trace_ids({"traceparent": f"00-{TRACE}-00f067aa0ba902b7-01"})):
        passed = logs.traceparent()
    assert passed == f"00-{TRACE}-00f067aa0ba902b7-01"
    assert logs.trace_ids({"traceparent": passed or ""})["trace"] == TRACE


def test_text_lines_locally_and_a_wrong_format_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stream = io.StringIO()
    handler = logs.configure("text", stream)
    try:
        with logs.bind(command_id="cmd-9"):
            log.info("ran")
    finally:
        logging.getLogger().removeHandler(handler)
    assert stream.getvalue().rstrip().endswith("INFO tether.test ran [command_id=cmd-9]")
    with pytest.raises(ValueError, match="TETHER_LOG_FORMAT must be json or text"):
        logs.configure("xml")


def test_json_is_the_default_in_the_cloud_and_text_elsewhere(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(logs.FORMAT_ENV, raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    for cloud, formatter in ((None, logs.Text), ("onmemos", logs.CloudJson)):
        if cloud:
            monkeypatch.setenv("K_SERVICE", cloud)
        else:
            monkeypatch.delenv("K_SERVICE", raising=False)
        handler = logs.configure(stream=io.StringIO())
        logging.getLogger().removeHandler(handler)
        assert isinstance(handler.formatter, formatter)


def test_http_client_lines_that_print_whole_urls_are_left_out() -> None:
    handler = logs.configure("json", io.StringIO())
    logging.getLogger().removeHandler(handler)
    assert not logging.getLogger("httpx").isEnabledFor(logging.INFO)
    assert logging.getLogger("tether.anything").isEnabledFor(logging.INFO)
