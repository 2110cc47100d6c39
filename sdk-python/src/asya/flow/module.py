"""What a flow file holds besides its flow: imports, module-level constants, classes (state types
and class handlers) and other functions (handler stubs, helpers).

Asya's rule picks the flow: the first top-level function with one parameter named `p`, `state` or
`payload` and a return annotation. Every other function and class of the file is not compiled;
a call to one from the flow is a hop to the actor whose handler has that name. A file can list
several flows with `__flows__ = ["a", "b"]` (or mark them `@flow`); calls between them are
sub-flows.

Module-level constants are evaluated when the flow compiles, environment lookups included
(`THRESHOLD = int(os.getenv("T", 85))` is 85 unless `T` is set in the compiler's environment),
and inlined into the routers as literals.
"""

from __future__ import annotations

import ast
import math
import operator
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

#: Names of the flow parameter under Asya's rule.
FLOW_PARAMS = ("p", "state", "payload")

#: Builtins a module-level constant may call (pure, literal in, literal out).
CONST_CALLS: dict[str, Callable[..., Any]] = {
    f.__name__: f
    for f in (
        int, float, str, bool, bytes, len, min, max, abs, round, tuple, list, dict, set,
        frozenset, sorted, sum, any, all, pow, divmod, chr, ord, hex, oct, bin, repr, format,
    )
}  # fmt: skip

_BINOPS: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
    ast.BitAnd: operator.and_,
    ast.BitOr: operator.or_,
    ast.BitXor: operator.xor,
    ast.LShift: operator.lshift,
    ast.RShift: operator.rshift,
}
_UNARY: dict[type[ast.unaryop], Callable[[Any], Any]] = {
    ast.UAdd: operator.pos,
    ast.USub: operator.neg,
    ast.Not: operator.not_,
    ast.Invert: operator.invert,
}
_COMPARE: dict[type[ast.cmpop], Callable[[Any, Any], Any]] = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.In: lambda a, b: a in b,
    ast.NotIn: lambda a, b: a not in b,
    ast.Is: operator.is_,
    ast.IsNot: operator.is_not,
}
#: Types whose methods a constant expression may call (`os.getenv("X", "a,b").split(",")`).
_VALUE_TYPES = (str, bytes, int, float, bool, tuple, frozenset, list, dict, set)


class NotConstant(Exception):
    """A module-level expression that cannot be computed when the flow compiles."""

    def __init__(self, node: ast.AST, why: str) -> None:
        super().__init__(why)
        self.node = node
        self.why = why


