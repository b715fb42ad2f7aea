"""Argument styles against their real consumers (issue "Arguments that any program understands").

Each style's words are read back by the parser they are meant for, never by a model of it:
`OmegaConf.from_cli()` (omegaconf), Hydra's override parser, Hydra's compose and a real
`@hydra.main` app (hydra), argparse (argparse) and click (click). The generated values
include what the older tests left out: both quote kinds, a trailing backslash, control
characters, `${`, and the floats inf, -inf and nan.
"""

import argparse
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Mapping, Tuple

import click
import pytest
from hydra import compose, initialize
from hydra.core.override_parser.overrides_parser import OverridesParser
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parent.parent
PROGRAMS = Path(__file__).resolve().parent / "programs"
sys.path.insert(0, str(ROOT))

import scheduler  # noqa: E402

STYLES = ["omegaconf", "hydra", "argparse", "click"]


# ── Comparing values type for type ───────────────────────────────────────


def same(got: Any, want: Any) -> bool:
    """Return whether got equals want with the same types all the way down (nan == nan)."""
    if isinstance(want, float) and math.isnan(want):
        return isinstance(got, float) and math.isnan(got)
    if type(got) is not type(want):
        return False
    if isinstance(want, dict):
        return got.keys() == want.keys() and all(same(got[k], want[k]) for k in want)
    if isinstance(want, list):
        return len(got) == len(want) and all(map(same, got, want))
    return bool(got == want)


def assert_same(got: Any, want: Any, words: Any = None) -> None:
    assert same(got, want), f"\n got:  {got!r}\n want: {want!r}\n words: {words!r}"


def flatten(arguments: Mapping[str, Any], prefix: str = "") -> List[Tuple[str, Any]]:
    """Return (dotted key, leaf) pairs, as a program sees nested mappings (`opt.lr`)."""
    pairs: List[Tuple[str, Any]] = []
    for key, value in arguments.items():
        if isinstance(value, dict) and value:
            pairs.extend(flatten(value, f"{prefix}{key}."))
        else:
            pairs.append((f"{prefix}{key}", value))
    return pairs


# ── What the real parsers read ───────────────────────────────────────────


def from_cli(words: List[str]) -> Dict[str, Any]:
    """Return what a task reading its argv with OmegaConf.from_cli() gets."""
    container = OmegaConf.to_container(OmegaConf.from_cli(words), resolve=True)
    assert isinstance(container, dict)
    return {str(k): v for k, v in container.items()}


def hydra_reads(text: str) -> Any:
    """Return a value as a Hydra app reads `k=<text>`: parsed, then resolved by OmegaConf."""
    (override,) = OverridesParser.create().parse_overrides([f"k={text}"])
    assert not override.is_sweep_override(), f"Hydra reads {text!r} as a sweep"
    return resolved(override.value())


def resolved(value: Any) -> Any:
    """Return a parsed override value as the app's cfg holds it: OmegaConf escapes resolved."""
    container = OmegaConf.to_container(OmegaConf.create({"k": value}), resolve=True)
    assert isinstance(container, dict)
    return container["k"]


def _item_type(items: List[Any]) -> Callable[[str], Any]:
    kinds = {type(item) for item in items}
    assert len(kinds) <= 1, f"the strategies make one-type lists, got {items!r}"
    return kinds.pop() if kinds else str


def argparse_reads(flat: List[Tuple[str, Any]], words: List[str]) -> Dict[str, Any]:
    """Return what argparse parses from words, its options typed after the values."""
    parser = argparse.ArgumentParser(prog="step", add_help=False)
    for key, value in flat:
        option = f"--{key}"
        if isinstance(value, bool):
            parser.add_argument(option, dest=key, action="store_true")
        elif isinstance(value, list):
            parser.add_argument(option, dest=key, nargs="*", type=_item_type(value))
        elif value is None:
            parser.add_argument(option, dest=key, type=str)
        else:
            parser.add_argument(option, dest=key, type=type(value))
    try:
        return vars(parser.parse_args(words))
    except SystemExit:
        pytest.fail(f"argparse rejected {words!r} (its message is on stderr)")


