"""Unit tests of the Notifications section's pure functions (issue 15)."""

import json
from pathlib import Path
from typing import Any, Dict, List, Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st
from omegaconf import OmegaConf
from prometheus_client.parser import text_string_to_metric_families

import scheduler

ROOT = Path(__file__).resolve().parent.parent


# ── Masking ──────────────────────────────────────────────────────────────


@pytest.mark.parametrize("url, shown", [
    ("https://hc-ping.com/5f1e-uuid", "https://hc-ping.com/***"),
    ("https://hooks.slack.com/services/T0/B0/x", "https://hooks.slack.com/***"),
    ("http://127.0.0.1:8000/key?token=1", "http://127.0.0.1:8000/***"),
    ("https://user:pw@example.com/x", "https://***@example.com/***"),
    ("https://example.com", "https://example.com"),
    ("https://example.com/", "https://example.com/"),
    ("hooks.example.com/secret", "hooks.example.com/***"),
    ("just-a-secret", "***"),
    ("", ""),
])
def test_mask_url(url: str, shown: str) -> None:
    assert scheduler.mask_url(url) == shown


NO_SURROGATES: Any = ("Cs",)


@given(st.text(alphabet=st.characters(blacklist_categories=NO_SURROGATES), min_size=1)
       .filter(lambda path: path.strip("/") and "://" not in path))
def test_mask_url_never_shows_what_follows_the_host(path: str) -> None:
    shown = scheduler.mask_url(f"https://hc-ping.com/{path}")
    assert shown == "https://hc-ping.com/***"


def test_mask_urls_in_a_sentence() -> None:
    text = "curl -d @- https://hc-ping.com/abc failed; see http://x.org/y?z=1."
    assert scheduler.mask_urls(text) == "curl -d @- https://hc-ping.com/*** failed; see " \
                                        "http://x.org/***"


def test_url_overrides_finds_notification_urls_given_on_the_command_line() -> None:
    found = scheduler.url_overrides(["scheduler.notify.ping=https://hc-ping.com/abc",
                                     "+scheduler.notify.webhook=http://h/x", "lr=0.1",
                                     "scheduler.notify.on=always",
                                     "steps.0.arguments.url=https://example.com/x"])
    assert found == ["scheduler.notify.ping=https://hc-ping.com/***",
                     "+scheduler.notify.webhook=http://h/***"]


# ── Checks ───────────────────────────────────────────────────────────────


@pytest.mark.parametrize("raw, problem", [
    (None, None),
    ({}, None),
    ({"ping": "https://hc-ping.com/x", "webhook": "http://127.0.0.1:9/y",
      "command": ["notify-send", "done", 3], "on": "always", "timeout": 2.5}, None),
    ({True: "never"}, None),  # YAML's bare `on:` key
    ({True: "sometimes"}, "on must be one of failure, always, never, got 'sometimes'"),
    ({"ping": "ftp://h/secret"}, "ping must be an http:// or https:// URL with a host, "
                                 "got 'ftp://h/***'"),
    ({"ping": "https:///secret"}, "ping must be an http:// or https:// URL with a host"),
    ({"webhook": "http://h/x y"}, "webhook must be an http:// or https:// URL"),
    ({"webhook": "http://h:port/x"}, "webhook is not a valid URL"),
    ({"webhook": 5}, "webhook must be an http:// or https:// URL with a host, got 5"),
    ({"command": "notify-send done"}, "command must be a list of words"),
    ({"command": []}, "command must be a list of words"),
    ({"command": [["nested"]]}, "command must be a list of words"),
    ({"on": "sometimes"}, "on must be one of failure, always, never, got 'sometimes'"),
    ({"timeout": 0}, "timeout must be seconds > 0, got 0"),
    ({"timeout": "soon"}, "timeout must be a number, got 'soon'"),
    ({"pong": 1}, "unknown key 'pong' (did you mean 'ping'?)"),
    ("https://hc-ping.com/x", "notify must be a mapping"),
])
def test_check_notify(raw: Any, problem: Any) -> None:
    problems = scheduler.check_notify(raw)
    if problem is None:
        assert problems == []
    else:
        assert len(problems) == 1 and problem in problems[0], problems
        assert "secret" not in problems[0]


def test_check_options_reports_notify_and_metrics_file_with_the_others() -> None:
    problems = scheduler.check_options({"on_failure": "maybe", "metrics_file": 3,
                                        "notify": {"on": "x", "ping": "h"}})
    assert len(problems) == 4, problems
    assert "scheduler: metrics_file must be a string or null, got 3" in problems


def test_the_shipped_config_declares_every_notify_key_and_passes_its_checks() -> None:
    shipped = OmegaConf.to_container(OmegaConf.load(ROOT / "config.yaml"))
    assert isinstance(shipped, dict)
    notify = shipped["scheduler"]["notify"]
    assert set(notify) == scheduler.NOTIFY_KEYS  # "on" is quoted there: not YAML's true
    assert scheduler.check_notify(notify, shipped["scheduler"]["metrics_file"]) == []
    options = scheduler.SchedulerOptions(**shipped["scheduler"])
    assert options.notify == scheduler.Notify()


