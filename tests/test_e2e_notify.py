"""End to end: pings, webhooks, the notify command and the metrics file (issue 15).

Every server here is a real http.server on 127.0.0.1, started by the test: one that records
requests, one that answers 500, one that never answers, one with a self-signed certificate.
"""

import http.server
import json
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import pytest
from conftest import (
    PROMPT,
    finish,
    load_summary,
    run_folder,
    run_scheduler,
    scheduler_command,
    scheduler_env,
    sweep_folder,
    terminal_text,
)
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.e2e

KEY = "ping-key-5f1e"  # the secret part of every URL: it must never show
HOOK = "services/T0/B0/hook-secret-9a"


class Request:
    def __init__(self, method: str, path: str, headers: Dict[str, str], body: bytes) -> None:
        self.method, self.path, self.headers, self.body = method, path, headers, body

    def json(self) -> Dict[str, Any]:
        data: Dict[str, Any] = json.loads(self.body)
        return data

    def __repr__(self) -> str:
        return f"{self.method} {self.path}"


class Server:
    """A real HTTP(S) server in a thread: records every request, answers with `status`."""

    def __init__(self, status: int = 200, context: Optional[ssl.SSLContext] = None) -> None:
        self.requests: List[Request] = []
        self.status = status
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                server.requests.append(Request(self.command, self.path, dict(self.headers),
                                               body))
                self.send_response(server.status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"OK")

            do_GET = do_POST = answer

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if context is not None:
            self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        scheme = "https" if context else "http"
        self.base = f"{scheme}://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str = KEY) -> str:
        return f"{self.base}/{path}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[Callable[..., Server]]:
    """Return a function that starts a Server; every one is stopped after the test."""
    started: List[Server] = []

    def start(status: int = 200, context: Optional[ssl.SSLContext] = None) -> Server:
        started.append(Server(status, context))
        return started[-1]

    yield start
    for one in started:
        one.close()


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections (the kernel does) and never answers a request."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    yield sock.getsockname()[1]
    sock.close()


def env(**extra: str) -> Dict[str, str]:
    """Return the scheduler's environment: no proxy may stand between it and 127.0.0.1."""
    base = {k: v for k, v in scheduler_env().items() if not k.lower().endswith("_proxy")}
    return {**base, "no_proxy": "*", **extra}


def notify_config(steps: str, **notify: Any) -> str:
    """Return a config with the given steps (YAML text) and scheduler.notify settings."""
    # A bare `on:` key, as users write it (YAML reads it as true; crude-link as "on").
    lines = [f"    {key}: {json.dumps(value)}"
             for key, value in notify.items() if key != "metrics_file"]
    extra = (f"  metrics_file: {notify['metrics_file']}\n" if "metrics_file" in notify else "")
    return f"steps:\n{steps}scheduler:\n  notify:\n" + "\n".join(lines) + "\n" + extra


FAILING = """\
  - script: tasks/fate.py
    name: prepare
  - script: tasks/fate.py
    name: train
    arguments: {lines: 3, print: 'loss exploded', exit_code: 3}
"""
PASSING = """\
  - script: tasks/fate.py
    name: prepare
"""


def everything_shown(project: Path, done: "subprocess.CompletedProcess[str]") -> str:
    """Return all crude-link printed and recorded: output, summary.json, scheduler.log."""
    run = run_folder(project)
    return "\n".join([done.stdout, done.stderr, (run / "summary.json").read_text(),
                      (run / "scheduler.log").read_text()])


def rid_of(request: Request) -> str:
    path, _, query = request.path.partition("?")
    assert query.startswith("rid="), request.path
    return query[len("rid="):]


# ── Ping and webhook on a failed run ─────────────────────────────────────