def click_reads(flat: List[Tuple[str, Any]], words: List[str]) -> Dict[str, Any]:
    """Return what a click command parses from words, its options typed after the values."""
    params: List[click.Parameter] = []
    for number, (key, value) in enumerate(flat):
        decls = [f"--{key}", f"p{number}"]
        if isinstance(value, bool):
            params.append(click.Option(decls, is_flag=True, default=False))
        elif isinstance(value, list):
            params.append(click.Option(decls, multiple=True, type=_item_type(value)))
        elif value is None:
            params.append(click.Option(decls, type=str, default=None))
        else:
            params.append(click.Option(decls, type=type(value)))
    command = click.Command("step", params=params, add_help_option=False,
                            callback=lambda **parsed: parsed)
    try:
        parsed = command.main(words, prog_name="step", standalone_mode=False)
    except click.ClickException as error:
        pytest.fail(f"click rejected {words!r}: {error.format_message()}")
    return {key: list(parsed[f"p{n}"]) if isinstance(parsed[f"p{n}"], tuple) else parsed[f"p{n}"]
            for n, (key, _) in enumerate(flat)}


def expected_options(flat: List[Tuple[str, Any]]) -> Dict[str, Any]:
    """Return what argparse or click should parse: false is the flag's default, null absent."""
    return dict(flat)


# ── Strategies ───────────────────────────────────────────────────────────

# Strings that once broke quoting somewhere, or that a parser reads as something else.
TRICKY = [
    "", " ", "it's", 'say "hi"', "both ' and \"", "'", '"', "''", '""', "\\", "ends with \\",
    "\\\\", "\\'", "'\\", "a\\'b", 'a\\"b', "C:\\new\\table", "line\nnext", "tab\there",
    "\r\n", "\x01\x1b[0m\x7f", "\x85\u2028\u2029\ufeff", "${x}", "\\${x}", "a\\${x}",
    "${x", "$", "${", "}", "$${x}", "a=b=c", "a,b", ",", "[a]", "{a: 1}", "[]", "{}",
    "ünïcødé ✓ 😀", "true", "True", "false", "null", "None", "~", "nan", "NaN", "inf",
    "-inf", ".inf", "Infinity", "1e3", "1_000", "42", "-7", "0x10", "1.0", "yes", "off",
    "#c", "a #c", "a b", " lead", "trail ", "int(3)", "choice(a,b)", "range(1,3)",
    "glob(*)", "*", "?", "a:b", "a: b", "@a", "%d", "!x", "&a", "|", ">", "-", "--x",
    "a/b-c.d", "/abs/x-1.csv", "./rel", "+x", "=",
]
NO_NUL = st.characters(blacklist_characters="\x00", blacklist_categories=["Cs"])
texts = st.text(NO_NUL, max_size=12) | st.sampled_from(TRICKY)
floats = st.floats() | st.sampled_from([math.inf, -math.inf, math.nan, -0.0, 1e20, 1e-5,
                                        -1e-5, 5e-324, 1.7976931348623157e308])
ints = st.integers(-10**18, 10**18)
scalars = st.none() | st.booleans() | ints | floats | texts

# Keys: plain identifiers (a dot would nest); Hydra's words are keys of their own below.
keys = st.from_regex(r"[a-z][a-z0-9_]{0,6}", fullmatch=True)
HYDRA_WORDS = {"true", "false", "null", "nan", "inf"}
hydra_keys = keys.filter(lambda key: key not in HYDRA_WORDS and key != "hydra")
hydra_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(hydra_keys, inner, max_size=3),
    max_leaves=8)
hydra_arguments = st.dictionaries(hydra_keys, hydra_values, max_size=4)

# argparse and click: one type per list; no list item starting with "-" unless a number.
option_keys = st.from_regex(r"[a-z][a-z0-9_]{0,5}(-[a-z0-9]{1,3})?", fullmatch=True)
items = texts.filter(lambda text: not text.startswith("-"))