@dataclass
class ModuleScope:
    """The module level of a flow file."""

    path: str
    environ: Mapping[str, str]
    #: Module-level constants, evaluated (name -> value), in definition order.
    constants: dict[str, Any] = field(default_factory=dict)
    #: Module-level names that are not constants, and why (name -> (node, reason)).
    not_constant: dict[str, tuple[ast.AST, str]] = field(default_factory=dict)
    #: `import a.b as c` -> {"c": "a.b"}; `import a.b` -> {"a": "a"}.
    modules: dict[str, str] = field(default_factory=dict)
    #: `from m import x as y` -> {"y": ("m", "x")}.
    imported: dict[str, tuple[str, str]] = field(default_factory=dict)
    classes: dict[str, ast.ClassDef] = field(default_factory=dict)
    functions: dict[str, ast.FunctionDef | ast.AsyncFunctionDef] = field(default_factory=dict)
    #: Module-level handler instances: `classifier = TextClassifier()` -> {"classifier": ...}.
    instances: dict[str, str] = field(default_factory=dict)
    #: `__flows__ = [...]`, when the file lists its flows.
    listed_flows: list[str] | None = None
    listed_at: ast.AST | None = None
    #: Environment variables the constants read: name -> value used (None: unset, default).
    env_reads: dict[str, str | None] = field(default_factory=dict)

    # --- reading the module --------------------------------------------------------------------

    def scan(self, module: ast.Module) -> None:
        for index, stmt in enumerate(module.body):
            if (
                index == 0
                and isinstance(stmt, ast.Expr)
                and isinstance(stmt.value, ast.Constant)
                and isinstance(stmt.value.value, str)
            ):
                continue  # the module docstring
            if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef):
                self.functions[stmt.name] = stmt
            elif isinstance(stmt, ast.ClassDef):
                self.classes[stmt.name] = stmt
            elif isinstance(stmt, ast.Import):
                for alias in stmt.names:
                    if alias.asname:
                        self.modules[alias.asname] = alias.name
                    else:
                        top = alias.name.split(".")[0]
                        self.modules[top] = top
            elif isinstance(stmt, ast.ImportFrom):
                if stmt.module == "__future__":
                    continue
                source = "." * stmt.level + (stmt.module or "")
                for alias in stmt.names:
                    if alias.name != "*":
                        self.imported[alias.asname or alias.name] = (source, alias.name)
            elif isinstance(stmt, ast.Assign | ast.AnnAssign):
                self._assignment(stmt)
            # Anything else (`if __name__ == "__main__":`, logging set-up, ...) is module code
            # the routers never run; a flow that uses a name it binds is told so.
            else:
                for node in ast.walk(stmt):
                    if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                        self.not_constant.setdefault(
                            node.id, (node, "it is bound by module-level code, not a constant")
                        )

    def _assignment(self, stmt: ast.Assign | ast.AnnAssign) -> None:
        targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
        value = stmt.value
        if value is None:
            return  # `x: int` declares, binds nothing
        names = [t.id for t in targets if isinstance(t, ast.Name)]
        if len(names) != len(targets):
            for target in targets:
                for node in ast.walk(target):
                    if isinstance(node, ast.Name):
                        self.not_constant[node.id] = (target, "tuple targets are not constants")
                        self.constants.pop(node.id, None)
            return
        if names == ["__flows__"]:
            self.listed_at = stmt
            if not isinstance(value, ast.List | ast.Tuple) or not all(
                isinstance(e, ast.Constant) and isinstance(e.value, str) for e in value.elts
            ):
                raise NotConstant(value, "__flows__ lists flow names: __flows__ = ['a', 'b']")
            self.listed_flows = [str(e.value) for e in value.elts if isinstance(e, ast.Constant)]
            return
        if (
            isinstance(value, ast.Call)
            and isinstance(value.func, ast.Name | ast.Attribute)
            and _class_like(value.func)
            and not value.args
            and not value.keywords
            and _dotted(value.func) not in CONST_CALLS
        ):
            # `classifier = TextClassifier()` at module level: a class handler, like in a flow.
            for name in names:
                self.instances[name] = _dotted(value.func).split(".")[-1]
            return
        try:
            result = self.evaluate(value)
            literal_source(result, value)
        except NotConstant as exc:
            for name in names:
                self.constants.pop(name, None)
                self.not_constant[name] = (exc.node, exc.why)
            return
        for name in names:
            self.not_constant.pop(name, None)
            self.constants[name] = result

    # --- constant expressions ------------------------------------------------------------------

    def evaluate(self, node: ast.expr) -> Any:
        """The value of a constant expression, or `NotConstant`."""
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Name):
            if node.id in self.constants:
                return self.constants[node.id]
            if node.id in self.not_constant:
                raise NotConstant(node, f"{node.id!r} is not a constant")
            raise NotConstant(node, f"{node.id!r} is not a constant defined above it")
        if isinstance(node, ast.List | ast.Tuple | ast.Set):
            items = [self.evaluate(e) for e in node.elts if not isinstance(e, ast.Starred)]
            if any(isinstance(e, ast.Starred) for e in node.elts):
                raise NotConstant(node, "starred items are not supported in constants")
            if isinstance(node, ast.List):
                return items
            return tuple(items) if isinstance(node, ast.Tuple) else set(items)
        if isinstance(node, ast.Dict):
            out = {}
            for key, value in zip(node.keys, node.values, strict=True):
                if key is None:
                    out.update(self.evaluate(value))
                else:
                    out[self.evaluate(key)] = self.evaluate(value)
            return out
        if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
            return self._apply(node, _BINOPS[type(node.op)], node.left, node.right)
        if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
            return self._apply(node, _UNARY[type(node.op)], node.operand)
        if isinstance(node, ast.BoolOp):
            value = self.evaluate(node.values[0])
            for other in node.values[1:]:
                if isinstance(node.op, ast.And) and not value:
                    return value
                if isinstance(node.op, ast.Or) and value:
                    return value
                value = self.evaluate(other)
            return value
        if isinstance(node, ast.Compare):
            left = self.evaluate(node.left)
            for op, comparator in zip(node.ops, node.comparators, strict=True):
                right = self.evaluate(comparator)
                if not _COMPARE[type(op)](left, right):
                    return False
                left = right
            return True
        if isinstance(node, ast.IfExp):
            return self.evaluate(node.body if self.evaluate(node.test) else node.orelse)
        if isinstance(node, ast.JoinedStr):
            return "".join(self._formatted(v) for v in node.values)
        if isinstance(node, ast.Subscript):
            env = self._environ_ref(node.value)
            if env:
                key = self.evaluate(node.slice)
                value = self._env(str(key), None)
                if value is None:
                    raise NotConstant(
                        node,
                        f"environment variable {key!r} is not set when the flow compiles and "
                        "has no default (use os.getenv(name, default))",
                    )
                return value
            return self._apply(node, operator.getitem, node.value, node.slice)
        if isinstance(node, ast.Call):
            return self._call(node)
        raise NotConstant(node, f"{type(node).__name__} is not a constant expression")

    def _apply(self, node: ast.AST, fn: Callable[..., Any], *args: ast.expr) -> Any:
        values = [self.evaluate(a) for a in args]
        try:
            return fn(*values)
        except Exception as exc:
            raise NotConstant(node, f"evaluating it fails: {type(exc).__name__}: {exc}") from None

    def _formatted(self, node: ast.expr) -> str:
        if isinstance(node, ast.Constant):
            return str(node.value)
        if not isinstance(node, ast.FormattedValue):
            raise NotConstant(node, "unsupported f-string part")
        value = self.evaluate(node.value)
        if node.conversion == ord("r"):
            value = repr(value)
        elif node.conversion == ord("s"):
            value = str(value)
        elif node.conversion == ord("a"):
            value = ascii(value)
        spec = self._formatted_spec(node.format_spec)
        return format(value, spec)

    def _formatted_spec(self, spec: ast.expr | None) -> str:
        if spec is None:
            return ""
        if isinstance(spec, ast.JoinedStr):
            return "".join(self._formatted(v) for v in spec.values)
        return str(self.evaluate(spec))

    def _call(self, node: ast.Call) -> Any:
        if any(isinstance(a, ast.Starred) for a in node.args) or any(
            k.arg is None for k in node.keywords
        ):
            raise NotConstant(node, "*args and **kwargs are not supported in constants")
        func = node.func
        getenv = self._getenv_ref(func)
        if getenv:
            args = [self.evaluate(a) for a in node.args]
            kwargs = {str(k.arg): self.evaluate(k.value) for k in node.keywords}
            if not args or len(args) > 2 or set(kwargs) - {"default", "key"}:
                raise NotConstant(node, "an environment lookup takes (name, default)")
            default = args[1] if len(args) > 1 else kwargs.get("default")
            return self._env(str(args[0]), default)
        args = [self.evaluate(a) for a in node.args]
        kwargs = {str(k.arg): self.evaluate(k.value) for k in node.keywords}
        if isinstance(func, ast.Name):
            fn = CONST_CALLS.get(func.id)
            if fn is None or func.id in self.constants or func.id in self.functions:
                raise NotConstant(
                    node,
                    f"{func.id}() cannot run when the flow compiles; constants may call "
                    "int, float, str, bool, len, min, max, ... and os.getenv",
                )
        elif isinstance(func, ast.Attribute) and not func.attr.startswith("_"):
            try:
                target = self.evaluate(func.value)
            except NotConstant:
                raise NotConstant(
                    node, f"{ast.unparse(func)}() cannot run when the flow compiles"
                ) from None
            if not isinstance(target, _VALUE_TYPES):
                raise NotConstant(node, f"{ast.unparse(func)}() is not a constant method")
            fn = getattr(target, func.attr, None)
            if not callable(fn):
                raise NotConstant(node, f"{ast.unparse(func)} is not a method")
        else:
            raise NotConstant(node, f"{ast.unparse(func)}() cannot run when the flow compiles")
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            raise NotConstant(node, f"evaluating it fails: {type(exc).__name__}: {exc}") from None

    def _env(self, name: str, default: Any) -> Any:
        value = self.environ.get(name)
        self.env_reads[name] = value
        return default if value is None else value

    def _getenv_ref(self, func: ast.expr) -> bool:
        """`os.getenv`, `os.environ.get`, `getenv` / `environ.get` imported from os."""
        if isinstance(func, ast.Name):
            return self.imported.get(func.id) == ("os", "getenv")
        if isinstance(func, ast.Attribute):
            if func.attr == "getenv" and isinstance(func.value, ast.Name):
                return self.modules.get(func.value.id) == "os"
            if func.attr == "get":
                return self._environ_ref(func.value)
        return False

    def _environ_ref(self, node: ast.expr) -> bool:
        if isinstance(node, ast.Name):
            return self.imported.get(node.id) == ("os", "environ")
        return (
            isinstance(node, ast.Attribute)
            and node.attr == "environ"
            and isinstance(node.value, ast.Name)
            and self.modules.get(node.value.id) == "os"
        )

    # --- the flow and its state type -----------------------------------------------------------

    def flows(self) -> list[ast.FunctionDef | ast.AsyncFunctionDef]:
        """The functions compiled as flows (see the module docstring)."""
        functions = list(self.functions.values())
        if self.listed_flows is not None:
            picked = []
            for name in self.listed_flows:
                if name not in self.functions:
                    raise NotConstant(
                        self.listed_at or ast.Module(body=[], type_ignores=[]),
                        f"__flows__ names {name!r}, which is not a top-level function here",
                    )
                picked.append(self.functions[name])
            return picked
        marked = [f for f in functions if any(_is_flow_decorator(d) for d in f.decorator_list)]
        if marked:
            return marked
        for fn in functions:
            if is_flow_signature(fn):
                return [fn]
        # Lenient fallback for files without annotations: the first one-parameter function.
        for fn in functions:
            if len(fn.args.args) == 1 and not fn.args.posonlyargs:
                return [fn]
        return functions[:1]

    def state_class(self, fn: ast.FunctionDef | ast.AsyncFunctionDef) -> ast.ClassDef | None:
        """The class of the flow's state, when its annotation names one defined in this file."""
        annotation = fn.args.args[0].annotation if fn.args.args else None
        name = _annotation_name(annotation)
        return self.classes.get(name) if name else None

    def attribute_state(self, fn: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
        """Whether the state is an object with fields (a dataclass or pydantic model), so
        `state.x` means the payload's key "x"; a dict or TypedDict state is indexed."""
        annotation = fn.args.args[0].annotation if fn.args.args else None
        name = _annotation_name(annotation)
        if not name or name.split(".")[-1] in _DICT_TYPES:
            return False
        cls = self.classes.get(name)
        if cls is None:
            # An imported type: a TypedDict is indexed, anything else has fields.
            return self.imported.get(name, ("", ""))[1] not in _DICT_TYPES
        return self._has_fields(cls, set())

    def _has_fields(self, cls: ast.ClassDef, seen: set[str]) -> bool:
        if cls.name in seen:
            return False
        seen.add(cls.name)
        if any(_dotted(_undecorate(d)).split(".")[-1] == "dataclass" for d in cls.decorator_list):
            return True
        for base in cls.bases:
            name = _dotted(base).split(".")[-1]
            if name in ("TypedDict", "dict", "Dict"):
                return False
            if name == "BaseModel":
                return True
            if name in self.classes and self._has_fields(self.classes[name], seen):
                return True
        return False

    def state_defaults(self, cls: ast.ClassDef) -> dict[str, Any]:
        """Literal defaults of a dataclass / pydantic state's fields (`x: int = 0`,
        `field(default=...)`, `field(default_factory=list)`), base classes first."""
        out: dict[str, Any] = {}
        for base in cls.bases:
            parent = self.classes.get(_dotted(base).split(".")[-1])
            if parent is not None and parent is not cls:
                out.update(self.state_defaults(parent))
        for stmt in cls.body:
            if not (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)):
                continue
            if stmt.value is None:
                continue
            value = stmt.value
            if isinstance(value, ast.Call) and _dotted(value.func).split(".")[-1] in (
                "field",
                "Field",
            ):
                keywords = {k.arg: k.value for k in value.keywords}
                if "default" in keywords:
                    value = keywords["default"]
                elif value.args and _dotted(value.func).endswith("Field"):
                    value = value.args[0]
                elif "default_factory" in keywords:
                    factory = _dotted(keywords["default_factory"])
                    if factory in ("list", "dict", "set", "tuple", "str", "int", "float"):
                        out[stmt.target.id] = CONST_CALLS[factory]()
                    continue
                else:
                    continue
            try:
                result = self.evaluate(value)
                literal_source(result, value)
            except NotConstant:
                continue
            out[stmt.target.id] = result
        return out


