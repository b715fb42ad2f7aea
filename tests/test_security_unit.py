"""Unit tests of issue 12's security parts: crontab words, the schedule, the lock file, masking.

The end-to-end side (real crontab, a real symlink, real runs) is in test_e2e_security.py.
"""

import os
import stat
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest
from hypothesis import given
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import scheduler  # noqa: E402

# ── Words that go into a crontab line ────────────────────────────────────

SAFE: Dict[str, Any] = dict(python="/venv/bin/python", root=Path("/srv/proj"), config_dir=None,
            config_name="config", overrides=["scheduler.schedule=0 10 * * 1", "x='a b'"])


def test_plain_words_may_go_into_a_crontab_line() -> None:
    assert scheduler.check_cron_words(**SAFE) == []


@pytest.mark.parametrize("char, said", [
    ("\n", "a newline"), ("\r", "a carriage return"), ("\t", "a tab"),
    ("\x00", "U+0000"), ("\x1b", "U+001B"), ("\x7f", "U+007F"), ("\x85", "U+0085"),
    ("\u2028", "U+2028"), ("\u2029", "U+2029"),
])
def test_an_override_with_a_control_character_is_named(char: str, said: str) -> None:
    bad = f"steps.0.arguments.x='x{char}* * * * * touch $HOME/pwned #'"
    problems = scheduler.check_cron_words(**{**SAFE, "overrides": ["a=1", bad]})
    assert len(problems) == 1
    assert repr(bad) in problems[0] and said in problems[0]
    assert "\n" not in problems[0] and "\r" not in problems[0], "one line, the override escaped"


@pytest.mark.parametrize("where, value", [
    ("root", Path("/srv/new\nline")), ("config_dir", "/etc/pipes\r"),
    ("config_name", "night\nly"), ("python", "/venv\x1b/python"),
])
def test_a_control_character_in_the_folder_config_or_python_is_named(where: str,
                                                                     value: Any) -> None:
    problems = scheduler.check_cron_words(**{**SAFE, where: value})
    assert len(problems) == 1
    assert repr(str(value)) in problems[0]


def test_text_that_is_not_utf8_is_refused_too() -> None:
    undecodable = os.fsdecode(b"x=\xff")  # how Python hands over such an argv word
    problems = scheduler.check_cron_words(**{**SAFE, "overrides": [undecodable]})
    assert len(problems) == 1 and "UTF-8" in problems[0]


# ── The schedule ─────────────────────────────────────────────────────────


@pytest.mark.parametrize("expression", [
    "0 10 * * mon-fri", "0 10 * * mon,wed", "0 10 1 jan-mar *", "*/15 * * * *",
    "1-5/2 * * * *", "0 10 * * MON-Fri", "0 10 * * mon-5", "0 10 * * 1-fri",
    "0 10 * * mon-fri/2", "0 10 * jan-mar/2 *", "0 10 * jan,mar *", "0 10 * * sun-7",
    "0 10 * * mon-fri,sun", "0 10 * * *,1", "0 10 * * 01", "*/100 * * * *", "0 10 * * 5-1",
])
def test_schedule_forms_that_crontab_accepts(expression: str) -> None:
    assert scheduler.check_schedule(expression) == []


@pytest.mark.parametrize("expression", [
    "5/2 * * * *",       # a step needs * or a range before it
    "0 10 * * */mon", "0 10 * * monday", "0 10 * * 1-*", "0 10 * * 1--2", "0 10 * * ,1",
    "0 10 * * 1,", "0 10 * * 1/0", "0 10 * mon *", "0 10 * * jan", "0 10 * * mon-8",
    "0 10 * * 1\n", "0 10 * * 1\r", "0\t10 * * 1", "0 10 * * 1\x00", "0 10 * * 1\x1b",
    "\n0 10 * * 1",
])
def test_schedule_forms_that_crontab_refuses(expression: str) -> None:
    problems = scheduler.check_schedule(expression)
    assert problems, expression
    assert all("\n" not in problem and "\r" not in problem for problem in problems)


# ── Editing the crontab ──────────────────────────────────────────────────

TAG = "# crude-link: /r config=config"