def option_values(list_floats: Any) -> Any:
    lists = st.lists(ints, max_size=3) | st.lists(list_floats, max_size=3) | st.lists(items,
                                                                                      max_size=3)
    leaves = scalars | lists
    return st.recursive(leaves, lambda inner: st.dictionaries(option_keys, inner, min_size=1,
                                                              max_size=3), max_leaves=8)


# argparse cannot read -inf as a list item at all (its negative numbers are digits only).
argparse_arguments = st.dictionaries(
    option_keys, option_values(floats.filter(lambda f: f != -math.inf)), max_size=5)
click_arguments = st.dictionaries(option_keys, option_values(floats), max_size=5)


# ── The styles there are ─────────────────────────────────────────────────


def test_the_argument_styles_are_exactly_the_four_of_the_issue() -> None:
    assert set(scheduler.ARGUMENT_STYLES) == set(STYLES)
    assert all(callable(render) for render in scheduler.ARGUMENT_STYLES.values())


def test_omegaconf_is_the_default_style() -> None:
    arguments = {"lr": 0.1, "name": "my run", "opt": {"betas": [0.9, 0.99]}, "flag": True}
    assert scheduler.render_arguments(arguments) == scheduler.render_arguments(
        arguments, "omegaconf") == ["lr=0.1", "name='my run'", "opt.betas=[0.9,0.99]",
                                    "flag=true"]


@pytest.mark.parametrize("style", STYLES)
def test_no_arguments_give_no_words(style: str) -> None:
    assert scheduler.render_arguments({}, style) == []


# ── omegaconf: today's behaviour, read by OmegaConf.from_cli ─────────────


omegaconf_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner, min_size=1,
                                                                max_size=3),
    max_leaves=8)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(keys, omegaconf_values, max_size=4))
def test_omegaconf_words_are_the_render_value_words_of_before(arguments: Dict[str, Any]) -> None:
    for fmt in ("{key}={value}", "--{key}={value}"):
        assert scheduler.render_arguments(arguments, "omegaconf", fmt) == [
            fmt.format(key=key, value=scheduler.render_value(value))
            for key, value in scheduler.flatten_arguments(arguments)]


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(keys, omegaconf_values, max_size=4))
def test_omegaconf_words_round_trip_through_from_cli(arguments: Dict[str, Any]) -> None:
    words = scheduler.render_arguments(arguments, "omegaconf")
    assert_same(from_cli(words), arguments, words)


@pytest.mark.parametrize("value", ["a\x00b", "\x00"])
def test_omegaconf_still_passes_a_nul_character_escaped_as_before(value: str) -> None:
    words = scheduler.render_arguments({"k": value}, "omegaconf")
    assert all("\x00" not in word for word in words)
    assert from_cli(words) == {"k": value}


# ── hydra: Hydra's override grammar ──────────────────────────────────────


@pytest.mark.parametrize("value", [
    math.inf, -math.inf, math.nan, 0.1, -0.0, 1e20, 1e-05, 42, -7, True, False, None,
    [], [[]], [1, [2.5, ["a b"]], []], {}, [{"a": 1, "b": [True, None]}],
    *TRICKY,
])
def test_hydra_reads_back_each_value(value: Any) -> None:
    text = scheduler.render_hydra_value(value)
    assert_same(hydra_reads(text), value, text)


@settings(max_examples=500, deadline=None)
@given(hydra_values)
def test_hydra_override_parser_reads_back_any_value(value: Any) -> None:
    text = scheduler.render_hydra_value(value)
    assert_same(hydra_reads(text), value, text)


@pytest.mark.parametrize("key", ["true", "null", "nan", "inf", "1", "a-b"])
def test_hydra_keys_of_a_mapping_in_a_list_stay_strings(key: str) -> None:
    value = [{key: 1}]
    try:
        text = scheduler.render_hydra_value(value)
    except ValueError:
        return  # a mapping key Hydra's grammar cannot hold: a config error, acceptable
    assert_same(hydra_reads(text), value, text)


