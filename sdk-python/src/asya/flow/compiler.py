"""The Flow DSL compiler: a plain Python function over one payload dict becomes a graph of blocks
that generated router actors walk, calling one actor per hop.

Which function is the flow (Asya's rule, see `module`): the first top-level function with one
parameter named `p`, `state` or `payload` and a return annotation (without one, the first
one-parameter function). Every other function and class of the file (handler stubs, helpers) is
not compiled: a call to it is an actor hop, resolved like any handler. `__flows__ = [...]` (or
`@flow`) makes several functions flows; calls between them are sub-flows. Module-level constants
are evaluated when the flow compiles (`os.getenv(name, default)` included) and inlined.

What a flow may contain (`p` is the payload parameter):

- actor calls `p = f(p)`, `p = await f(p)`, `p = c.method(p)` after `c = Cls()` (zero arguments,
  in the flow or at module level), `p = module.f(p)` for an imported module of handlers;
- payload mutations: `p["k"] = expr`, `p["n"] += 1`, nested subscripts, `del p["k"]`,
  `p = {**p, ...}`; expressions may use `p`, loop/except variables, constants and pure builtins;
  a dataclass or pydantic state's `state.x` is the payload key "x" (its literal defaults fill in
  missing keys at the start); a dict or TypedDict state is indexed;
- `if/elif/else`, early `return p`, `while` (with `break`/`continue`, `else` not allowed) under a
  run-time iteration guard, `for x in <expr>:` loops, `try/except [Type [as e]]/else/finally`,
  a bare `raise` in an except clause (the actor's error goes on with its type, message, MRO),
  `raise ValueError(...)`, `import asyncio`;
- fan-out: `p["k"] = [f(x) for x in <expr>]`, `p["k"] = [f(a), g(b)]`,
  `p["k"] = await asyncio.gather(f(a), g(b))`, `... gather(*(f(x) for x in <expr>))` (a list
  comprehension too), each optionally wrapped in `list(...)`: the host sends every item to its
  actor in parallel and merges the results back, in order, before the flow continues.

Everything else is rejected with the file, line, column and a hint. The compiler is pure: it reads
source text and returns a `FlowProgram`; `codegen` turns that into Python.
"""

from __future__ import annotations

import ast
import builtins
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .module import ModuleScope, NotConstant, literal_source, scan_module

#: Builtins a flow's expressions must not call: I/O, code execution and introspection of the
#: router's own namespace. Every other builtin (len, sorted, pow, ...) may be used.
FORBIDDEN_BUILTINS = frozenset(
    {
        "open",
        "exec",
        "eval",
        "compile",
        "input",
        "print",
        "__import__",
        "breakpoint",
        "globals",
        "locals",
        "vars",
        "exit",
        "quit",
        "help",
        "setattr",
        "delattr",
        "memoryview",
    }
)

#: Builtins a flow's expressions may call.
PURE_BUILTINS = frozenset(
    name
    for name in dir(builtins)
    if name[:1].islower() and callable(getattr(builtins, name)) and name not in FORBIDDEN_BUILTINS
)

#: Constants and exception names an expression may name.
KNOWN_NAMES = frozenset({"True", "False", "None"}) | frozenset(
    n for n in dir(builtins) if isinstance(getattr(builtins, n), type) and n[0].isupper()
)

DEFAULT_MAX_ITERATIONS = 1000


class FlowCompileError(Exception):
    """A construct the flow DSL does not support, with where it is and how to fix it."""

    def __init__(self, path: str, node: ast.AST | None, message: str, hint: str = "") -> None:
        self.path = path
        self.line = getattr(node, "lineno", 0) or 0
        self.column = (getattr(node, "col_offset", 0) or 0) + 1
        self.message = message
        self.hint = hint
        text = f"{path}:{self.line}:{self.column}: {message}"
        if hint:
            text += f"\n  hint: {hint}"
        super().__init__(text)


# --- the program --------------------------------------------------------------------------------


@dataclass
class Goto:
    target: str


@dataclass
class Branch:
    condition: str
    then: str
    otherwise: str


@dataclass
class Call:
    #: ("handler", name) resolved at run time, or ("actor", name) for a sub-flow's entry router.
    target: tuple[str, str]
    after: str


@dataclass
class FanOut:
    #: Python source of each key of the payload path the results go to.
    target_keys: list[str]
    #: Explicit items: (target, argument source).
    items: list[tuple[tuple[str, str], str]] = field(default_factory=list)
    #: Comprehension items: (target, loop variable, iterable source, argument source).
    comprehension: tuple[tuple[str, str], str, str, str] | None = None
    after: str = ""


@dataclass
class End:
    pass


Terminator = Goto | Branch | Call | FanOut | End


@dataclass
class Block:
    """Straight-line flow code (`ops`) and where control goes next (`term`)."""

    id: str
    line: int
    kind: str
    ops: list[str] = field(default_factory=list)
    term: Terminator | None = None
    #: Loop and except variables visible here: name -> "value" | "error".
    scope: dict[str, str] = field(default_factory=dict)
    #: Active try frames, outermost first: (except block id, error names).
    frames: list[tuple[str, list[str]]] = field(default_factory=list)


@dataclass
class Flow:
    """One compiled flow function."""

    name: str
    param: str
    line: int
    blocks: dict[str, Block]
    start: str
    end: str
    #: Blocks a message can arrive at (each gets a router actor), in a stable order.
    entries: list[str] = field(default_factory=list)
    #: Router actor (kebab-case) and Python function name of each entry block.
    routers: dict[str, tuple[str, str]] = field(default_factory=dict)
    #: Handler names this flow calls, in first-use order.
    handlers: list[str] = field(default_factory=list)
    #: Other flows of the same file this flow calls.
    subflows: list[str] = field(default_factory=list)


@dataclass
class FlowProgram:
    """Every flow of one file."""

    path: str
    flows: list[Flow]
    max_iterations: int = DEFAULT_MAX_ITERATIONS
    #: Module-level constants the flows use, as inlined (name -> value).
    constants: dict[str, Any] = field(default_factory=dict)
    #: Environment variables read by the constants (name -> value, None when unset).
    env_reads: dict[str, str | None] = field(default_factory=dict)
    #: Things that compile but look wrong (a loop whose condition nothing in it changes).
    warnings: list[str] = field(default_factory=list)

    @property
    def handlers(self) -> list[str]:
        seen: list[str] = []
        for flow in self.flows:
            seen += [h for h in flow.handlers if h not in seen]
        return seen


def kebab(name: str) -> str:
    """`review_flow` -> `review-flow`, `TextCleaner.score` -> `text-cleaner-score`."""
    name = re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name)
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def snake(name: str) -> str:
    return kebab(name).replace("-", "_")