@pytest.mark.parametrize("key", sorted(scheduler.NOTIFY_KEYS))
def test_readme_and_help_document_every_notify_key(key: str) -> None:
    assert f"| `{key}` |" in (ROOT / "README.md").read_text(encoding="utf-8")
    assert f"\n  notify.{key} " in scheduler.help_text()


# ── Building what is sent ────────────────────────────────────────────────


@pytest.mark.parametrize("base, expected", [
    ("https://hc-ping.com/uuid", "https://hc-ping.com/uuid/start?rid=R"),
    ("https://hc-ping.com/uuid/", "https://hc-ping.com/uuid/start?rid=R"),
    ("https://hc.example/ping/key/slug?create=1", "https://hc.example/ping/key/slug/start"
                                                 "?create=1&rid=R"),
])
def test_ping_url(base: str, expected: str) -> None:
    assert scheduler.ping_url(base, "start", "R") == expected


def test_run_id_is_a_uuid_fixed_by_the_folder() -> None:
    one = scheduler.run_id(Path("/r/outputs/a"))
    assert one == scheduler.run_id(Path("/r/outputs/a")) != scheduler.run_id(Path("/r/b"))
    assert len(one) == 36 and one.count("-") == 4


def summary(status: str = "failed", exit_code: int = 3) -> Dict[str, Any]:
    def step(index: int, name: str, state: str, code: Any, attempts: int) -> Dict[str, Any]:
        return {"index": index, "name": name, "status": state, "exit_code": code,
                "attempts": attempts, "duration_s": 1.5 if attempts else None,
                "log": f"0{index}-{name}.log", "command": []}
    return {"status": status, "exit_code": exit_code,
            "started": "2026-12-01T03:00:00.000+00:00",
            "finished": "2026-12-01T03:00:10.500+00:00",
            "steps": [step(1, "prepare", "succeeded", 0, 1),
                      step(2, "train", "failed" if exit_code else "succeeded", exit_code, 2),
                      step(3, "deploy", "not_run" if exit_code else "succeeded",
                           None if exit_code else 0, 0 if exit_code else 1)]}


def outcome(status: str = "failed", code: int = 3, tail: Sequence[str] = ()) -> Any:
    return scheduler.run_outcome(summary(status, code), Path("/runs/r1"), code, "config", "gpu1",
                                 tail)


def test_run_outcome_names_the_failed_step_its_log_and_last_lines() -> None:
    told = outcome(tail=["loss: nan"])
    assert (told.failed_step, told.failed_exit_code) == ("train", 3)
    assert told.failed_log == "/runs/r1/02-train.log"
    assert told.summary == "/runs/r1/summary.json" and told.last_lines == ["loss: nan"]
    assert outcome("succeeded", 0, ["ignored"]).failed_step is None
    assert outcome("succeeded", 0, ["ignored"]).last_lines == []


def test_a_record_left_running_is_told_as_failed() -> None:
    assert outcome("running", 70).status == "failed"


def test_ping_body_holds_the_outcome_failed_step_log_lines_and_table() -> None:
    body = scheduler.ping_body(outcome(tail=["loss: nan"])).decode()
    lines = body.splitlines()
    assert lines[0] == ("crude-link on gpu1: run failed (exit code 3) at step 'train' "
                        "(exit code 3); config 'config', /runs/r1")
    assert "failed step: train, exit code 3" in lines
    assert "log: /runs/r1/02-train.log" in lines
    assert "| loss: nan" in lines
    assert any(line.split()[:3] == ["2", "train", "failed"] for line in lines), lines


def test_ping_body_is_at_most_100_kb_and_valid_utf8() -> None:
    body = scheduler.ping_body(outcome(tail=["é" * 1000] * 200))
    assert len(body) <= 100 * 1024
    assert body.decode("utf-8").endswith("[... cut by crude-link]\n")


def test_webhook_payload_is_slack_text_and_fields() -> None:
    payload = scheduler.webhook_payload(outcome(tail=["loss: nan"]))
    assert json.loads(json.dumps(payload)) == payload
    assert payload["text"].splitlines()[0].startswith("crude-link on gpu1: run failed")
    assert payload["text"].endswith("```\nloss: nan\n```")
    assert {k: payload[k] for k in ("status", "exit_code", "run_dir", "failed_step")} == {
        "status": "failed", "exit_code": 3, "run_dir": "/runs/r1", "failed_step": "train"}


def test_command_env() -> None:
    env = scheduler.command_env(outcome(), {"PATH": "/bin"})
    assert env == {"PATH": "/bin", "CRUDE_LINK_STATUS": "failed", "CRUDE_LINK_EXIT_CODE": "3",
                   "CRUDE_LINK_RUN_DIR": "/runs/r1",
                   "CRUDE_LINK_SUMMARY": "/runs/r1/summary.json"}