def test_a_failed_run_pings_start_and_exit_code_and_posts_the_webhook(
        make_project: Any, server: Callable[..., Server]) -> None:
    hc, chat = server(), server()
    project = make_project(notify_config(FAILING, ping=hc.url(), webhook=chat.url(HOOK)))
    done = run_scheduler(project, env=env())
    assert done.returncode == 3, done.stderr

    assert [(r.method, r.path.split("?")[0]) for r in hc.requests] == [
        ("GET", f"/{KEY}/start"), ("POST", f"/{KEY}/3")]
    start, end = hc.requests
    assert rid_of(start) == rid_of(end) and len(rid_of(start)) == 36  # a uuid ties them
    body = end.body.decode()
    run = run_folder(project)
    assert "failed step: train, exit code 3" in body
    assert f"log: {run / '02-train.log'}" in body
    assert "| loss exploded" in body and "| line 3" in body
    assert "prepare  succeeded" in body and "train    failed" in body  # the final table
    assert "=== crude-link" not in body  # the log's separator lines are not output
    assert end.headers["Content-Type"].startswith("text/plain")

    [hook] = chat.requests
    assert (hook.method, hook.path) == ("POST", f"/{HOOK}")
    assert hook.headers["Content-Type"] == "application/json"
    payload = hook.json()
    assert payload["status"] == "failed" and payload["exit_code"] == 3
    assert payload["run_dir"] == str(run) and payload["failed_step"] == "train"
    first_line = payload["text"].splitlines()[0]
    assert "run failed (exit code 3) at step 'train'" in first_line
    assert "loss exploded" in payload["text"]

    summary = load_summary(project)
    tries = summary["notifications"]
    assert [(t["kind"], t["method"], t["status"], t["try"]) for t in tries] == [
        ("ping", "GET", 200, 1), ("ping", "POST", 200, 1), ("webhook", "POST", 200, 1)]
    assert all(t["url"] == f"{hc.base}/***" or t["url"] == f"{chat.base}/***" for t in tries)
    shown = everything_shown(project, done)
    assert KEY not in shown and "hook-secret" not in shown


def test_a_run_that_succeeds_pings_zero_and_tells_no_one_by_default(
        make_project: Any, server: Callable[..., Server], tmp_path: Path) -> None:
    hc, chat = server(), server()
    told = tmp_path / "told"
    project = make_project(notify_config(
        PASSING, ping=hc.url(), webhook=chat.url(HOOK),
        command=[sys.executable, "-c", f"open({str(told)!r}, 'w')"]))
    done = run_scheduler(project, env=env())
    assert done.returncode == 0, done.stderr
    assert [(r.method, r.path.split("?")[0]) for r in hc.requests] == [
        ("GET", f"/{KEY}/start"), ("POST", f"/{KEY}/0")]
    assert chat.requests == [] and not told.exists()  # on: failure is the default
    assert "run succeeded (exit code 0)" in hc.requests[1].body.decode()


def test_on_always_tells_a_success_and_on_never_only_pings(
        make_project: Any, server: Callable[..., Server]) -> None:
    hc, chat = server(), server()
    project = make_project(notify_config(FAILING, ping=hc.url(), webhook=chat.url(HOOK),
                                         on="always"))
    assert run_scheduler(project, "steps.1.arguments.exit_code=0", env=env()).returncode == 0
    assert [r.json()["status"] for r in chat.requests] == ["succeeded"]
    shutil.rmtree(project / "outputs")
    # `on` is YAML's true in this config: the override adds the string key, which wins.
    assert run_scheduler(project, "+scheduler.notify.on=never", env=env()).returncode == 3
    assert len(chat.requests) == 1  # nothing more
    assert [r.path.split("?")[0] for r in hc.requests][-2:] == [f"/{KEY}/start", f"/{KEY}/3"]


# ── One notification per run ─────────────────────────────────────────────