# --- compiling ----------------------------------------------------------------------------------


@dataclass
class _Loop:
    continue_to: str
    break_to: str
    cleanup: list[str]
    has_break: bool = False
    #: How many `finally` blocks were open when the loop started (break/continue run the rest).
    finally_depth: int = 0


@dataclass
class _Finally:
    """An open `try ... finally`: its body runs on every way out of the try statement."""

    body: list[ast.stmt]
    #: The try frames outside the statement (those the finally code runs under).
    frames: list[tuple[str, list[str]]]


#: Methods of a dict: on a dict (or TypedDict) state, `p.get(...)` is a method call.
DICT_METHODS = frozenset(n for n in dir(dict) if not n.startswith("_"))


class _FlowBuilder:
    def __init__(
        self,
        path: str,
        fn: ast.FunctionDef | ast.AsyncFunctionDef,
        flows: set[str],
        module: ModuleScope | None = None,
        check_loops: bool = True,
    ):
        self.path = path
        self.fn = fn
        self.flows = flows
        self.module = module or ModuleScope(path=path, environ={})
        self.check_loops = check_loops
        self.warnings: list[str] = []
        self.constants_used: dict[str, Any] = {}
        args = fn.args
        if (
            len(args.args) != 1
            or args.posonlyargs
            or args.kwonlyargs
            or args.vararg
            or args.kwarg
            or args.defaults
        ):
            self.fail(
                fn,
                f"flow {fn.name!r} must take exactly one parameter, the payload",
                f"def {fn.name}(p: dict) -> dict:",
            )
        for decorator in fn.decorator_list:
            target = decorator.func if isinstance(decorator, ast.Call) else decorator
            if ast.unparse(target).split(".")[-1] != "flow":
                self.fail(decorator, "flows cannot be decorated (other than @flow)")
        self.param = args.args[0].arg
        if self.param.startswith("_"):
            self.fail(
                args.args[0],
                f"the payload parameter may not be named {self.param!r}",
                "names starting with '_' belong to the generated routers; use p",
            )
        self.blocks: dict[str, Block] = {}
        # Class handlers bound at module level (`classifier = TextClassifier()`) are usable too.
        self.instances: dict[str, str] = dict(self.module.instances)
        self.handlers: list[str] = []
        self.subflows: list[str] = []
        self.loops: list[_Loop] = []
        self.finally_stack: list[_Finally] = []
        #: State keys holding the error each enclosing except clause handles (for bare `raise`).
        self.handling: list[str] = []
        self.has_return = False
        self.end = self.new_block(fn.end_lineno or fn.lineno, "end")
        self.end.term = End()
        # A dataclass or pydantic state: `state.x` is the payload's key "x"; its class's literal
        # defaults fill in missing keys when the flow starts, as constructing it would.
        self.attribute_state = self.module.attribute_state(fn)
        self.state_defaults: dict[str, Any] = {}
        if self.attribute_state:
            cls = self.module.state_class(fn)
            if cls is not None:
                self.state_defaults = self.module.state_defaults(cls)
        self.statements = self.prepare(fn)

    # the flow's source, made concrete

    def prepare(self, fn: ast.FunctionDef | ast.AsyncFunctionDef) -> list[ast.stmt]:
        """The flow's body with module-level constants inlined as literals and, for a state with
        fields, `state.x` written as `state["x"]`."""
        bound = {self.param}
        for node in ast.walk(fn):
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store | ast.Del):
                bound.add(node.id)
            elif isinstance(node, ast.ExceptHandler) and node.name:
                bound.add(node.name)
        builder = self

        class Rewrite(ast.NodeTransformer):
            def visit_Call(self, node: ast.Call) -> ast.AST:
                # A call target stays a name: `f(p)` is an actor, never an inlined constant.
                if not isinstance(node.func, ast.Name):
                    node.func = self.visit(node.func)
                node.args = [self.visit(a) for a in node.args]
                node.keywords = [self.visit(k) for k in node.keywords]
                return node

            def visit_Name(self, node: ast.Name) -> ast.AST:
                if (
                    isinstance(node.ctx, ast.Load)
                    and node.id not in bound
                    and node.id in builder.module.constants
                ):
                    value = builder.module.constants[node.id]
                    builder.constants_used[node.id] = value
                    try:
                        source = literal_source(value, node)
                    except NotConstant as exc:
                        builder.fail(node, f"constant {node.id!r}: {exc.why}")
                    literal = ast.parse(source, mode="eval").body
                    for sub in ast.walk(literal):
                        ast.copy_location(sub, node)
                    return literal
                return node

            def visit_Attribute(self, node: ast.Attribute) -> ast.AST:
                if (
                    builder.attribute_state
                    and isinstance(node.value, ast.Name)
                    and node.value.id == builder.param
                ):
                    index = ast.Subscript(
                        value=ast.Name(id=builder.param, ctx=ast.Load()),
                        slice=ast.Constant(node.attr),
                        ctx=node.ctx,
                    )
                    for sub in ast.walk(index):
                        ast.copy_location(sub, node)
                    return index
                self.generic_visit(node)
                return node

        body = [Rewrite().visit(stmt) for stmt in fn.body]
        return [ast.fix_missing_locations(stmt) for stmt in body]

    # blocks

    def fail(self, node: ast.AST | None, message: str, hint: str = "") -> None:
        raise FlowCompileError(self.path, node, message, hint)

    def new_block(self, line: int, kind: str, like: Block | None = None) -> Block:
        block = Block(id=f"b{len(self.blocks)}", line=line, kind=kind)
        if like is not None:
            block.scope = dict(like.scope)
            block.frames = list(like.frames)
        self.blocks[block.id] = block
        return block

    def build(self) -> Flow:
        start = self.new_block(self.fn.lineno, "start")
        if self.state_defaults:
            start.ops.append(
                f"_rt.state_defaults({self.param}, {literal_source(self.state_defaults)})"
            )
        last = self.body(self.statements, start)
        if last is not None:
            self.fail(
                self.fn.body[-1],
                f"flow {self.fn.name!r} can end without returning its payload",
                f"end the flow (and every path through it) with `return {self.param}`",
            )
        flow = Flow(
            name=self.fn.name,
            param=self.param,
            line=self.fn.lineno,
            blocks=self.blocks,
            start=start.id,
            end=self.end.id,
            handlers=self.handlers,
            subflows=self.subflows,
        )
        _finish(flow)
        return flow

    def body(self, statements: list[ast.stmt], cur: Block | None) -> Block | None:
        last = cur
        for stmt in statements:
            if cur is None:
                # Unreachable code after return/break/continue: still checked, never run.
                cur = self.new_block(stmt.lineno, "dead", like=last)
            last = cur
            cur = self.statement(stmt, cur)
        return cur

    @staticmethod
    def join_scopes(join: Block, *ends: Block | None) -> None:
        """Loop variables bound on any path stay visible after it, as in Python."""
        for end in ends:
            if end is not None:
                for var, kind in end.scope.items():
                    if kind == "value":
                        join.scope.setdefault(var, kind)

    def continue_block(self, cur: Block, stmt: ast.stmt, kind: str) -> Block:
        return self.new_block(stmt.end_lineno or stmt.lineno, kind, like=cur)

    # statements

    def statement(self, stmt: ast.stmt, cur: Block) -> Block | None:
        if cur.kind == "seq?" and not cur.ops and cur.term is None:
            # A block that starts at this statement is named after it (routers' names).
            cur.line, cur.kind = stmt.lineno, _kind_of(stmt)
        if isinstance(stmt, ast.Expr):
            if isinstance(stmt.value, ast.Constant):
                return cur  # a docstring, comment string or `...`
            value = stmt.value
            if (
                isinstance(value, ast.Call)
                and isinstance(value.func, ast.Attribute)
                and self._rooted_in_payload(value.func.value)
            ):
                # An in-place method of a payload value: p["tags"].append(...), p.update(...).
                self.check_expression(value, cur)
                cur.ops.append(ast.unparse(stmt))
                return cur
            if self.actor_call(stmt.value) is not None:
                self.fail(
                    stmt,
                    "the actor's result is discarded",
                    f"write `{self.param} = {ast.unparse(stmt.value)}`",
                )
            self.fail(stmt, "an expression statement has no effect on the payload")
        if isinstance(stmt, ast.Pass):
            return cur
        if isinstance(stmt, ast.Assign | ast.AnnAssign | ast.AugAssign):
            return self.assignment(stmt, cur)
        if isinstance(stmt, ast.Delete):
            for target in stmt.targets:
                self.check_payload_target(target, stmt)
            cur.ops.append(ast.unparse(stmt))
            return cur
        if isinstance(stmt, ast.If):
            return self.if_statement(stmt, cur)
        if isinstance(stmt, ast.While):
            return self.while_statement(stmt, cur)
        if isinstance(stmt, ast.For | ast.AsyncFor):
            return self.for_statement(stmt, cur)
        if isinstance(stmt, ast.Try):
            return self.try_statement(stmt, cur)
        if isinstance(stmt, ast.Return):
            if stmt.value is None or not (
                isinstance(stmt.value, ast.Name) and stmt.value.id == self.param
            ):
                self.fail(
                    stmt,
                    f"a flow returns its payload: `return {self.param}`",
                    f"set fields on {self.param} first, then `return {self.param}`",
                )
            self.has_return = True
            if self.finally_stack:
                # `return p` inside try/finally: the finally code runs first, and the flow
                # returns the payload object `return` named (as Python does, a finally that
                # rebinds p does not change what is returned; one that mutates it does).
                held = f"_ret{stmt.lineno}_{stmt.col_offset}"
                cur.ops.append(f"_s['vars'][{held!r}] = {self.param}")
                last = self.run_finally(cur, 0)
                if last is None:
                    return None
                last.ops.append(f"{self.param} = _s['vars'].pop({held!r})")
                cur = last
            cur.term = Goto(self.end.id)
            return None
        if isinstance(stmt, ast.Break | ast.Continue):
            if not self.loops:
                self.fail(stmt, f"'{type(stmt).__name__.lower()}' outside a loop")
            loop = self.loops[-1]
            if isinstance(stmt, ast.Break):
                loop.has_break = True
            last = self.run_finally(cur, loop.finally_depth)
            if last is None:
                return None
            if isinstance(stmt, ast.Break):
                last.ops += loop.cleanup
                last.term = Goto(loop.break_to)
            else:
                last.term = Goto(loop.continue_to)
            return None
        if isinstance(stmt, ast.Import | ast.ImportFrom):
            if isinstance(stmt, ast.Import) and all(a.name == "asyncio" for a in stmt.names):
                return cur  # `import asyncio` for gather: nothing to do in a router
            self.fail(
                stmt,
                "flows cannot import (other than `import asyncio`)",
                "import at module level; an imported handler called from the flow is an actor",
            )
        if isinstance(stmt, ast.Global | ast.Nonlocal):
            self.fail(
                stmt,
                f"'{type(stmt).__name__.lower()}' is not supported in a flow",
                f"all state travels in the payload {self.param}",
            )
        if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            self.fail(
                stmt,
                "nested definitions are not supported in a flow",
                "define handlers in their own modules; each is an actor",
            )
        if isinstance(stmt, ast.With | ast.AsyncWith):
            self.fail(stmt, "'with' is not supported in a flow")
        if isinstance(stmt, ast.Raise):
            self.raise_statement(stmt, cur)
            return None
        if isinstance(stmt, ast.Match):
            self.fail(stmt, "'match' is not supported in a flow", "use if/elif/else")
        self.fail(stmt, f"{type(stmt).__name__} statements are not supported in a flow")
        return None

    def run_finally(self, cur: Block, down_to: int) -> Block | None:
        """Runs the bodies of the open `finally` blocks above `down_to` (innermost first) after
        `cur`, as a return/break/continue leaving them does; returns the block after them, or
        None when a finally body itself leaves (return/break/continue)."""
        opened = self.finally_stack[down_to:]
        saved = self.finally_stack
        try:
            for index in range(len(opened) - 1, -1, -1):
                fin = opened[index]
                # Code in a finally body sees only the finally blocks around its try statement.
                self.finally_stack = saved[: down_to + index]
                block = self.new_block(fin.body[0].lineno, "finally", like=cur)
                block.frames = list(fin.frames)
                cur.term = Goto(block.id)
                last = self.body(fin.body, block)
                if last is None:
                    return None
                cur = last
        finally:
            self.finally_stack = saved
        return cur

    def raise_statement(self, stmt: ast.Raise, cur: Block) -> None:
        """`raise` in an except clause re-raises the error it handles (an actor's error keeps its
        type, message and MRO); `raise ValueError(...)` raises from the router."""
        if stmt.exc is None:
            if not self.handling:
                self.fail(
                    stmt,
                    "a bare 'raise' is only allowed inside an except clause",
                    "raise inside a handler; its error goes to the error end or an except",
                )
            cur.ops.append(f"_rt.reraise(_s, {self.handling[-1]!r})")
        else:
            self.check_expression(stmt.exc, cur)
            if stmt.cause is not None:
                self.check_expression(stmt.cause, cur)
            cur.ops.append(ast.unparse(stmt))
        # Nothing after a raise runs; the term is never reached.
        cur.term = Goto(self.end.id)

    def assignment(self, stmt: ast.Assign | ast.AnnAssign | ast.AugAssign, cur: Block) -> Block:
        if isinstance(stmt, ast.Assign):
            if len(stmt.targets) != 1:
                self.fail(stmt, "chained assignment is not supported", "assign one target")
            target = stmt.targets[0]
        else:
            target = stmt.target
        value = stmt.value
        if isinstance(target, ast.Tuple | ast.List | ast.Starred):
            self.fail(
                target,
                "tuple targets are not supported",
                f"assign each field separately: {self.param}['a'] = ...; {self.param}['b'] = ...",
            )
        if value is None:
            self.fail(stmt, "an annotation without a value does nothing")
        assert value is not None
        # `c = Cls()`: a class handler, bound at compile time.
        if (
            isinstance(stmt, ast.Assign | ast.AnnAssign)
            and isinstance(target, ast.Name)
            and target.id != self.param
        ):
            if (
                isinstance(value, ast.Call)
                and isinstance(value.func, ast.Name)
                and value.func.id[:1].isupper()
                and value.func.id not in KNOWN_NAMES
            ):
                if value.args or value.keywords:
                    self.fail(
                        value,
                        f"class handler {value.func.id} is constructed with arguments",
                        "handler classes are constructed once with no arguments; give every "
                        "__init__ parameter a default",
                    )
                self.instances[target.id] = value.func.id
                return cur
            self.fail(
                target,
                f"assignment to {target.id!r}: a flow keeps no variables of its own",
                f"all state travels in the payload: {self.param}[{target.id!r}] = ...",
            )
        if isinstance(stmt, ast.Assign | ast.AnnAssign):
            call = self.actor_call(value)
            if call is not None:
                if not (isinstance(target, ast.Name) and target.id == self.param):
                    if self.fanout(target, value, stmt, cur):
                        return self._after_fanout
                    self.fail(
                        target,
                        "an actor's result replaces the payload",
                        f"write `{self.param} = {ast.unparse(value)}`",
                    )
                return self.call(stmt, value, call, cur)
            if self.fanout(target, value, stmt, cur):
                return self._after_fanout
        self.check_payload_target(target, stmt)
        self.check_expression(value, cur)
        if isinstance(target, ast.Subscript):
            self.check_expression(target, cur)
        cur.ops.append(ast.unparse(stmt))
        return cur

    def _rooted_in_payload(self, node: ast.expr) -> bool:
        while isinstance(node, ast.Subscript | ast.Attribute | ast.Call):
            node = node.func if isinstance(node, ast.Call) else node.value
        return isinstance(node, ast.Name) and node.id == self.param

    def check_payload_target(self, target: ast.expr, stmt: ast.stmt) -> None:
        node = target
        while isinstance(node, ast.Subscript):
            node = node.value
        if isinstance(node, ast.Attribute):
            self.fail(target, "attribute assignment is not supported", f"use {self.param}['key']")
        if not (isinstance(node, ast.Name) and node.id == self.param):
            self.fail(
                target,
                "only the payload can be assigned to",
                f"all state travels in the payload: {self.param}['key'] = ...",
            )

    def call(self, stmt: ast.stmt, value: ast.expr, target: tuple[str, str], cur: Block) -> Block:
        after = self.continue_block(cur, stmt, "seq")
        cur.term = Call(target, after.id)
        after.line = 0  # set by the next statement, or stays the call's end line
        after.kind = "seq?"
        return after

    # control flow

    def if_statement(self, stmt: ast.If, cur: Block) -> Block:
        self.check_expression(stmt.test, cur)
        then = self.new_block(stmt.body[0].lineno, "if", like=cur)
        join = self.new_block(stmt.end_lineno or stmt.lineno, "seq?", like=cur)
        join.line = 0
        otherwise = self.new_block(stmt.orelse[0].lineno, "else", like=cur) if stmt.orelse else join
        cur.term = Branch(ast.unparse(stmt.test), then.id, otherwise.id)
        end = self.body(stmt.body, then)
        if end is not None:
            end.term = Goto(join.id)
        self.join_scopes(join, end)
        if stmt.orelse:
            end = self.body(stmt.orelse, otherwise)
            if end is not None:
                end.term = Goto(join.id)
            self.join_scopes(join, end)
        return join

    def while_statement(self, stmt: ast.While, cur: Block) -> Block | None:
        if stmt.orelse:
            self.fail(
                stmt.orelse[0],
                "while ... else is not supported",
                "put the else code after the loop, guarded by a payload flag",
            )
        self.check_expression(stmt.test, cur)
        loop_id = f"W{stmt.lineno}"
        head = self.new_block(stmt.lineno, "while", like=cur)
        body = self.new_block(stmt.body[0].lineno, "loop", like=cur)
        after = self.new_block(stmt.end_lineno or stmt.lineno, "seq?", like=cur)
        after.line = 0
        cur.ops.append(f"_rt.loop_reset(_s, {loop_id!r})")
        cur.term = Goto(head.id)
        # The guard counts iterations (entries into the body), not condition checks.
        body.ops.append(f"_rt.loop_tick(_s, {loop_id!r}, _MAX_ITERATIONS)")
        head.term = Branch(ast.unparse(stmt.test), body.id, after.id)
        loop = _Loop(
            continue_to=head.id,
            break_to=after.id,
            cleanup=[],
            finally_depth=len(self.finally_stack),
        )
        self.loops.append(loop)
        returns_before = self.has_return
        self.has_return = False
        end = self.body(stmt.body, body)
        returned = self.has_return
        self.has_return = returns_before or returned
        self.loops.pop()
        if end is not None:
            end.term = Goto(head.id)
        self.join_scopes(after, end)
        if self.check_loops and _always_true(stmt.test) and not loop.has_break and not returned:
            self.fail(
                stmt,
                "this loop can never exit: its condition is always true and it has no "
                "break or return",
                "add a `break` (or `return`) under a condition on the payload, or compile with "
                "--disable-infinite-loop-check (the run-time iteration guard still applies)",
            )
        if self.check_loops:
            self.warn_static_loop(stmt)
        if _always_true(stmt.test) and not loop.has_break:
            return None  # only a `return` leaves this loop: nothing after it runs
        return after

    def warn_static_loop(self, stmt: ast.While) -> None:
        """Asya's infinite-loop check: a loop whose condition reads payload keys that nothing in
        its body can change (no assignment to them, no actor call, no rebinding) is reported."""
        keys = {
            n.slice.value
            for n in ast.walk(stmt.test)
            if isinstance(n, ast.Subscript)
            and isinstance(n.value, ast.Name)
            and n.value.id == self.param
            and isinstance(n.slice, ast.Constant)
        }
        if not keys or any(
            not (isinstance(n.slice, ast.Constant))
            for n in ast.walk(stmt.test)
            if isinstance(n, ast.Subscript)
        ):
            return
        for node in ast.walk(ast.Module(body=stmt.body, type_ignores=[])):
            if isinstance(node, ast.Call | ast.Return | ast.Break | ast.Raise | ast.Delete):
                return  # an actor (or a method of the payload) may change it, or the loop exits
            if (
                isinstance(node, ast.Name)
                and node.id == self.param
                and isinstance(node.ctx, ast.Store)
            ):
                return
            if (
                isinstance(node, ast.Subscript)
                and isinstance(node.ctx, ast.Store)
                and (not isinstance(node.slice, ast.Constant) or node.slice.value in keys)
            ):
                return
        listed = ", ".join(repr(k) for k in sorted(keys, key=str))
        self.warnings.append(
            f"{self.path}:{stmt.lineno}:{stmt.col_offset + 1}: possible infinite loop: its "
            f"condition reads {self.param}[{listed}], which nothing in the loop changes "
            "(--disable-infinite-loop-check turns this check off)"
        )

    def for_statement(self, stmt: ast.For | ast.AsyncFor, cur: Block) -> Block:
        if stmt.orelse:
            self.fail(stmt.orelse[0], "for ... else is not supported")
        if not isinstance(stmt.target, ast.Name):
            self.fail(
                stmt.target,
                "tuple targets are not supported in for loops",
                f"loop over items and index them: for item in {self.param}['items']:",
            )
        assert isinstance(stmt.target, ast.Name)
        var = stmt.target.id
        if var == self.param or var in self.instances:
            self.fail(stmt.target, f"the loop variable may not be named {var!r}")
        self.check_expression(stmt.iter, cur)
        loop_id = f"F{stmt.lineno}"
        cur.ops.append(f"_rt.loop_reset(_s, {loop_id!r})")
        cur.ops.append(f"_rt.for_init(_s, {loop_id!r}, {ast.unparse(stmt.iter)})")
        head = self.new_block(stmt.lineno, "for", like=cur)
        cur.term = Goto(head.id)
        body = self.new_block(stmt.body[0].lineno, "loop", like=cur)
        body.scope[var] = "value"
        body.ops.append(f"_rt.loop_tick(_s, {loop_id!r}, _MAX_ITERATIONS)")
        after = self.new_block(stmt.end_lineno or stmt.lineno, "seq?", like=cur)
        after.line = 0
        after.scope[var] = "value"
        head.term = Branch(f"_rt.for_next(_s, {loop_id!r}, {var!r})", body.id, after.id)
        cleanup = [f"_rt.for_done(_s, {loop_id!r})"]
        self.loops.append(
            _Loop(
                continue_to=head.id,
                break_to=after.id,
                cleanup=cleanup,
                finally_depth=len(self.finally_stack),
            )
        )
        end = self.body(stmt.body, body)
        self.loops.pop()
        if end is not None:
            end.term = Goto(head.id)
        self.join_scopes(after, end)
        return after

    def try_statement(self, stmt: ast.Try, cur: Block) -> Block | None:
        """try/except/else/finally. An actor's error inside the try goes (through the try frame
        the router sets) to the `except` dispatch router; errors of the flow's own code are
        dispatched inline. With `finally`, a catch-all frame outside the except clauses runs a
        copy of the finally code and re-raises; every other way out runs its own copy."""
        outer_frames = list(cur.frames)
        join = self.new_block(stmt.end_lineno or stmt.lineno, "seq?", like=cur)
        join.line = 0
        fin_exc: Block | None = None
        fin: _Finally | None = None
        if stmt.finalbody:
            fin_exc = self.new_block(stmt.finalbody[0].lineno, "finally", like=cur)
            fin = _Finally(stmt.finalbody, outer_frames)
        # Frames of the except clauses and the else code: a finally still runs after them.
        guarded = [*outer_frames, (fin_exc.id, ["*"])] if fin_exc is not None else outer_frames
        dispatch: Block | None = None
        clauses: list[tuple[list[str], str | None, ast.ExceptHandler]] = []
        names_union: list[str] = []
        if stmt.handlers:
            dispatch = self.new_block(stmt.handlers[0].lineno, "except", like=cur)
            dispatch.frames = list(guarded)
            for handler in stmt.handlers:
                names = self.except_names(handler)
                clauses.append((names, handler.name, handler))
                names_union += [n for n in names if n not in names_union]
        body = self.new_block(stmt.body[0].lineno, "try", like=cur)
        body.frames = list(guarded)
        if dispatch is not None:
            body.frames.append((dispatch.id, names_union))
        cur.term = Goto(body.id)
        normal_exit = join
        if fin is not None:
            self.finally_stack.append(fin)
            normal_exit = self.new_block(stmt.finalbody[0].lineno, "finally", like=cur)
        ends: list[Block | None] = []
        end = self.body(stmt.body, body)
        if end is not None and stmt.orelse:
            orelse = self.new_block(stmt.orelse[0].lineno, "else", like=cur)
            orelse.frames = list(guarded)
            end.term = Goto(orelse.id)
            end = self.body(stmt.orelse, orelse)
        if end is not None:
            end.term = Goto(normal_exit.id)
        ends.append(end)
        test = dispatch
        for index, (names, var, handler) in enumerate(clauses):
            assert test is not None
            clause = self.new_block(handler.body[0].lineno, "handler", like=cur)
            clause.frames = list(guarded)
            if var:
                if var == self.param or var in self.instances:
                    self.fail(handler, f"the except variable may not be named {var!r}")
                clause.scope[var] = "error"
            held = f"_exc{handler.lineno}_{handler.col_offset}"
            reraises = any(isinstance(n, ast.Raise) and n.exc is None for n in ast.walk(handler))
            rest = self.new_block(handler.lineno, "except", like=cur)
            rest.frames = list(guarded)
            hold = f", {held!r}" if reraises else ""
            test.term = Branch(f"_rt.caught(_s, {names!r}, {var!r}{hold})", clause.id, rest.id)
            self.handling.append(held)
            try:
                end = self.body(handler.body, clause)
            finally:
                self.handling.pop()
            if end is not None:
                if reraises:
                    end.ops.append(f"_s['vars'].pop({held!r}, None)")
                end.term = Goto(normal_exit.id)
            ends.append(end)
            test = rest
            if index == len(clauses) - 1:
                if fin_exc is not None:
                    rest.term = Goto(fin_exc.id)
                else:
                    # Not reached: the host and the inline dispatch only bring matching errors.
                    rest.ops.append("_rt.reraise(_s)")
                    rest.term = Goto(join.id)
        if fin is not None:
            assert fin_exc is not None
            self.finally_stack.pop()
            # The normal way out: the finally code once, then on (unless every path left the
            # try statement by return/break/continue, each running its own copy).
            last: Block | None = None
            if any(e is not None for e in ends):
                normal_exit.frames = list(outer_frames)
                last = self.body(stmt.finalbody, normal_exit)
                if last is not None:
                    last.term = Goto(join.id)
            # The error way out: keep the error (the finally code may call actors), run the
            # finally code, raise the error again.
            fin_exc.frames = list(outer_frames)
            held = f"_fin{stmt.lineno}_{stmt.col_offset}"
            fin_exc.ops.append(f"_rt.hold_error(_s, {held!r})")
            self.handling.append(held)
            try:
                last_exc = self.body(stmt.finalbody, fin_exc)
            finally:
                self.handling.pop()
            if last_exc is not None:
                last_exc.ops.append(f"_rt.reraise(_s, {held!r})")
                last_exc.term = Goto(self.end.id)
            for e in ends:
                self.join_scopes(join, e)
            if last is None:
                return None
            return join
        for e in ends:
            self.join_scopes(join, e)
        if all(e is None for e in ends):
            return None
        return join

    def except_names(self, handler: ast.ExceptHandler) -> list[str]:
        if handler.type is None:
            return ["*"]
        types = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
        names = []
        for t in types:
            if isinstance(t, ast.Name):
                names.append("*" if t.id == "BaseException" else t.id)
            elif isinstance(t, ast.Attribute):
                names.append(t.attr)  # module.Error matches by class name, like the MRO
            else:
                self.fail(
                    t, "except clauses name exception types", "except (ValueError, KeyError) as e:"
                )
        return names

    # actor calls and fan-out

    def actor_call(self, value: ast.expr) -> tuple[str, str] | None:
        """The target if `value` is `f(p)`, `await f(p)` or `c.m(p)`; errors for near misses."""
        node = value.value if isinstance(value, ast.Await) else value
        if not isinstance(node, ast.Call):
            return None
        target = self.callee(node.func)
        if target is None:
            return None
        if node.keywords or len(node.args) != 1:
            self.fail(
                node,
                f"an actor call takes exactly the payload: {ast.unparse(node.func)}({self.param})",
            )
        arg = node.args[0]
        if isinstance(arg, (ast.Call, ast.Await)):
            self.fail(
                arg,
                "nested calls are not supported",
                f"call one actor per statement: {self.param} = g({self.param}); "
                f"{self.param} = f({self.param})",
            )
        if not (isinstance(arg, ast.Name) and arg.id == self.param):
            self.fail(
                arg,
                f"an actor receives the whole payload {self.param!r}",
                f"copy what it needs into {self.param} first, or fan out with "
                f"{self.param}['out'] = [f(x) for x in {self.param}['items']]",
            )
        return target

    def callee(self, func: ast.expr) -> tuple[str, str] | None:
        """The actor a call expression names, or None for builtins and methods of values."""
        if isinstance(func, ast.Name):
            if func.id in PURE_BUILTINS or func.id in KNOWN_NAMES or func.id in FORBIDDEN_BUILTINS:
                return None
            if func.id == self.fn.name:
                self.fail(func, f"flow {func.id!r} calls itself", "use a while loop")
            if func.id in self.flows:
                if func.id not in self.subflows:
                    self.subflows.append(func.id)
                return ("actor", f"start-{kebab(func.id)}")
            if func.id[:1].isupper():
                self.fail(
                    func,
                    f"class {func.id} is called with the payload",
                    f"bind it first: c = {func.id}(); then {self.param} = c.method({self.param})",
                )
            if func.id in self.module.constants or func.id in self.module.not_constant:
                self.fail(
                    func,
                    f"{func.id!r} is a module-level name, not an actor",
                    "an actor is a function (or Class.method) called with the payload",
                )
            # A function of this file (a handler stub) or an imported one is an actor, found
            # at run time by its name (`from m import f as g`: by f).
            name = self.module.imported.get(func.id, ("", func.id))[1]
            self._use(name)
            return ("handler", name)
        if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
            cls = self.instances.get(func.value.id)
            if cls is not None:
                name = f"{cls}.{func.attr}"
                self._use(name)
                return ("handler", name)
            if func.value.id == "asyncio":
                return None
            module = self.module.modules.get(func.value.id)
            if module is not None and module.split(".")[0] not in sys.stdlib_module_names:
                # `import handlers` ... `p = handlers.clean_text(p)`: handler handlers.clean_text.
                name = f"{module}.{func.attr}"
                self._use(name)
                return ("handler", name)
        return None

    def _use(self, name: str) -> None:
        if name not in self.handlers:
            self.handlers.append(name)

    _after_fanout: Block

    def fanout(self, target: ast.expr, value: ast.expr, stmt: ast.stmt, cur: Block) -> bool:
        """Compiles `p[k] = [f(x) for x in ...]`, `[f(a), g(b)]`, `await asyncio.gather(...)`
        (each optionally wrapped in `list(...)`); False if `value` is none of them."""
        spec: FanOut | None = None
        node = value
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "list"
            and len(node.args) == 1
            and not node.keywords
            and isinstance(node.args[0], ast.Await | ast.ListComp | ast.List)
        ):
            node = node.args[0]  # list(await asyncio.gather(...)): gather's result is a list
        if isinstance(node, ast.Await):
            gather = node.value
            if not (
                isinstance(gather, ast.Call)
                and isinstance(gather.func, ast.Attribute)
                and isinstance(gather.func.value, ast.Name)
                and gather.func.value.id == "asyncio"
                and gather.func.attr == "gather"
            ):
                return False
            if gather.keywords:
                self.fail(gather, "asyncio.gather options are not supported in a flow")
            if len(gather.args) == 1 and isinstance(gather.args[0], ast.Starred):
                comp = gather.args[0].value
                if not isinstance(comp, ast.ListComp | ast.GeneratorExp):
                    self.fail(
                        comp,
                        "gather(*...) needs a comprehension of actor calls",
                        f"asyncio.gather(*(f(x) for x in {self.param}['items']))",
                    )
                assert isinstance(comp, ast.ListComp | ast.GeneratorExp)
                spec = self.comprehension(comp, cur)
            else:
                spec = FanOut(target_keys=[])
                for arg in gather.args:
                    if isinstance(arg, ast.Starred):
                        self.fail(arg, "mix of starred and plain gather arguments")
                    spec.items.append(self.fanout_item(arg, cur, None))
        elif isinstance(node, ast.ListComp):
            if not self._calls_actor(node.elt):
                return False
            spec = self.comprehension(node, cur)
        elif isinstance(node, ast.List) and any(self._calls_actor(e) for e in node.elts):
            # `p["a"] = [f(p["x"]), g(p["x"])]`: one item per actor call, in parallel.
            spec = FanOut(target_keys=[])
            for elt in node.elts:
                if not self._calls_actor(elt):
                    self.fail(
                        elt,
                        "every item of a fan-out list is an actor call",
                        "set the other values after the fan-out",
                    )
                spec.items.append(self.fanout_item(elt, cur, None))
        else:
            return False
        if not isinstance(target, ast.Subscript):
            self.fail(
                target,
                "fan-out results go into the payload",
                f"{self.param}['results'] = [f(x) for x in {self.param}['items']]",
            )
        keys = []
        node_t: ast.expr = target
        while isinstance(node_t, ast.Subscript):
            self.check_expression(node_t.slice, cur)
            keys.append(ast.unparse(node_t.slice))
            node_t = node_t.value
        if not (isinstance(node_t, ast.Name) and node_t.id == self.param):
            self.fail(target, "fan-out results go into the payload")
        spec.target_keys = list(reversed(keys))
        after = self.continue_block(cur, stmt, "fanin")
        spec.after = after.id
        cur.term = spec
        self._after_fanout = after
        return True

    def _calls_actor(self, node: ast.expr) -> bool:
        if isinstance(node, ast.Await):
            node = node.value
        if not isinstance(node, ast.Call):
            return False
        if isinstance(node.func, ast.Name):
            return (
                node.func.id not in PURE_BUILTINS
                and node.func.id not in KNOWN_NAMES
                and node.func.id not in FORBIDDEN_BUILTINS
            )
        if not (isinstance(node.func, ast.Attribute) and isinstance(node.func.value, ast.Name)):
            return False
        owner = node.func.value.id
        module = self.module.modules.get(owner)
        return owner in self.instances or (
            module is not None and module.split(".")[0] not in sys.stdlib_module_names
        )

    def comprehension(self, comp: ast.ListComp | ast.GeneratorExp, cur: Block) -> FanOut:
        if len(comp.generators) != 1:
            self.fail(comp, "fan-out over one iterable only")
        gen = comp.generators[0]
        if gen.ifs or gen.is_async:
            self.fail(
                comp,
                "fan-out comprehensions cannot filter",
                "filter the items into the payload first",
            )
        if not isinstance(gen.target, ast.Name):
            self.fail(gen.target, "tuple targets are not supported")
        assert isinstance(gen.target, ast.Name)
        var = gen.target.id
        self.check_expression(gen.iter, cur)
        target, arg = self.fanout_item(comp.elt, cur, var)
        return FanOut(target_keys=[], comprehension=(target, var, ast.unparse(gen.iter), arg))

    def fanout_item(
        self, node: ast.expr, cur: Block, var: str | None
    ) -> tuple[tuple[str, str], str]:
        if isinstance(node, ast.Await):
            node = node.value
        if not isinstance(node, ast.Call):
            self.fail(node, "each fan-out item is an actor call: f(x)")
        assert isinstance(node, ast.Call)
        target = self.callee(node.func)
        if target is None:
            self.fail(node, f"{ast.unparse(node.func)} is not an actor")
        assert target is not None
        if node.keywords or len(node.args) != 1:
            self.fail(node, "a fan-out actor call takes exactly one argument")
        arg = node.args[0]
        if isinstance(arg, ast.Call) and self._calls_actor(arg):
            self.fail(
                arg,
                "nested calls are not supported",
                "fan out to one actor, then process its results in a next step",
            )
        extra = {var} if var else set()
        self.check_expression(arg, cur, extra)
        return target, ast.unparse(arg)

    # expressions

    def check_expression(self, node: ast.expr, cur: Block, extra: set[str] | None = None) -> None:
        """Rejects free variables, actor calls and side channels inside an expression."""
        bound = set(extra or ())
        for comp in ast.walk(node):
            if isinstance(comp, ast.ListComp | ast.SetComp | ast.GeneratorExp | ast.DictComp):
                for gen in comp.generators:
                    bound |= {n.id for n in ast.walk(gen.target) if isinstance(n, ast.Name)}
        for sub in ast.walk(node):
            if isinstance(sub, ast.Lambda):
                self.fail(sub, "lambda is not supported in a flow")
            if isinstance(sub, ast.NamedExpr):
                self.fail(
                    sub, "':=' is not supported in a flow", f"all state travels in {self.param}"
                )
            if isinstance(sub, ast.Await):
                self.fail(sub, "await is only allowed in `p = await f(p)` and asyncio.gather")
            if (
                isinstance(sub, ast.Call)
                and isinstance(sub.func, ast.Name)
                and sub.func.id in FORBIDDEN_BUILTINS
            ):
                self.fail(
                    sub,
                    f"{sub.func.id}() is not allowed in a flow",
                    "flows only route; do I/O inside a handler",
                )
            if isinstance(sub, ast.Call) and self.callee(sub.func) is not None:
                self.fail(
                    sub,
                    "actor calls cannot be nested inside expressions",
                    f"call the actor as its own statement: {self.param} = "
                    f"{ast.unparse(sub.func)}({self.param})",
                )
            if isinstance(sub, ast.Name) and isinstance(sub.ctx, ast.Load):
                name = sub.id
                if (
                    name == self.param
                    or name in cur.scope
                    or name in bound
                    or name in PURE_BUILTINS
                    or name in KNOWN_NAMES
                ):
                    continue
                if name in self.instances:
                    self.fail(
                        sub,
                        f"handler instance {name!r} can only be called: "
                        f"{self.param} = {name}.method({self.param})",
                    )
                module = self.module
                if name in module.not_constant:
                    where, why = module.not_constant[name]
                    self.fail(
                        sub,
                        f"module-level name {name!r} cannot be computed when the flow compiles "
                        f"(line {getattr(where, 'lineno', 0)}: {why})",
                        "a flow inlines module-level constants: literals, arithmetic, "
                        "int/str/... of them and os.getenv(name, default)",
                    )
                if name in module.imported or name in module.modules:
                    self.fail(
                        sub,
                        f"imported name {name!r} is not a value the routers have",
                        "define the constant in this file (THRESHOLD = int(os.getenv('T', 85))) "
                        "or call the imported handler as an actor",
                    )
                if name in module.functions or name in module.classes:
                    self.fail(
                        sub,
                        f"{name!r} is a function or class of this file: a flow can only call it "
                        f"as an actor, {self.param} = {name}({self.param})",
                    )
                self.fail(
                    sub,
                    f"free variable {name!r}",
                    f"a flow has no variables besides its payload: read {self.param}[{name!r}]",
                )


