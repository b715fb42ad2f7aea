"""A test task whose arguments choose its fate: python fate.py key=value ...

It reads its arguments with OmegaConf.from_cli(), as a real task would, then acts in
this order (each only when its argument is given):

  record=PATH        write JSON {args, argv, xoptions, cwd, pid, stdin_isatty, env} to PATH,
                     where env holds CRUDE_LINK_*, PYTHONUNBUFFERED and TEST_* variables
                     (xoptions: the interpreter's -X options); $TEST_RECORD, when set, is a
                     record=PATH that needs no argument (for argument styles but key=value)
  read_summary=PATH  copy $CRUDE_LINK_RUN_DIR/summary.json to PATH
  copy_from=PATH copy_to=PATH   copy a file (say, one an earlier step wrote)
  print=TEXT         TEXT and a newline on stdout
  stderr=TEXT        TEXT and a newline on stderr
  lines=N            "line 1" ... "line N", one per line, on stdout
  progress=N         "\\rprogress i/N" for i in 1..N on stdout, no newline
  binary=true        BINARY (below) on stdout
  bytes=N            N bytes of "x" on stdout in 1 MiB os.write calls, no newline
  grandchild=PATH    start a process in its process group that outlives it (for 120 s) and,
                     once that is ready, write its pid to PATH; it prints nothing (its stdout
                     is /dev/null) unless grandchild_prints=true ("tick" lines until stopped),
                     and with grandchild_ignores_term=true it ignores SIGTERM
  trap=true          on SIGTERM/SIGINT print "fate: got SIGTERM" (or SIGINT), exit 128+N
  signals=PATH       on SIGTERM/SIGINT/SIGHUP append the signal's name and a newline to PATH,
                     then exit 128+N
  on_signal=ignore   catch SIGTERM/SIGINT/SIGHUP (noted in signals=PATH if given) and go on
  ignore_term=true   ignore SIGTERM (a step that must be killed)
  wait_for=PATH      "waiting" and a newline, then sleep until PATH exists
  sleep=S            sleep S seconds
  signal=N           kill itself with signal N
  fail_times=K marker=PATH   count this run in PATH; exit with exit_code (default 1)
                     while the count is <= K, else exit 0
  exit_code=N        exit with N (default 0)
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

from omegaconf import OmegaConf

BINARY = b"\xff\xfe\x00raw\x80\n"  # not UTF-8; the tests expect exactly these bytes
MIB = 1024 * 1024


def write_stdout(data: bytes) -> None:
    """Write all of data to fd 1, bypassing Python's buffers."""
    sys.stdout.flush()
    view = memoryview(data)
    while view:
        view = view[os.write(1, view) :]


def record(path: str, args: dict) -> None:
    """Write what this process received, as JSON."""
    keep = ("CRUDE_LINK_", "PYTHONUNBUFFERED", "TEST_", "SLURM_JOB_ID", "SLURM_CPUS_PER_TASK")
    received = {
        "args": args,
        "argv": sys.argv[1:],
        "cwd": os.getcwd(),
        "xoptions": {str(key): value for key, value in sys._xoptions.items()},
        "pid": os.getpid(),
        "stdin_isatty": os.isatty(0),
        "env": {k: v for k, v in os.environ.items() if k.startswith(keep)},
    }
    Path(path).write_text(json.dumps(received, indent=2), encoding="utf-8")


# The grandchild: argv[1] "term" ignores SIGTERM, argv[2] "print" prints; it says it is ready.
GRANDCHILD = """
import signal, sys, time
if sys.argv[1] == "term":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("ready", file=sys.stderr, flush=True)
end = time.monotonic() + 120
while time.monotonic() < end:
    if sys.argv[2] == "print":
        print("tick", flush=True)
    time.sleep(0.01)
"""


def start_grandchild(pid_file: str, ignores_term: bool, prints: bool) -> None:
    """Start the grandchild, wait until it is ready, write its pid to pid_file."""
    child = subprocess.Popen(
        [sys.executable, "-c", GRANDCHILD, "term" if ignores_term else "-",
         "print" if prints else "-"],
        stdout=None if prints else subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert child.stderr is not None
    child.stderr.readline()  # it is ready: its signal handling is in place
    Path(pid_file).write_text(str(child.pid))


def noted(path: str, go_on: bool) -> Callable[[int, object], None]:
    """Return a signal handler that notes the signal in path (if any), then exits or goes on."""

    def handler(signum: int, frame: object) -> None:
        if path:
            with open(path, "a") as signals:
                signals.write(signal.Signals(signum).name + "\n")
        if not go_on:
            os._exit(128 + signum)

    return handler


def trapped(signum: int, frame: object) -> None:
    print(f"fate: got {signal.Signals(signum).name}", flush=True)
    sys.exit(128 + signum)


def main() -> int:
    args = OmegaConf.to_container(OmegaConf.from_cli())
    assert isinstance(args, dict)
    if "record" in args or "TEST_RECORD" in os.environ:
        record(args.get("record", os.environ.get("TEST_RECORD", "")), args)
    if "read_summary" in args:
        shutil.copy(Path(os.environ["CRUDE_LINK_RUN_DIR"]) / "summary.json", args["read_summary"])
    if "copy_from" in args:
        shutil.copy(args["copy_from"], args["copy_to"])
    if "print" in args:
        print(args["print"], flush=True)
    if "stderr" in args:
        print(args["stderr"], file=sys.stderr, flush=True)
    for i in range(1, args.get("lines", 0) + 1):
        print(f"line {i}", flush=True)
    total = args.get("progress", 0)
    for i in range(1, total + 1):
        write_stdout(f"\rprogress {i}/{total}".encode())
    if args.get("binary"):
        write_stdout(BINARY)
    left = args.get("bytes", 0)
    while left > 0:
        write_stdout(b"x" * min(MIB, left))
        left -= MIB
    if "grandchild" in args:
        start_grandchild(args["grandchild"], bool(args.get("grandchild_ignores_term")),
                         bool(args.get("grandchild_prints")))
    if "signals" in args or "on_signal" in args:
        handler = noted(args.get("signals", ""), args.get("on_signal") == "ignore")
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, handler)
    if args.get("trap"):
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, trapped)
    if args.get("ignore_term"):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if "wait_for" in args:
        print("waiting", flush=True)
        while not Path(args["wait_for"]).exists():
            time.sleep(0.02)
    time.sleep(args.get("sleep", 0))
    if "signal" in args:
        os.kill(os.getpid(), args["signal"])
    exit_code = args.get("exit_code", 0)
    if "fail_times" in args:
        marker = Path(args["marker"])
        count = int(marker.read_text()) + 1 if marker.exists() else 1
        marker.write_text(str(count))
        return args.get("exit_code", 1) if count <= args["fail_times"] else 0
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