def test_retries_send_one_notification_not_one_per_attempt(
        make_project: Any, server: Callable[..., Server]) -> None:
    hc, chat = server(), server()
    steps = """\
  - script: tasks/fate.py
    name: flaky
    retries: 3
    arguments: {fail_times: 2, exit_code: 4, marker: flaky.count}
  - script: tasks/fate.py
    name: broken
    retries: 3
    arguments: {print: 'still broken', exit_code: 5}
"""
    project = make_project(notify_config(steps, ping=hc.url(), webhook=chat.url(HOOK)))
    done = run_scheduler(project, env=env())
    assert done.returncode == 5, done.stderr
    summary = load_summary(project)
    assert [s["attempts"] for s in summary["steps"]] == [3, 4]
    assert [(r.method, r.path.split("?")[0]) for r in hc.requests] == [
        ("GET", f"/{KEY}/start"), ("POST", f"/{KEY}/5")]
    [hook] = chat.requests
    assert hook.json()["failed_step"] == "broken" and "still broken" in hook.json()["text"]


def test_after_a_dialog_retry_one_notification_tells_the_final_outcome(
        make_project: Any, server: Callable[..., Server], spawn_scheduler: Any) -> None:
    hc, chat = server(), server()
    steps = """\
  - script: tasks/fate.py
    name: flaky
    arguments: {fail_times: 1, exit_code: 3, marker: flaky.count}
"""
    project = make_project(notify_config(steps, ping=hc.url(), webhook=chat.url(HOOK),
                                         on="always"))
    child = spawn_scheduler(project)
    child.expect(PROMPT)
    assert len(hc.requests) == 1 and chat.requests == []  # only /start while it waits
    child.sendline("r")
    assert finish(child) == 0, terminal_text(child)
    assert [(r.method, r.path.split("?")[0]) for r in hc.requests] == [
        ("GET", f"/{KEY}/start"), ("POST", f"/{KEY}/0")]
    assert [r.json()["status"] for r in chat.requests] == ["succeeded"]
    assert load_summary(project)["steps"][0]["attempts"] == 2


# ── Servers that fail ────────────────────────────────────────────────────


def test_a_server_answering_500_is_tried_three_times_then_warned_of(
        make_project: Any, server: Callable[..., Server]) -> None:
    broken = server(status=500)
    project = make_project(notify_config(FAILING, webhook=broken.url(HOOK)))
    done = run_scheduler(project, env=env())
    assert done.returncode == 3  # the pipeline's, not the notification's
    assert [r.path for r in broken.requests] == [f"/{HOOK}"] * 3
    assert len({r.body for r in broken.requests}) == 1
    tries = load_summary(project)["notifications"]
    assert [(t["try"], t["status"]) for t in tries] == [(1, 500), (2, 500), (3, 500)]
    warning = f"the webhook POST {broken.base}/*** failed after 3 tries: HTTP 500"
    assert warning in done.stderr
    assert warning in (run_folder(project) / "scheduler.log").read_text()
    assert "hook-secret" not in everything_shown(project, done)


def test_a_server_that_never_answers_cannot_hang_the_run(
        make_project: Any, silent_port: int) -> None:
    url = f"http://127.0.0.1:{silent_port}/{KEY}"
    project = make_project(notify_config(PASSING, ping=url, timeout=1))
    began = time.monotonic()
    done = run_scheduler(project, env=env())
    took = time.monotonic() - began
    assert done.returncode == 0, done.stderr
    # Start and end: 3 tries of 1 s, 1 s and 2 s apart, each; the start's overlaps the run.
    assert took < 25, took
    tries = load_summary(project)["notifications"]
    assert [(t["method"], t["try"], t["status"]) for t in tries] == [
        ("GET", 1, None), ("GET", 2, None), ("GET", 3, None),
        ("POST", 1, None), ("POST", 2, None), ("POST", 3, None)]
    assert all(t["error"] == "no answer within 1s" for t in tries), tries
    assert f"the ping POST http://127.0.0.1:{silent_port}/*** failed after 3 tries: " \
           "no answer within 1s" in done.stderr
    assert KEY not in everything_shown(project, done)