def _kind_of(stmt: ast.stmt) -> str:
    if isinstance(stmt, ast.If):
        return "if"
    if isinstance(stmt, ast.While):
        return "while"
    if isinstance(stmt, ast.For | ast.AsyncFor):
        return "for"
    if isinstance(stmt, ast.Try):
        return "try"
    if isinstance(stmt, ast.Return):
        return "return"
    value = getattr(stmt, "value", None)
    if isinstance(value, ast.ListComp) or (
        isinstance(value, ast.Await)
        and isinstance(value.value, ast.Call)
        and isinstance(value.value.func, ast.Attribute)
        and value.value.func.attr == "gather"
    ):
        return "fanout"
    if isinstance(value, ast.Await) or (
        isinstance(value, ast.Call)
        and isinstance(stmt, ast.Assign)
        and not (isinstance(value.func, ast.Name) and value.func.id in PURE_BUILTINS)
        and not isinstance(stmt.targets[0], ast.Subscript)
    ):
        return "call"
    return "seq"


def _reject_recursion(
    path: str, flows: list[Flow], nodes: dict[str, ast.FunctionDef | ast.AsyncFunctionDef]
) -> None:
    """Flows calling each other in a cycle would share one flow's state in the envelope."""
    calls = {f.name: f.subflows for f in flows}

    def visit(name: str, stack: list[str]) -> None:
        for callee in calls.get(name, []):
            if callee in stack:
                cycle = " -> ".join([*stack[stack.index(callee) :], callee])
                raise FlowCompileError(
                    path,
                    nodes[name],
                    f"flows call each other in a cycle: {cycle}",
                    "use a while loop inside one flow",
                )
            visit(callee, [*stack, callee])

    for flow in flows:
        visit(flow.name, [flow.name])


