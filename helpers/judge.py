"""The judge: the one place that decides whether a model output makes the right tool call.

Evaluation (:func:`helpers.evaluation.score_case`, every metric and outcome count) and the verdicts the
notebooks print call :func:`judge`, and preference pairs and rewards are to call it too: nothing else decides
what a right call is.

* The call is what RolePlay would run: the first match of ``Action: (.+)\\nAction Input: (.+)`` in the output
  (:func:`helpers.agentfabric.parse_action`). Its Action Input is read strictly
  (:func:`helpers.agentfabric.parse_arguments`): one JSON object, or the call is *invalid* — not JSON, not an
  object, ``NaN``/``Infinity``, a key that appears twice, a lone surrogate, too long or nested too deeply.
* **Selection**: the call names the expected tool (surrounding spaces ignored).
* **Exact** (``args_exact_acc``, the headline): right tool, and the arguments are the expected ones in JSON:
  exactly the expected keys, each value equal as JSON (:func:`json_equal`: the same JSON type and value;
  objects regardless of key order; numbers by value, ``1e16 == 10000000000000000``; ``"5" != 5``,
  ``true != 1``) and of the JSON type the AST check requires (``3.0`` is a number but no integer), so a call is
  never exact without passing the AST check.
* **AST** (``args_ast_acc``, in the style of the Berkeley Function Calling Leaderboard's AST check): right tool,
  no parameter the tool does not declare, every expected parameter present with a matching value, and every
  parameter the expected call leaves out absent or equal to its declared ``default``; an expected optional value
  equal to its default may also be left out. A value matches when it has the parameter's JSON type (``"3"`` is
  not an integer, ``3.0`` is a number but no integer, ``true`` is no number) and is equal: strings ignoring case
  and surrounding spaces, numbers numerically (``200 == 200.0`` for a number parameter), the rest exactly. When
  the expected value itself does not fit the declared type (data converted without types), its own JSON type is
  required instead.
* **Argument pairs** (``args_f1``): an expected ``(key, value)`` pair counts as matched when the call has that
  key with a value equal as in *exact*; the call's other pairs are extra, the expected ones not matched missing.
* **Outcome**: one of :data:`OUTCOMES` per output; a right-tool call with wrong arguments gets one or more
  :data:`ARG_ERRORS` kinds, compared as *exact* compares.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from .agentfabric import Tool, ToolCall, ToolParam, parse_action

# Call outcomes, for cases that need a call and for cases that need none (``error``: the case crashed).
OUTCOMES = {
    'ok': 'right call',  # for a case that needs no call: no call, as it should
    'wrong_arguments': 'right tool, wrong arguments',
    'invalid_json': 'right tool, Action Input not a JSON object',
    'wrong_tool': 'wrong tool',
    'no_call': 'no call (one was needed)',
    'false_call': 'called a tool (none was needed)',
    'error': 'error',
}

# Why a right-tool call's arguments are not the expected ones; one call can show several (notebook 05).
ARG_ERRORS = {
    'invalid_json': 'Action Input not a JSON object',
    'missing_required': 'a required parameter left out',
    'missing_optional': 'an optional parameter the query states, left out',
    'unasked_optional': 'an optional parameter nobody asked for',
    'unknown_param': 'a parameter the tool does not declare',
    'wrong_type': 'a value of the wrong JSON type',
    'changed_value': 'a value changed (not what the query says)',
}

_JSON_TYPES = {'string': (str,), 'integer': (int,), 'number': (int, float), 'boolean': (bool,), 'array': (list,),
               'object': (dict,), 'null': (type(None),)}
_OWN_TYPES = ('boolean', 'integer', 'number', 'string', 'array', 'object', 'null')


def _json_kind(value: Any) -> str | None:
    """The JSON type of a parsed value: string, number, boolean, null, array or object (None: not JSON)."""
    if value is None:
        return 'null'
    if isinstance(value, bool):
        return 'boolean'
    if isinstance(value, (int, float)):
        return 'number'
    return {str: 'string', list: 'array', dict: 'object'}.get(type(value))


def json_equal(a: Any, b: Any) -> bool:
    """Equality of two parsed JSON values: the same JSON type and value. Objects compare regardless of key
    order, numbers by value (``1e16 == 10000000000000000``, ``200 == 200.0``), never ``"5" == 5`` or
    ``true == 1``. Iterative, so any depth is fine."""
    stack = [(a, b)]
    while stack:
        x, y = stack.pop()
        kind = _json_kind(x)
        if kind is None or kind != _json_kind(y):
            return False
        if kind == 'array':
            if len(x) != len(y):
                return False
            stack.extend(zip(x, y))
        elif kind == 'object':
            if x.keys() != y.keys():
                return False
            stack.extend((x[k], y[k]) for k in x)
        elif x != y:
            return False
    return True


def _has_type(value: Any, kind: str) -> bool:
    """Whether ``value`` (parsed JSON) is of JSON schema type ``kind`` (a boolean is not a number);
    a type this check does not know accepts anything."""
    if kind not in _JSON_TYPES:
        return True
    if isinstance(value, bool) and kind in ('integer', 'number'):
        return False
    return isinstance(value, _JSON_TYPES[kind])


def _declared_types(param: ToolParam | None) -> list[str]:
    """The JSON types a parameter declares (none for a parameter the tool lacks)."""
    return [] if param is None else param.type if isinstance(param.type, list) else [param.type]


def _required_type(expected: Any, param: ToolParam | None) -> str | None:
    """The JSON type a value must have to match ``expected``: the first declared type the expected value has,
    else the expected value's own type."""
    return next((t for t in _declared_types(param) if _has_type(expected, t)),
                next((t for t in _OWN_TYPES if _has_type(expected, t)), None))