_DICT_TYPES = ("dict", "Dict", "Mapping", "MutableMapping", "TypedDict", "Any")


def is_flow_signature(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    """Asya's rule: one parameter named p, state or payload, and a return annotation."""
    args = fn.args
    return (
        len(args.args) == 1
        and not (args.posonlyargs or args.kwonlyargs or args.vararg or args.kwarg)
        and args.args[0].arg in FLOW_PARAMS
        and fn.returns is not None
    )


def _is_flow_decorator(node: ast.expr) -> bool:
    return _dotted(_undecorate(node)).split(".")[-1] == "flow"


def _undecorate(node: ast.expr) -> ast.expr:
    return node.func if isinstance(node, ast.Call) else node


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        inner = _dotted(node.value)
        return f"{inner}.{node.attr}" if inner else ""
    return ""


def _class_like(func: ast.expr) -> bool:
    name = _dotted(func).split(".")[-1]
    return name[:1].isupper()


def _annotation_name(annotation: ast.expr | None) -> str:
    if annotation is None:
        return ""
    if isinstance(annotation, ast.Constant) and isinstance(annotation.value, str):
        try:
            annotation = ast.parse(annotation.value, mode="eval").body
        except SyntaxError:
            return ""
    if isinstance(annotation, ast.Subscript):
        annotation = annotation.value
    return _dotted(annotation)


def literal_source(value: Any, node: ast.AST | None = None) -> str:
    """Python source that evaluates to `value` in a router: literals and containers of them."""
    if value is None or isinstance(value, bool | int | str | bytes):
        return repr(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "float('nan')"
        if math.isinf(value):
            return "float('inf')" if value > 0 else "float('-inf')"
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(literal_source(v, node) for v in value) + "]"
    if isinstance(value, tuple):
        inner = ", ".join(literal_source(v, node) for v in value)
        return f"({inner},)" if len(value) == 1 else f"({inner})"
    if isinstance(value, set | frozenset):
        items = sorted(literal_source(v, node) for v in value)
        body = "{" + ", ".join(items) + "}" if items else ""
        if isinstance(value, frozenset):
            return f"frozenset({body})"
        return body or "set()"
    if isinstance(value, dict):
        return (
            "{"
            + ", ".join(
                f"{literal_source(k, node)}: {literal_source(v, node)}" for k, v in value.items()
            )
            + "}"
        )
    raise NotConstant(
        node or ast.Module(body=[], type_ignores=[]),
        f"its value ({type(value).__name__}) cannot be written into the routers",
    )


def scan_module(module: ast.Module, path: str, environ: Mapping[str, str] | None) -> ModuleScope:
    scope = ModuleScope(path=path, environ=os.environ if environ is None else environ)
    scope.scan(module)
    return scope