@pytest.mark.parametrize("on, status, tell", [
    ("failure", "failed", True), ("failure", "aborted", True), ("failure", "interrupted", True),
    ("failure", "succeeded", False), ("always", "succeeded", True), ("never", "failed", False),
])
def test_should_tell(on: str, status: str, tell: bool) -> None:
    assert scheduler.should_tell(on, status) is tell


def test_notify_mapping_reads_yamls_bare_on_key() -> None:
    assert scheduler.notify_mapping({True: "always", "ping": None}) == {"ping": None,
                                                                          "on": "always"}
    assert scheduler.notify_mapping({True: "always", "on": "never"}) == {"on": "never"}
    assert scheduler.SchedulerOptions(notify={True: "never"}).notify.on == "never"


# ── Metrics ──────────────────────────────────────────────────────────────


def parsed(text: str) -> Dict[Any, float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_metrics_text_parses_and_carries_the_last_success_over() -> None:
    text = scheduler.metrics_text(summary(), 3, 'my "cfg"', last_success=1700000000.0)
    samples = parsed(text)
    run = (("config", 'my "cfg"'),)
    assert samples[("crude_link_last_success_timestamp_seconds", run)] == 1700000000.0
    assert samples[("crude_link_last_run_exit_code", run)] == 3
    assert samples[("crude_link_last_run_end_timestamp_seconds", run)] == pytest.approx(
        1796094010.5)
    assert samples[("crude_link_last_run_status", (*run, ("status", "failed")))] == 1
    train = (("config", 'my "cfg"'), ("status", "failed"), ("step", "train"))
    assert samples[("crude_link_step_status", train)] == 1
    assert samples[("crude_link_step_attempts", (*run, ("step", "train")))] == 2
    assert ("crude_link_step_duration_seconds", (*run, ("step", "deploy"))) not in samples
    assert scheduler.last_success_in(text, 'my "cfg"') == 1700000000.0
    assert scheduler.last_success_in(text, "other") is None


def test_metrics_text_of_a_success_sets_the_last_success_to_its_end() -> None:
    samples = parsed(scheduler.metrics_text(summary("succeeded", 0), 0, "config", None))
    run = (("config", "config"),)
    assert samples[("crude_link_last_success_timestamp_seconds", run)] == samples[
        ("crude_link_last_run_end_timestamp_seconds", run)]


def test_metrics_text_says_0_for_a_success_never_seen() -> None:
    samples = parsed(scheduler.metrics_text(summary(), 3, "config", None))
    assert samples[("crude_link_last_success_timestamp_seconds", (("config", "config"),))] == 0


# ── Dry run and warnings ─────────────────────────────────────────────────


def test_would_notify_masks_urls_and_follows_on() -> None:
    notify = scheduler.Notify(ping="https://hc-ping.com/k", webhook="https://h.slack.com/s",
                              command=["mail", "-s", "crude-link", "me@example.com"],
                              on="never")
    lines = scheduler.would_notify(notify, Path("/m.prom"))
    assert lines == ["would GET https://hc-ping.com/***/start?rid=<run id> at the start, and "
                     "POST https://hc-ping.com/***/<exit code>?rid=<run id> at the end",
                     "would rewrite the metrics file /m.prom"]
    assert len(scheduler.would_notify(scheduler.replace(notify, on="always"), None)) == 3


def test_failed_tries_warns_once_per_target_about_its_last_try() -> None:
    tries = [{"kind": "ping", "method": "GET", "url": "https://h/***", "try": 1, "status": 500},
             {"kind": "ping", "method": "GET", "url": "https://h/***", "try": 2, "status": 200},
             {"kind": "ping", "method": "POST", "url": "https://h/***", "try": 3, "status": None,
              "error": "no answer within 10s"},
             {"kind": "command", "command": ["mail"], "exit_code": 1, "output": ["no MTA"]}]
    assert scheduler.failed_tries(tries) == [
        "crude-link: warning: the ping POST https://h/*** failed after 3 tries: "
        "no answer within 10s",
        "crude-link: warning: the notify command mail failed: exit code 1\n  | no MTA"]


def test_send_request_gives_up_on_a_refused_connection_after_three_tries() -> None:
    import socket

    with socket.socket() as sock:  # a port nobody listens on: bound, never listening
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        waits: List[float] = []
        tries = scheduler.send_request("webhook", "POST", f"http://127.0.0.1:{port}/s", b"{}",
                                       "application/json", 1, sleep=waits.append)
    assert [t["try"] for t in tries] == [1, 2, 3] and waits == [1.0, 2.0]
    assert all(t["status"] is None and t["url"] == f"http://127.0.0.1:{port}/***"
               for t in tries)
    assert tries[0]["error"] == "Connection refused"
