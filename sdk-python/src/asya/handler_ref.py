"""Handler references (`module.func`, `module.Class.method`) and their static checks.

The checks read the source with `ast` and never import user code, so a broken handler gets a
precise message (file, line, parameter name) before componentize-py spends seconds on it.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
_REF = re.compile(rf"^{_IDENT}(\.{_IDENT})+$")


class BuildError(Exception):
    """A handler cannot be built; the message says why and what to change."""


@dataclass(frozen=True)
class HandlerRef:
    """A resolved handler reference.

    `module` is the dotted module path; `cls` is the class name for class handlers (constructed
    once, with no arguments); `func` is the function or method name.
    """

    module: str
    cls: str | None
    func: str

    @property
    def text(self) -> str:
        parts = [self.module, *([self.cls] if self.cls else []), self.func]
        return ".".join(parts)


def module_file(source_dir: Path, module: str) -> Path | None:
    """The file that defines `module` under `source_dir`, if any."""
    base = source_dir.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def resolve(reference: str, source_dir: Path) -> tuple[HandlerRef, Path]:
    """Splits `reference` into module and attribute path, using the files under `source_dir`.

    The longest dotted prefix that names a module file wins, so packages work
    (`pkg.mod.func`). Raises `BuildError` with a clear message when nothing fits.
    """
    if not _REF.match(reference):
        raise BuildError(
            f"handler reference {reference!r} is not valid: expected 'module.func' or "
            "'module.Class.method' (dotted Python identifiers)"
        )
    parts = reference.split(".")
    for split in range(len(parts) - 1, 0, -1):
        module = ".".join(parts[:split])
        path = module_file(source_dir, module)
        if path is None:
            continue
        rest = parts[split:]
        if len(rest) == 1:
            return HandlerRef(module, None, rest[0]), path
        if len(rest) == 2:
            return HandlerRef(module, rest[0], rest[1]), path
        raise BuildError(
            f"handler reference {reference!r}: after module {module!r} expected 'func' or "
            f"'Class.method', got {'.'.join(rest)!r}"
        )
    first = parts[0]
    raise BuildError(
        f"handler {reference!r}: module {'.'.join(parts[:-1]) if len(parts) > 1 else first!r} "
        f"not found in {source_dir} (looked for {first}.py or {first}/__init__.py)"
    )


def check_source(ref: HandlerRef, path: Path) -> None:
    """Static checks on the handler's module: syntax, presence of the handler, and that a class
    handler's `__init__` can be called without arguments."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except SyntaxError as exc:
        raise BuildError(f"syntax error in {path}:{exc.lineno}:{exc.offset}: {exc.msg}") from None
    top: dict[str, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef] = {}
    dynamic = False
    for stmt in tree.body:
        if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            top[stmt.name] = stmt
        elif isinstance(stmt, ast.Import | ast.ImportFrom | ast.Assign | ast.AnnAssign):
            # Names bound by imports or assignments cannot be checked statically; the adapter
            # checks them when it loads the module at build time.
            dynamic = True
    target = ref.cls or ref.func
    node = top.get(target)
    if node is None:
        if dynamic:
            return
        defined = ", ".join(sorted(top)) or "nothing"
        kind = "class" if ref.cls else "function"
        raise BuildError(
            f"handler {ref.text!r}: {path} defines no {kind} {target!r} (it defines: {defined})"
        )
    if ref.cls is None:
        if isinstance(node, ast.ClassDef):
            raise BuildError(
                f"handler {ref.text!r}: {target!r} is a class; name a method too, "
                f"e.g. '{ref.module}.{target}.process'"
            )
        return
    if not isinstance(node, ast.ClassDef):
        raise BuildError(f"handler {ref.text!r}: {ref.cls!r} in {path} is not a class")
    methods = {
        item.name: item
        for item in node.body
        if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef)
    }
    if ref.func not in methods and not node.bases:
        raise BuildError(
            f"handler {ref.text!r}: class {ref.cls!r} has no method {ref.func!r} "
            f"(it has: {', '.join(sorted(methods)) or 'none'})"
        )
    init = methods.get("__init__")
    if init is not None:
        missing = required_init_params(init)
        if missing:
            raise BuildError(
                f"handler {ref.text!r}: {ref.cls}.__init__ parameter {missing[0]!r} has no "
                f"default ({path}:{init.lineno}). The class is constructed once with no "
                f"arguments at build time; give every parameter a default, e.g. "
                f"{missing[0]}: str = '...'"
            )


def required_init_params(init: ast.FunctionDef | ast.AsyncFunctionDef) -> list[str]:
    """Names of `__init__` parameters (other than self) that have no default."""
    args = init.args
    positional = [*args.posonlyargs, *args.args][1:]  # drop self
    defaults_from = len(positional) - len(args.defaults)
    missing = [a.arg for i, a in enumerate(positional) if i < defaults_from]
    missing += [a.arg for a, d in zip(args.kwonlyargs, args.kw_defaults, strict=True) if d is None]
    return missing


def is_async_handler(ref: HandlerRef, path: Path) -> bool:
    """Whether the handler is an `async def` function or method, read from the source (the
    build picks the component's world from it before anything is imported). A handler bound
    dynamically (an import or an assignment) counts as a plain function."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    scope: list[ast.stmt] = tree.body
    if ref.cls is not None:
        classes = [s for s in tree.body if isinstance(s, ast.ClassDef) and s.name == ref.cls]
        if not classes:
            return False
        scope = classes[-1].body
    found: ast.stmt | None = None
    for stmt in scope:
        if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef) and stmt.name == ref.func:
            found = stmt
    return isinstance(found, ast.AsyncFunctionDef)