def _always_true(test: ast.expr) -> bool:
    return isinstance(test, ast.Constant) and bool(test.value)


def _finish(flow: Flow) -> None:
    """Collapses empty blocks, finds entry blocks and names their routers."""
    blocks = flow.blocks

    def target(block_id: str) -> str:
        seen = set()
        while True:
            block = blocks[block_id]
            if block.ops or not isinstance(block.term, Goto) or block_id in seen:
                return block_id
            if block.id == flow.start:
                return block_id
            seen.add(block_id)
            block_id = block.term.target

    for block in blocks.values():
        term = block.term
        if isinstance(term, Goto):
            term.target = target(term.target)
        elif isinstance(term, Branch):
            term.then, term.otherwise = target(term.then), target(term.otherwise)
        elif isinstance(term, Call | FanOut):
            term.after = target(term.after)
    for block in blocks.values():
        if block.term is None:
            block.term = Goto(flow.end)
    reachable: set[str] = set()
    todo = [flow.start]
    while todo:
        block_id = todo.pop()
        if block_id in reachable:
            continue
        reachable.add(block_id)
        block = blocks[block_id]
        term = block.term
        if isinstance(term, Goto):
            todo.append(term.target)
        elif isinstance(term, Branch):
            todo += [term.then, term.otherwise]
        elif isinstance(term, Call | FanOut):
            todo.append(term.after)
        todo += [h for h, _ in block.frames]
    reachable.add(flow.end)
    for block_id in [b for b in blocks if b not in reachable]:
        del blocks[block_id]
    entries = [flow.start]
    for block in blocks.values():
        term = block.term
        if isinstance(term, Call | FanOut):
            entries.append(term.after)
        for handler_block, _ in block.frames:
            entries.append(handler_block)
    entries.append(flow.end)
    ordered: list[str] = []
    for e in entries:
        if e not in ordered:
            ordered.append(e)
    flow.entries = ordered
    used: set[str] = set()
    base = snake(flow.name)
    for block_id in ordered:
        block = blocks[block_id]
        if block_id == flow.start:
            fn = f"start_{base}"
        elif block_id == flow.end:
            fn = f"end_{base}"
        else:
            kind = "seq" if block.kind in ("seq?", "dead") else block.kind
            fn = f"router_{base}_line_{block.line or flow.line}_{kind}"
        unique, n = fn, 2
        while unique in used:
            unique, n = f"{fn}_{n}", n + 1
        used.add(unique)
        flow.routers[block_id] = (unique.replace("_", "-"), unique)