@settings(max_examples=300, deadline=None)
@given(hydra_arguments)
def test_hydra_words_are_one_override_each_with_the_key_as_written(
    arguments: Dict[str, Any],
) -> None:
    prefixed = {f"{prefix}{key}": value for prefix, (key, value)
                in zip(["", "+", "++"] * 2, arguments.items())}
    words = scheduler.render_arguments(prefixed, "hydra")
    overrides = OverridesParser.create().parse_overrides(words)
    flat = flatten(prefixed)
    assert len(overrides) == len(flat)
    for override, (key, value) in zip(overrides, flat):
        assert override.input_line is not None
        assert override.input_line.split("=", 1)[0] == key  # +key, ++key kept
        assert not override.is_sweep_override(), override.input_line
        assert_same(resolved(override.value()), value, override.input_line)


@pytest.fixture(scope="module")
def hydra_compose() -> Iterator[Callable[[List[str]], Dict[str, Any]]]:
    """Return a function that composes an empty Hydra config with overrides, as an app."""
    with initialize(version_base="1.3", config_path=None):
        def composed(words: List[str]) -> Dict[str, Any]:
            cfg = OmegaConf.to_container(compose(overrides=words), resolve=True)
            assert isinstance(cfg, dict)
            return {str(key): value for key, value in cfg.items()}

        yield composed


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(hydra_arguments)
def test_hydra_words_compose_into_the_same_config(
    hydra_compose: Callable[[List[str]], Dict[str, Any]], arguments: Dict[str, Any],
) -> None:
    words = scheduler.render_arguments({f"++{k}": v for k, v in arguments.items()}, "hydra")
    assert_same(hydra_compose(words), arguments, words)


def test_hydra_argument_format_applies(hydra_compose: Callable[..., Dict[str, Any]]) -> None:
    arguments = {"a": 1, "b": {"c": "x y", "d": [1.5, math.inf]}}
    words = scheduler.render_arguments(arguments, "hydra", "++{key}={value}")
    assert [word.split("=", 1)[0] for word in words] == ["++a", "++b.c", "++b.d"]
    assert_same(hydra_compose(words), arguments, words)