def _ast_value(value: Any, expected: Any, param: ToolParam | None) -> bool:
    """One value against the expected one, as the AST check compares them."""
    kind = _required_type(expected, param)
    if kind is None or not _has_type(value, kind):
        return False
    if kind == 'string':
        return value.strip().casefold() == expected.strip().casefold()
    return value == expected  # numbers compare numerically (200 == 200.0), exactly even beyond float range


def same_value(value: Any, expected: Any, param: ToolParam | None) -> bool:
    """One argument value against the expected one as *exact* compares them: equal as JSON, and of the type
    the AST check requires."""
    return json_equal(value, expected) and _ast_value(value, expected, param)


def ast_match(expected_call: Mapping[str, Any], name: str | None, args: dict | None,
              params: Mapping[str, ToolParam]) -> bool:
    """The AST check of one call (tool ``name``, parsed ``args``) against ``expected_call``; ``params``: the
    expected tool's parameters by name."""
    if args is None or name != expected_call['name'].strip():
        return False
    expected = expected_call['arguments']
    if set(args) - set(params) - set(expected):
        return False  # a parameter the tool does not have
    for key in set(params) | set(expected):
        p = params.get(key)
        default = p.default if p is not None else None
        if key in expected:
            if key in args:
                if not _ast_value(args[key], expected[key], p):
                    return False
            elif p is None or p.required or default is None or not _ast_value(default, expected[key], p):
                return False  # missing, unless it is optional and what was asked for is its default
        elif key in args and (default is None or not _ast_value(args[key], default, p)):
            return False  # given though nobody asked for it, and not its default either
    return True


def argument_errors(expected: Mapping[str, Any], args: dict, params: Mapping[str, ToolParam]) -> list[str]:
    """The :data:`ARG_ERRORS` kinds of arguments ``args`` (a JSON object) against the ``expected`` ones, values
    compared as *exact* compares them (``[]`` when they are exact); a differing value is ``wrong_type`` when it
    lacks the JSON type the comparison requires."""
    kinds = set()
    for key in set(expected) - set(args):
        p = params.get(key)
        kinds.add('missing_required' if p is None or p.required else 'missing_optional')
    for key in set(args) - set(expected):
        kinds.add('unasked_optional' if key in params else 'unknown_param')
    for key in set(args) & set(expected):
        p = params.get(key)
        if not same_value(args[key], expected[key], p):
            kind = _required_type(expected[key], p)
            kinds.add('changed_value' if kind is None or _has_type(args[key], kind) else 'wrong_type')
    return [k for k in ARG_ERRORS if k in kinds]