def compile_source(
    source: str,
    path: str = "<flow>",
    max_iterations: int = 0,
    *,
    check_infinite_loops: bool = True,
    environ: Mapping[str, str] | None = None,
) -> FlowProgram:
    """Compiles the flow of `source` (see `module` for which function that is); raises
    `FlowCompileError`. `environ` (default: this process's environment) is what module-level
    `os.getenv` constants read. `check_infinite_loops=False` is `--disable-infinite-loop-check`:
    a loop that can never exit compiles (the run-time iteration guard still bounds it)."""
    try:
        module = ast.parse(source, filename=path)
    except SyntaxError as exc:
        err = FlowCompileError(path, None, f"not valid Python: {exc.msg}")
        err.line, err.column = exc.lineno or 0, exc.offset or 0
        err.args = (f"{path}:{err.line}:{err.column}: not valid Python: {exc.msg}",)
        raise err from None
    try:
        scope = scan_module(module, path, environ)
        functions = scope.flows()
    except NotConstant as exc:
        raise FlowCompileError(path, exc.node, exc.why) from None
    if not functions:
        raise FlowCompileError(
            path,
            None,
            "no flow function found",
            "the flow is the first top-level function with one parameter named p, state or "
            "payload and a return annotation: def my_flow(p: dict) -> dict: ...",
        )
    names = {f.name for f in functions}
    seen: dict[str, str] = {}
    for fn in functions:
        other = seen.setdefault(kebab(fn.name), fn.name)
        if other != fn.name:
            raise FlowCompileError(
                path,
                fn,
                f"flows {other!r} and {fn.name!r} would share the actor names "
                f"start-{kebab(fn.name)} / end-{kebab(fn.name)}",
                "rename one of them",
            )
    builders = [
        _FlowBuilder(path, fn, names, scope, check_loops=check_infinite_loops) for fn in functions
    ]
    flows = [b.build() for b in builders]
    _reject_recursion(path, flows, {fn.name: fn for fn in functions})
    constants: dict[str, Any] = {}
    warnings: list[str] = []
    for b in builders:
        constants.update(b.constants_used)
        warnings += b.warnings
    return FlowProgram(
        path=path,
        flows=flows,
        max_iterations=max_iterations or DEFAULT_MAX_ITERATIONS,
        constants=constants,
        env_reads=dict(scope.env_reads),
        warnings=warnings,
    )