@pytest.mark.parametrize("commented", [
    b"# 0 1 * * * old " + TAG.encode(),
    b"   #0 1 * * * old " + TAG.encode(),
    b"\t# " + TAG.encode(),
])
def test_a_commented_out_line_ending_with_the_tag_is_the_users(commented: bytes) -> None:
    table = b"MAILTO=me\n" + commented + b"\n5 * * * * active " + TAG.encode() + b"\n"
    installed = scheduler.edit_crontab(table, TAG, "* * * * * new " + TAG)
    assert installed == b"MAILTO=me\n" + commented + b"\n* * * * * new " + TAG.encode() + b"\n"
    assert scheduler.edit_crontab(table, TAG, None) == b"MAILTO=me\n" + commented + b"\n"


# ── The lock file ────────────────────────────────────────────────────────


@pytest.fixture
def outputs(tmp_path: Path) -> Path:
    folder = tmp_path / "outputs"
    folder.mkdir()
    return folder


def lock_error(path: Path) -> str:
    with pytest.raises(scheduler.LockFileError) as raised:
        scheduler.acquire_lock(path, path.parent / "run")
    message = str(raised.value)
    assert str(path) in message and "\n" not in message
    return message


def test_a_symlink_to_a_file_is_never_followed(outputs: Path, tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious\n")
    (outputs / "lock").symlink_to(victim)
    assert "symbolic link" in lock_error(outputs / "lock")
    assert victim.read_bytes() == b"precious\n"


def test_a_dangling_symlink_creates_nothing(outputs: Path, tmp_path: Path) -> None:
    (outputs / "lock").symlink_to(tmp_path / "made-by-the-lock")
    lock_error(outputs / "lock")
    assert not (tmp_path / "made-by-the-lock").exists()


def test_a_folder_or_a_fifo_is_refused_without_waiting(outputs: Path) -> None:
    (outputs / "folder").mkdir()
    assert "folder" in lock_error(outputs / "folder")
    os.mkfifo(outputs / "fifo")
    assert "FIFO" in lock_error(outputs / "fifo")
    assert stat.S_ISFIFO(os.lstat(outputs / "fifo").st_mode)


def test_a_hard_link_to_another_file_is_refused(outputs: Path, tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious\n")
    os.link(victim, outputs / "lock")
    assert "hard link" in lock_error(outputs / "lock")
    assert victim.read_bytes() == b"precious\n"


def test_the_lock_file_is_made_and_reused_as_a_regular_file(outputs: Path) -> None:
    path = outputs / "lock"
    for _ in range(2):
        handle, holder = scheduler.acquire_lock(path, outputs / "run")
        assert handle is not None and holder == ""
        assert path.read_text().startswith(f"pid {os.getpid()}, started ")
        assert stat.S_ISREG(os.lstat(path).st_mode)
        handle.close()


# ── Masking ──────────────────────────────────────────────────────────────


@pytest.mark.parametrize("text, secrets, expected", [
    ("token=abc", ["abc"], "token=***"),
    ("abc abcdef", ["abc", "abcdef"], "*** ***"),  # longest first
    ("k='my secret' x", ["my secret", "'my secret'"], "k=*** x"),
    ("nothing here", ["abc"], "nothing here"),
    ("empty", ["", ""], "empty"),
    ("a.b a+b", ["a.b"], "*** a+b"),  # a secret is text, not a pattern
    ("x=1 y=12", ["1"], "x=*** y=***2"),  # short secrets: noise, but nothing shown
    ("", ["abc"], ""),
])
def test_mask(text: str, secrets: List[str], expected: str) -> None:
    assert scheduler.mask(text, secrets) == expected


no_star = st.text(alphabet=st.characters(blacklist_characters="*"), min_size=1, max_size=6)


@given(st.text(max_size=40), st.lists(no_star, max_size=4))
def test_no_secret_is_left_in_masked_text(text: str, secrets: List[str]) -> None:
    masked = scheduler.mask(text + "".join(secrets), secrets)
    assert not any(secret in masked for secret in secrets)


@pytest.mark.parametrize("key, secret", [
    ("password", True), ("DB_PASSWORD", True), ("passwd", True), ("client_secret", True),
    ("API_TOKEN", True), ("api_key", True), ("ApiKey", True), ("credentials.user", True),
    ("ssh.private_key", True), ("max_tokens", True),  # a name that only looks like one
    ("user", False), ("lr", False), ("key", False), ("private", False), ("pass", False),
])
def test_is_secret_key(key: str, secret: bool) -> None:
    assert scheduler.is_secret_key(key) is secret


def test_find_secrets_takes_values_from_oc_env_and_secret_named_keys() -> None:
    written = {"auth": "Bearer ${oc.env:API_TOKEN}", "lr": 0.1, "db": {"password": 1234,
               "host": "db.local"}, "plain": "${..lr}", "keys": ["${oc.env:K1}", "open"],
               "api_key": None, "use_token": True, "spaced": "${ oc.env:X}"}
    resolved = {"auth": "Bearer s3 cr3t", "lr": 0.1, "db": {"password": 1234, "host": "db.local"},
                "plain": 0.1, "keys": ["k-one", "open"], "api_key": None, "use_token": True,
                "spaced": "x-value"}
    found = set(scheduler.find_secrets(resolved, written))
    assert found == {"Bearer s3 cr3t", "'Bearer s3 cr3t'", "1234", "k-one", "x-value"}


def test_find_secrets_sees_names_where_the_written_text_is_another_node() -> None:
    resolved = {"token": "t0k", "user": "me"}
    assert scheduler.find_secrets(resolved, "${common}") == ["t0k"]


def planned_step(arguments: Any, env: Any, written: Optional[Any] = None) -> Any:
    raw = {"script": "tasks/x.py", "arguments": arguments, "env": env}
    plan = scheduler.plan_steps([raw, {"script": "tasks/y.py"}], ["x", "y"], Path("/r"), "/py")
    return scheduler.mark_secrets(plan, [raw, {"script": "tasks/y.py"}],
                                  [written or raw, {"script": "tasks/y.py"}])


def test_every_planned_step_knows_the_secrets_of_the_run() -> None:
    plan = planned_step({"x": "v"}, {"SERVICE": "tok", "DB_PASSWORD": "pw"},
                        {"script": "tasks/x.py", "arguments": {"x": "v"},
                         "env": {"SERVICE": "${oc.env:T}", "DB_PASSWORD": "pw"}})
    assert set(plan[0].secrets) == set(plan[1].secrets) == {"tok", "pw"}
    assert plan[0].command == ["/py", "/r/tasks/x.py", "x=v"], "the step gets the real value"
    assert scheduler.mask_words(plan[0].command, plan[0].secrets) == plan[0].command


TRICKY = "S3cr'et \"q\" \\ x"  # both quotes and a backslash: each style quotes it its own way


@pytest.mark.parametrize("style", ["omegaconf", "hydra", "argparse", "click"])
def test_a_secret_is_masked_however_the_argument_style_writes_it(style: str) -> None:
    raw: Dict[str, Any] = {
        "script": "tasks/x.py", "argument_style": style, "args": ["P0s-only", "open"],
        "arguments": {"auth": TRICKY, "n": 1, "token_list": [TRICKY, "t2"]}}
    written = {**raw, "args": ["${oc.env:B}", "open"],
               "arguments": {**raw["arguments"], "auth": "${oc.env:A}"}}
    plan = scheduler.plan_steps([raw], ["x"], Path("/r"), "/py", (), "omegaconf", Path("/run"))
    planned = scheduler.mark_secrets(plan, [raw], [written])[0]
    assert sum(TRICKY in word or "S3cr" in word for word in planned.command) >= 2, \
        "the step gets the real value"
    masked = scheduler.mask_words(planned.command, planned.secrets)
    assert not any(bit in word for bit in ("S3cr", "t2", "P0s") for word in masked), masked
    assert "open" in masked and any(word.endswith("n=1") for word in masked)


@pytest.mark.parametrize("written, secret", [
    ("${oc.env:API_TOKEN}", True),
    ("x-${oc.env:API_TOKEN}", True),
    ("\\${oc.env:API_TOKEN}", False),      # escaped: the literal text, read from no env
    ("\\\\${oc.env:API_TOKEN}", True),     # an escaped backslash, then a real one
    ("${x} and \\${oc.env:HOME}", False),
])
def test_only_a_real_oc_env_interpolation_makes_a_secret(written: str, secret: bool) -> None:
    assert bool(scheduler.find_secrets("value", written, "plain")) is secret