@dataclass(frozen=True)
class Judgement:
    """What the judge decided about one model output."""
    kind: str  # the call outcome, a key of OUTCOMES
    call: ToolCall | None  # the call RolePlay would run; None when the output has none
    selection: bool | None  # the right tool; None when no call is expected
    exact: bool | None  # args_exact_acc; None when no call is expected
    ast: bool | None  # args_ast_acc; None when no call is expected
    false_call: bool | None  # a call although none is expected; None when one is
    invalid: bool | None  # the Action Input is not a JSON object; None when no call was parsed
    arg_errors: tuple[str, ...] = ()  # ARG_ERRORS kinds of a right-tool call that is not exact
    pairs: tuple[int, int, int] = (0, 0, 0)  # argument pairs matched, extra and missing (args_f1)

    @property
    def name(self) -> str | None:
        """The called tool's name, without surrounding spaces."""
        return self.call.name.strip() if self.call else None

    @property
    def arguments(self) -> dict | None:
        """The call's arguments when its Action Input is a JSON object."""
        return self.call.arguments if self.call else None


def judge(expected_call: Mapping[str, Any] | None, output: str | None, error: str | None = None,
          tools: Sequence[Tool] = ()) -> Judgement:
    """THE judge: how ``output`` fares against ``expected_call`` (``{"name", "arguments"}``; None when no call
    is needed), by the definitions of this module. ``tools`` are the tools offered (their declared parameter
    types and defaults matter; without them each expected value's own JSON type is required); ``error``: the
    case crashed (outcome ``error``, the other fields judged as usual)."""
    call = parse_action(output or '')
    args = call.arguments if call else None
    name = call.name.strip() if call else None
    invalid = (args is None) if call else None
    if expected_call is None:
        kind = 'error' if error else 'false_call' if call else 'ok'
        return Judgement(kind, call, None, None, None, call is not None, invalid)
    tool = next((t for t in tools if t.name == expected_call['name']), None)
    params = {p.name: p for p in tool.parameters} if tool else {}
    expected = expected_call['arguments']
    selection = name == expected_call['name'].strip()
    got = args if args is not None else {}
    matched = sum(key in got and same_value(got[key], value, params.get(key)) for key, value in expected.items())
    pairs = (matched, len(got) - matched, len(expected) - matched)
    exact = selection and args is not None and matched == len(expected) == len(args)
    errors: list[str] = []
    if error:
        kind = 'error'
    elif call is None:
        kind = 'no_call'
    elif not selection:
        kind = 'wrong_tool'
    elif args is None:
        kind, errors = 'invalid_json', ['invalid_json']
    elif exact:
        kind = 'ok'
    else:
        kind, errors = 'wrong_arguments', argument_errors(expected, args, params)
    return Judgement(kind, call, selection, exact, ast_match(expected_call, name, args, params), None, invalid,
                     tuple(errors), pairs)


def verdict(expected_call: Mapping[str, Any] | None, output: str | None, error: str | None = None,
            tools: Sequence[Tool] = ()) -> str:
    """One line on how a model output fared against the expected call (None: no call needed)."""
    j = judge(expected_call, output, error, tools)
    name = j.name or ''
    shown = json.dumps(j.arguments, ensure_ascii=False) if j.arguments is not None else \
        (j.call.action_input if j.call else '')
    exp = expected_call
    want = f"{exp['name']} {json.dumps(exp['arguments'], ensure_ascii=False)}" if exp else ''
    return {
        'ok': f'✓ right call: {name} {shown}' if exp else '✓ no call, and none was needed',
        'wrong_arguments': f'✗ right tool, wrong arguments: {shown} (expected {want})',
        'invalid_json': f'✗ right tool, but the Action Input is not a JSON object: {shown!r}',
        'wrong_tool': f'✗ wrong tool: {name} (expected {want})',
        'no_call': f'✗ no call: it answered directly (expected {want})',
        'false_call': f'✗ called {name} {shown}, but the question needs no tool',
        'error': f'✗ error: {error}',
    }[j.kind]