@pytest.mark.e2e
@settings(max_examples=8, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(hydra_arguments)
def test_a_real_hydra_app_gets_the_same_values(
    tmp_path_factory: pytest.TempPathFactory, arguments: Dict[str, Any],
) -> None:
    folder = tmp_path_factory.mktemp("hydra-app")
    words = scheduler.render_arguments({"++gen": arguments}, "hydra")
    record = folder / "record.json"
    result = subprocess.run(
        [sys.executable, str(PROGRAMS / "hydra_app" / "app.py"), *words,
         f"hydra.run.dir='{folder / 'run'}'"],
        cwd=folder, capture_output=True, text=True, timeout=60,
        env={**os.environ, "TEST_RECORD": str(record)})
    assert result.returncode == 0, f"{words!r}\n{result.stderr}"
    cfg = json.loads(record.read_text(encoding="utf-8"))["cfg"]
    assert_same(cfg.get("gen", {}), arguments, words)


# ── argparse: GNU long options ───────────────────────────────────────────


def test_argparse_words_are_long_options_in_plain_text() -> None:
    arguments = {"lr": 0.1, "name": "my run", "verbose": True, "quiet": False, "seed": None,
                 "layers": [64, 64], "optimizer": {"lr": 0.01}, "note": "it's \"x\"\n$HOME"}
    assert scheduler.render_arguments(arguments, "argparse") == [
        "--lr=0.1", "--name=my run", "--verbose", "--layers", "64", "64",
        "--optimizer.lr=0.01", "--note=it's \"x\"\n$HOME"]


def test_click_words_repeat_the_option_for_each_list_item() -> None:
    arguments = {"tag": ["a", "b c"], "n": 3, "dry": False, "verbose": True, "none": []}
    assert scheduler.render_arguments(arguments, "click") == [
        "--tag=a", "--tag=b c", "--n=3", "--verbose"]


@pytest.mark.parametrize("style", ["argparse", "click"])
def test_option_keys_are_used_as_written(style: str) -> None:
    assert scheduler.render_arguments({"n-samples": 1, "n_samples": 2}, style) == [
        "--n-samples=1", "--n_samples=2"]


@pytest.mark.parametrize("style", ["argparse", "click"])
def test_inf_and_nan_reach_the_parser_as_floats(style: str) -> None:
    arguments = {"big": math.inf, "small": -math.inf, "nan": math.nan}
    words = scheduler.render_arguments(arguments, style)
    reads = argparse_reads if style == "argparse" else click_reads
    assert_same(reads(flatten(arguments), words), arguments, words)


@pytest.mark.parametrize("numbers", [[-5, 3], [-1.5, -0.25], [-1e-05, -1e20, 2.5e-300],
                                     [-0.0]])
def test_argparse_reads_negative_numbers_in_a_list_as_numbers(numbers: List[Any]) -> None:
    arguments = {"offsets": numbers}
    words = scheduler.render_arguments(arguments, "argparse")
    assert_same(argparse_reads(flatten(arguments), words), arguments, words)


def test_argparse_minus_inf_in_a_list_is_refused_or_read_back() -> None:
    arguments = {"offsets": [1.0, -math.inf]}
    try:
        words = scheduler.render_arguments(arguments, "argparse")
    except ValueError:
        return  # argparse reads every "-inf" word as an option: nothing else to do
    assert_same(argparse_reads(flatten(arguments), words), arguments, words)


@settings(max_examples=400, deadline=None)
@given(argparse_arguments)
def test_argparse_reads_back_any_arguments(arguments: Dict[str, Any]) -> None:
    words = scheduler.render_arguments(arguments, "argparse")
    flat = flatten(arguments)
    assert_same(argparse_reads(flat, words), expected_options(flat), words)


@settings(max_examples=400, deadline=None)
@given(click_arguments)
def test_click_reads_back_any_arguments(arguments: Dict[str, Any]) -> None:
    words = scheduler.render_arguments(arguments, "click")
    flat = flatten(arguments)
    assert_same(click_reads(flat, words), expected_options(flat), words)


# ── What a style cannot pass is a ValueError (a config error for the user) ──


@pytest.mark.parametrize("style", ["argparse", "click"])
@pytest.mark.parametrize("arguments", [
    {"items": [{"a": 1}]},         # a mapping inside a list
    {"items": [[1, 2]]},           # a list inside a list
    {"items": ["-x"]},             # read as an option by argparse
    {"items": ["a", None]},
    {"name": "a\x00b"},            # no argv word can hold NUL
    {"items": ["a\x00"]},
], ids=["mapping-in-list", "list-in-list", "dash-item", "null-item", "nul", "nul-item"])
def test_option_styles_refuse_what_they_cannot_pass(style: str,
                                                    arguments: Dict[str, Any]) -> None:
    if style == "click" and arguments == {"items": ["-x"]}:
        try:  # --items=-x is one word click reads as the item "-x": refusing is allowed too
            words = scheduler.render_arguments(arguments, style)
        except ValueError:
            return
        assert click_reads(flatten(arguments), words) == {"items": ["-x"]}
        return
    with pytest.raises(ValueError) as error:
        scheduler.render_arguments(arguments, style)
    assert list(arguments)[0] in str(error.value)  # names the argument


@pytest.mark.parametrize("arguments", [{"name": "a\x00b"}, {"items": ["ok", "\x00"]}])
def test_hydra_refuses_a_nul_character(arguments: Dict[str, Any]) -> None:
    with pytest.raises(ValueError) as error:
        scheduler.render_arguments(arguments, "hydra")
    assert list(arguments)[0] in str(error.value)
