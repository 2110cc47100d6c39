"""Static checks of handler references: every bad input gets a precise message, no import."""

from __future__ import annotations

from pathlib import Path

import pytest

from asya.handler_ref import BuildError, HandlerRef, check_source, is_async_handler, resolve


def write(d: Path, name: str, text: str) -> Path:
    path = d / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def check(ref: str, d: Path) -> None:
    handler, path = resolve(ref, d)
    check_source(handler, path)


def test_function_and_class_references(handlers: Path) -> None:
    write(handlers, "pre.py", "def process(p):\n    return p\n")
    write(handlers, "pkg/__init__.py", "")
    write(
        handlers,
        "pkg/cls.py",
        "class C:\n    def __init__(self, a=1):\n        pass\n"
        "    def run(self, p):\n        return p\n",
    )
    assert resolve("pre.process", handlers)[0] == HandlerRef("pre", None, "process")
    assert resolve("pkg.cls.C.run", handlers)[0] == HandlerRef("pkg.cls", "C", "run")
    check("pre.process", handlers)
    check("pkg.cls.C.run", handlers)


@pytest.mark.parametrize("ref", ["process", "pre.", "1pre.process", "pre.process()", "a b.c"])
def test_malformed_reference(handlers: Path, ref: str) -> None:
    with pytest.raises(BuildError, match="not valid"):
        resolve(ref, handlers)


def test_missing_module(handlers: Path) -> None:
    with pytest.raises(BuildError, match=r"module 'nothere' not found .* nothere\.py"):
        resolve("nothere.process", handlers)


def test_syntax_error_names_file_and_line(handlers: Path) -> None:
    write(handlers, "broken.py", "def process(p):\n    return p +\n")
    with pytest.raises(BuildError, match=r"syntax error in .*broken\.py:2"):
        check("broken.process", handlers)


def test_missing_function_lists_what_exists(handlers: Path) -> None:
    write(handlers, "pre.py", "def other(p):\n    return p\n")
    with pytest.raises(BuildError, match=r"defines no function 'process' \(it defines: other\)"):
        check("pre.process", handlers)


def test_init_parameter_without_default_is_named(handlers: Path) -> None:
    write(
        handlers,
        "model.py",
        "class M:\n    def __init__(self, path, device='cpu'):\n"
        "        pass\n    def process(self, p):\n        return p\n",
    )
    with pytest.raises(BuildError, match=r"parameter 'path' has no default"):
        check("model.M.process", handlers)


def test_keyword_only_parameter_without_default_is_named(handlers: Path) -> None:
    write(
        handlers,
        "model.py",
        "class M:\n    def __init__(self, *, token):\n        pass\n"
        "    def process(self, p):\n        return p\n",
    )
    with pytest.raises(BuildError, match=r"parameter 'token' has no default"):
        check("model.M.process", handlers)


def test_class_named_without_method(handlers: Path) -> None:
    write(handlers, "model.py", "class M:\n    def process(self, p):\n        return p\n")
    with pytest.raises(BuildError, match=r"is a class; name a method too"):
        check("model.M", handlers)


def test_class_without_the_method(handlers: Path) -> None:
    write(handlers, "model.py", "class M:\n    def run(self, p):\n        return p\n")
    with pytest.raises(BuildError, match=r"has no method 'process' \(it has: run\)"):
        check("model.M.process", handlers)


def test_async_handlers_are_told_from_the_source(handlers: Path) -> None:
    write(
        handlers,
        "mix.py",
        "import json\n\n"
        "async def judge(p):\n    return p\n\n"
        "def plain(p):\n    return p\n\n"
        "class Model:\n"
        "    async def process(self, p):\n        return p\n\n"
        "    def sync(self, p):\n        return p\n\n"
        "bound = plain\n",
    )
    expected = {
        "mix.judge": True,
        "mix.plain": False,
        "mix.Model.process": True,
        "mix.Model.sync": False,
        "mix.bound": False,  # bound dynamically: built as a plain function
    }
    for ref, is_async in expected.items():
        handler, path = resolve(ref, handlers)
        assert is_async_handler(handler, path) is is_async, ref