def _self_signed(folder: Path) -> Tuple[Path, Path]:
    """Return a certificate for 127.0.0.1 and its key, made with the openssl CLI."""
    if shutil.which("openssl") is None:
        pytest.skip("no openssl command to make a self-signed certificate with")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    return cert, key


def test_https_with_a_self_signed_certificate_is_an_error_unless_trusted(
        make_project: Any, server: Callable[..., Server], tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    secure = server(context=context)
    project = make_project(notify_config(FAILING, webhook=secure.url(HOOK)))

    done = run_scheduler(project, env=env())
    assert done.returncode == 3
    assert secure.requests == []  # the handshake failed: nothing was sent
    [only] = load_summary(project)["notifications"]  # no use trying again
    assert only["status"] is None and "certificate" in only["error"]
    assert f"the webhook POST {secure.base}/*** failed after 1 try: HTTPS certificate " \
           "error" in done.stderr

    shutil.rmtree(project / "outputs")
    done = run_scheduler(project, env=env(SSL_CERT_FILE=str(cert)))  # trusted: it works
    assert done.returncode == 3
    [hook] = secure.requests
    assert hook.json()["exit_code"] == 3
    assert [t["status"] for t in load_summary(project)["notifications"]] == [200]


# ── The command ──────────────────────────────────────────────────────────

RECORD_ENV = ("import json, os, sys; json.dump({k: v for k, v in os.environ.items() "
              "if k.startswith('CRUDE_LINK_')} | {'argv': sys.argv[1:], 'cwd': os.getcwd()}, "
              "open(sys.argv[1], 'w'))")


def test_the_command_runs_once_after_the_run_with_its_outcome(
        make_project: Any, tmp_path: Path) -> None:
    seen = tmp_path / "seen.json"
    project = make_project(notify_config(
        FAILING, command=[sys.executable, "-c", RECORD_ENV, str(seen), 42]))
    done = run_scheduler(project, env=env())
    assert done.returncode == 3
    received = json.loads(seen.read_text())
    run = run_folder(project)
    assert received["argv"] == [str(seen), "42"]
    assert received["CRUDE_LINK_STATUS"] == "failed"
    assert received["CRUDE_LINK_EXIT_CODE"] == "3"
    assert received["CRUDE_LINK_RUN_DIR"] == str(run)
    assert received["CRUDE_LINK_SUMMARY"] == str(run / "summary.json")
    assert received["cwd"] == str(project)
    [entry] = load_summary(project)["notifications"]
    assert entry["kind"] == "command" and entry["exit_code"] == 0


def test_a_failing_or_missing_command_is_a_warning(make_project: Any) -> None:
    project = make_project(notify_config(
        FAILING, command=[sys.executable, "-c", "print('no mail server'); raise SystemExit(9)"]))
    done = run_scheduler(project, env=env())
    assert done.returncode == 3
    assert "failed: exit code 9" in done.stderr and "| no mail server" in done.stderr
    shutil.rmtree(project / "outputs")
    done = run_scheduler(project, "scheduler.notify.command=[no-such-notifier]", env=env())
    assert done.returncode == 3 and "cannot start 'no-such-notifier'" in done.stderr
    assert load_summary(project)["notifications"][0]["exit_code"] == 127


# ── Metrics ──────────────────────────────────────────────────────────────


def metrics(path: Path) -> Dict[Tuple[str, Tuple[Tuple[str, str], ...]], float]:
    """Return the samples of a metrics file, parsed by prometheus_client's own parser."""
    samples = {}
    for family in text_string_to_metric_families(path.read_text()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def test_the_metrics_file_tells_the_last_run_and_the_last_success(
        make_project: Any, tmp_path: Path) -> None:
    prom = tmp_path / "textfile" / "crude-link.prom"
    project = make_project(notify_config(FAILING, metrics_file=str(prom)))
    assert run_scheduler(project, "steps.1.arguments.exit_code=0", env=env()).returncode == 0
    first = metrics(prom)
    run = ("config", "config"),
    succeeded_at = first[("crude_link_last_success_timestamp_seconds", run)]
    assert succeeded_at == first[("crude_link_last_run_end_timestamp_seconds", run)]
    assert abs(succeeded_at - time.time()) < 60

    shutil.rmtree(project / "outputs")
    assert run_scheduler(project, env=env()).returncode == 3
    second = metrics(prom)
    summary = load_summary(project)
    assert second[("crude_link_last_success_timestamp_seconds", run)] == succeeded_at
    assert second[("crude_link_last_run_exit_code", run)] == 3
    assert second[("crude_link_last_run_status", (*run, ("status", "failed")))] == 1
    assert second[("crude_link_last_run_status", (*run, ("status", "succeeded")))] == 0
    assert second[("crude_link_last_run_start_timestamp_seconds", run)] > succeeded_at
    train = (*run, ("step", "train"))
    assert second[("crude_link_step_attempts", train)] == 1
    assert second[("crude_link_step_status", tuple(sorted((*train, ("status", "failed")))))] == 1
    assert second[("crude_link_step_duration_seconds", train)] == pytest.approx(
        summary["steps"][1]["duration_s"], abs=0.001)
    assert sorted(p.name for p in prom.parent.iterdir()) == ["crude-link.prom"]  # no temp file


def test_a_metrics_file_that_cannot_be_written_is_a_warning(
        make_project: Any, tmp_path: Path) -> None:
    (tmp_path / "blocked").write_text("a file, not a folder")
    project = make_project(notify_config(PASSING, metrics_file=str(tmp_path / "blocked/x.prom")))
    done = run_scheduler(project, env=env())
    assert done.returncode == 0
    assert "cannot write the metrics file" in done.stderr


# ── Dry run, config errors, cron, multirun ───────────────────────────────


def test_a_dry_run_sends_nothing_and_says_what_it_would_send(
        make_project: Any, server: Callable[..., Server], tmp_path: Path) -> None:
    hc, chat = server(), server()
    project = make_project(notify_config(FAILING, ping=hc.url(), webhook=chat.url(HOOK),
                                         command=["notify-send", "crude-link"],
                                         metrics_file=str(tmp_path / "m.prom")))
    done = run_scheduler(project, "+scheduler.dry_run=true", env=env())
    assert done.returncode == 0, done.stderr
    assert hc.requests == [] and chat.requests == [] and not (tmp_path / "m.prom").exists()
    assert f"would GET {hc.base}/***/start?rid=<run id> at the start" in done.stdout
    assert f"would POST JSON to the webhook {chat.base}/*** if the run fails" in done.stdout
    assert "would run notify-send crude-link if the run fails" in done.stdout
    assert KEY not in done.stdout + done.stderr and "hook-secret" not in done.stdout


def test_bad_notify_settings_are_config_errors_listed_with_the_others(
        make_project: Any, server: Callable[..., Server]) -> None:
    hc = server()
    project = make_project(notify_config(
        FAILING + "  - script: tasks/missing.py\n", ping=f"ftp://127.0.0.1/{KEY}",
        webhook="hooks.example.com/x", command="notify-send crude-link", on="sometimes"))
    done = run_scheduler(project, env=env())
    assert done.returncode == 2
    problems = [line.strip() for line in done.stderr.splitlines()[1:]]
    assert "scheduler.notify: ping must be an http:// or https:// URL with a host, got " \
           "'ftp://127.0.0.1/***'" in problems
    assert "scheduler.notify: webhook must be an http:// or https:// URL with a host, got " \
           "'hooks.example.com/***'" in problems
    assert any(p.startswith("scheduler.notify: command must be a list of words") for p in problems)
    assert "scheduler.notify: on must be one of failure, always, never, got 'sometimes'" \
           in problems
    assert any("script 'tasks/missing.py' does not exist" in p for p in problems)
    assert "Traceback" not in done.stderr and KEY not in done.stderr
    assert hc.requests == []


def test_cron_print_warns_that_an_overridden_url_goes_into_the_crontab(
        make_project: Any) -> None:
    project = make_project(notify_config(PASSING, ping=None))  # declared, as shipped
    done = run_scheduler(project, "+scheduler.cron=print", "+scheduler.schedule='0 3 * * *'",
                         f"scheduler.notify.ping=https://hc-ping.com/{KEY}", env=env())
    assert done.returncode == 0, done.stderr
    assert KEY in done.stdout  # the crontab line must repeat it...
    assert "the crontab line repeats scheduler.notify.ping=https://hc-ping.com/*** in clear" \
        in done.stderr  # ...and crude-link says so
    assert KEY not in done.stderr


def test_a_multirun_sends_one_notification_for_the_whole_sweep(
        make_project: Any, server: Callable[..., Server]) -> None:
    hc, chat = server(), server()
    steps = """\
  - script: tasks/fate.py
    name: job
    arguments: {exit_code: 0}
"""
    project = make_project(notify_config(steps, ping=hc.url(), webhook=chat.url(HOOK)))
    done = run_scheduler(project, "-m", "steps.0.arguments.exit_code=0,6,0", env=env())
    assert done.returncode == 6, done.stderr
    assert [(r.method, r.path.split("?")[0]) for r in hc.requests] == [
        ("GET", f"/{KEY}/start"), ("POST", f"/{KEY}/6")]
    assert rid_of(hc.requests[0]) == rid_of(hc.requests[1])
    [hook] = chat.requests
    payload = hook.json()
    sweep = sweep_folder(project)
    assert payload["status"] == "failed" and payload["exit_code"] == 6
    assert payload["run_dir"] == str(sweep)
    text = payload["text"]
    assert "job 0 (steps.0.arguments.exit_code=0): succeeded" in text
    assert "job 1 (steps.0.arguments.exit_code=6): failed (exit code 6), step 'job' failed" \
        in text
    assert "job 2 (steps.0.arguments.exit_code=0): succeeded" in text
    recorded = json.loads((sweep / "summary.json").read_text())["notifications"]
    assert [(t["kind"], t["method"]) for t in recorded] == [("ping", "POST"),
                                                            ("webhook", "POST")]
    jobs = [json.loads((sweep / str(n) / "summary.json").read_text()) for n in range(3)]
    assert [len(job["notifications"]) for job in jobs] == [1, 0, 0]  # job 0 sent /start


def test_sigterm_while_a_sweep_is_being_told_cuts_it_short_in_one_line(
        make_project: Any, silent_port: int) -> None:
    """The sweep is over and recorded; its webhook hangs; SIGTERM: exit 143, no traceback."""
    url = f"http://127.0.0.1:{silent_port}/{HOOK}"
    steps = "  - {script: tasks/fate.py, name: job, arguments: {exit_code: 0}}\n"
    project = make_project(notify_config(steps, webhook=url, on="always", timeout=30))
    proc = subprocess.Popen(scheduler_command(project, "-m", "steps.0.arguments.exit_code=0,0"),
                            cwd=project.parent, env=env(), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        summary = project / "multirun" / "latest" / "summary.json"
        while not summary.is_file() or json.loads(summary.read_text())["status"] == "running":
            assert proc.poll() is None and time.monotonic() < deadline, proc.poll()
            time.sleep(0.05)
        time.sleep(0.5)  # into the first try's 30 s wait for an answer
        proc.send_signal(signal.SIGTERM)
        _, errors = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 143, errors
    assert "crude-link: SIGTERM while the sweep's notifications were being sent" in errors
    assert "Traceback" not in errors
    recorded = json.loads((sweep_folder(project) / "summary.json").read_text())
    assert recorded["status"] == "succeeded"  # the sweep's own outcome stays as it was
