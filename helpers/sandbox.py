"""Sandbox: the calculator's and the code runner's model-written Python, evaluated with hard limits.

Two layers, so that no argument a model writes can hang the caller, take its memory or crash it:

* a small tree-walking **evaluator** (never ``eval``/``exec``): literals, arithmetic, comparisons,
  indexing and slicing, one-generator comprehensions, ``print`` and a few builtins and ``str`` methods;
  no names but the loop variable, ``pi`` and ``e``, no attributes but those methods, no imports, no
  ``%`` formatting. It charges every node it visits and every element it creates to a budget of
  :data:`WORK` and refuses, before computing, results that would be larger (long sequences, deeply
  nested copies, huge numbers), so normal inputs run in microseconds;
* a **worker process** (``python -I -S`` on this file, stdlib only) runs the evaluator, with its address
  space capped at :data:`MEMORY_BYTES` (``RLIMIT_AS``) and its CPU time per request at
  :data:`CPU_SECONDS` (``RLIMIT_CPU``); the caller waits at most :data:`WALL_SECONDS` for an answer, then
  kills the worker and starts a fresh one for the next request.

Public functions: :func:`calculate` (a finite number, or :class:`SandboxError`) and :func:`run_code`
(``(status, printed text)``). Every failure — syntax, unsupported code, a limit, a crashed worker —
comes back as :class:`SandboxError` or an ``'error'`` status with a one-line message, never as another
exception, and never as NaN or Infinity.
"""
from __future__ import annotations

import ast
import atexit
import json
import math
import operator
import os
import select
import subprocess
import sys
import threading
from typing import Any, Callable

MAX_SOURCE = 10_000  # characters of one expression or snippet
WORK = 100_000  # nodes visited plus elements created, per request; also the longest sequence
MAX_OUTPUT = 10_000  # characters of printed text returned
MEMORY_BYTES = 256 * 2 ** 20
CPU_SECONDS = 1  # at least this much CPU per request, at most one second more
WALL_SECONDS = 3.0  # the caller's limit, including starting a worker (~30 ms)
NO_OUTPUT_NOTE = '(no output captured in the offline sandbox)'  # code the evaluator does not run


class SandboxError(ValueError):
    """Model-written code that could not be evaluated; the message says why."""


class _Unsupported(Exception):
    """Code the evaluator does not run."""


# ------------------------------------------------------------------------------------------ evaluator

_BINOPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow}
_UNARY = {ast.USub: operator.neg, ast.UAdd: operator.pos}
_COMPARE = {ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
            ast.Gt: operator.gt, ast.GtE: operator.ge}
_METHODS = {'upper', 'lower', 'title', 'strip', 'split', 'count', 'startswith', 'endswith', 'join'}
_CONSTANTS = {'pi': math.pi, 'e': math.e}
_SEQUENCES = (str, list, tuple)


def _size(value: Any, cap: int = WORK) -> int:
    """Elements and characters in ``value``, nested ones included, counted up to just past ``cap``."""
    total, stack = 0, [value]
    while stack and total <= cap:
        item = stack.pop()
        if isinstance(item, str):
            total += len(item)
        elif isinstance(item, (list, tuple)):
            total += len(item)
            stack.extend(item[:cap + 1 - total] if len(item) > cap else item)
        elif isinstance(item, int):
            total += 1 + item.bit_length() // 4  # about its digits
        else:
            total += 1
    return total


def _range(*args: int) -> range:
    r = range(*args)
    if len(r) > WORK:
        raise ValueError('range too long for the sandbox')
    return r


def _sum(items: Any, start: Any = 0) -> Any:
    if not isinstance(start, (int, float)) or isinstance(start, bool):
        raise TypeError('sum adds numbers only')
    return sum(items, start)


def _text(value: Any, convert: Callable[[Any], str] = str) -> str:
    if _size(value) > WORK:
        raise ValueError('value too large to turn into text in the sandbox')
    return convert(value)


_FUNCS: dict[str, Callable] = {'abs': abs, 'round': round, 'min': min, 'max': max, 'sum': _sum, 'len': len,
                               'sorted': sorted, 'list': list, 'reversed': lambda x: list(reversed(x)),
                               'range': _range, 'sqrt': math.sqrt, 'str': _text, 'int': int, 'float': float}


def _binop(op: type, a: Any, b: Any) -> Any:
    """``a op b``, refusing results that would be huge."""
    if op is ast.Pow and isinstance(a, int) and isinstance(b, int) and abs(a) > 1 and b * abs(a).bit_length() > 4096:
        raise ValueError('number too large for the sandbox')
    if op is ast.Mult:
        for seq, n in ((a, b), (b, a)):
            if isinstance(seq, _SEQUENCES) and isinstance(n, int) and _size(seq) * max(n, 0) > WORK:
                raise ValueError('sequence too long for the sandbox')
        if isinstance(a, int) and isinstance(b, int) and a.bit_length() + b.bit_length() > 8192:
            raise ValueError('number too large for the sandbox')
    if op is ast.Add and isinstance(a, _SEQUENCES) and isinstance(b, _SEQUENCES) and _size(a) + _size(b) > WORK:
        raise ValueError('sequence too long for the sandbox')
    if op is ast.Mod and isinstance(a, str):
        raise _Unsupported('string formatting')
    return _BINOPS[op](a, b)


class _Evaluator:
    """Evaluates expression trees against one work budget."""

    def __init__(self) -> None:
        self.work = 0

    def _charge(self, n: int) -> None:
        self.work += n
        if self.work > WORK:
            raise ValueError('too much work for the sandbox')

    def _made(self, value: Any) -> Any:
        """Charge a newly created sequence by its length."""
        if isinstance(value, _SEQUENCES):
            self._charge(len(value))
        return value

    def __call__(self, node: ast.AST, env: dict[str, Any]) -> Any:
        self._charge(1)
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float, str)):
            return node.value
        if isinstance(node, ast.Name) and (node.id in env or node.id in _CONSTANTS):
            return env[node.id] if node.id in env else _CONSTANTS[node.id]
        if isinstance(node, (ast.List, ast.Tuple)):
            items = [self(e, env) for e in node.elts]
            return items if isinstance(node, ast.List) else tuple(items)
        if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
            return self._made(_binop(type(node.op), self(node.left, env), self(node.right, env)))
        if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
            return _UNARY[type(node.op)](self(node.operand, env))
        if isinstance(node, ast.Compare) and len(node.ops) == 1 and type(node.ops[0]) in _COMPARE:
            return _COMPARE[type(node.ops[0])](self(node.left, env), self(node.comparators[0], env))
        if isinstance(node, ast.Subscript):
            s = node.slice
            key = (slice(*(None if p is None else self(p, env) for p in (s.lower, s.upper, s.step)))
                   if isinstance(s, ast.Slice) else self(s, env))
            return self._made(self(node.value, env)[key])
        if isinstance(node, (ast.ListComp, ast.GeneratorExp)) and len(node.generators) == 1 \
                and isinstance(node.generators[0].target, ast.Name) and not node.generators[0].is_async:
            gen, out = node.generators[0], []
            for item in self(gen.iter, env):
                scope = {**env, gen.target.id: item}
                if all(self(cond, scope) for cond in gen.ifs):
                    out.append(self(node.elt, scope))
            return out
        if isinstance(node, ast.Call) and not node.keywords:
            args = [self(a, env) for a in node.args]
            if isinstance(node.func, ast.Name) and node.func.id in _FUNCS:
                return self._made(_FUNCS[node.func.id](*args))
            if isinstance(node.func, ast.Attribute) and node.func.attr in _METHODS:
                obj = self(node.func.value, env)
                if isinstance(obj, str):
                    if node.func.attr == 'join' and args and len(obj) * len(args[0]) + _size(args[0]) > WORK:
                        raise ValueError('string too long for the sandbox')
                    return self._made(getattr(obj, node.func.attr)(*args))
        raise _Unsupported(type(node).__name__)


def _calculate(source: str) -> dict:
    value = _Evaluator()(ast.parse(source, mode='eval').body, {})
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return {'error': 'not a numeric expression'}
    if isinstance(value, float) and not math.isfinite(value):
        return {'error': f'the result is not a finite number ({value})'}
    return {'value': value}


def _run_code(code: str) -> dict:
    """What the snippet prints: ``print(...)`` calls, and the repr of bare expressions."""
    evaluate, lines = _Evaluator(), []
    for stmt in ast.parse(code, mode='exec').body:
        if not isinstance(stmt, ast.Expr):
            raise _Unsupported(type(stmt).__name__)
        node = stmt.value
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == 'print' \
                and not node.keywords:
            lines.append(' '.join(_text(evaluate(a, {})) for a in node.args))
        else:
            lines.append(_text(evaluate(node, {}), repr))
    out = '\n'.join(lines)
    return {'status': 'ok', 'stdout': out if len(out) <= MAX_OUTPUT else out[:MAX_OUTPUT] + '…(cut)'}


def _answer(request: dict) -> dict:
    """One request inside the worker: every failure becomes an error answer."""
    op, source = request.get('op'), request.get('source')
    try:
        if not isinstance(source, str):
            raise TypeError('the source must be a string')
        if op == 'calculate':
            return _calculate(source)
        if op == 'run_code':
            return _run_code(source)
        return {'error': f'unknown operation {op!r}'}
    except _Unsupported:
        return {'status': 'executed', 'stdout': NO_OUTPUT_NOTE} if op == 'run_code' else \
            {'error': 'uses something the calculator does not support'}
    except SyntaxError as e:
        return {'status': 'error', 'stdout': f'SyntaxError: {e.msg}'} if op == 'run_code' else \
            {'error': f'SyntaxError: {e.msg}'}
    except MemoryError:
        message = f'MemoryError: more than the sandbox\'s {MEMORY_BYTES // 2 ** 20} MiB'
    except RecursionError:
        message = 'RecursionError: nested too deeply for the sandbox'
    except Exception as e:  # noqa: BLE001 - the answer to any failure of model-written code is an error
        message = f'{type(e).__name__}: {e}'[:300]
    return {'status': 'error', 'stdout': message} if op == 'run_code' else {'error': message}


def _serve() -> None:
    """The worker: limits first, then one JSON request per line on stdin, one answer per line on stdout."""
    import resource
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_BYTES, MEMORY_BYTES))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))
    for line in sys.stdin:
        used = resource.getrusage(resource.RUSAGE_SELF)
        soft = math.ceil(used.ru_utime + used.ru_stime) + CPU_SECONDS
        resource.setrlimit(resource.RLIMIT_CPU, (soft, resource.RLIM_INFINITY))  # SIGXCPU ends the worker
        try:
            answer = _answer(json.loads(line))
            text = json.dumps(answer, allow_nan=False)
        except Exception as e:  # noqa: BLE001 - a malformed request or an unwritable value
            text = json.dumps({'error': f'{type(e).__name__}: {e}'[:300]})
        sys.stdout.write(text + '\n')
        sys.stdout.flush()


# ------------------------------------------------------------------------------------------ caller side

class Worker:
    """One worker process, started on first use and again after it was killed; thread-safe."""

    def __init__(self, command: list[str] | None = None, wall_seconds: float = WALL_SECONDS):
        self.command = command or [sys.executable, '-I', '-S', os.path.abspath(__file__)]
        self.wall_seconds = wall_seconds
        self._proc: subprocess.Popen | None = None
        self._owner = 0  # pid that started the process: a forked child starts its own
        self._lock = threading.Lock()

    def request(self, req: dict) -> dict:
        with self._lock:
            if self._proc is None or self._proc.poll() is not None or self._owner != os.getpid():
                self._proc = subprocess.Popen(self.command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                              stderr=subprocess.DEVNULL, bufsize=0, close_fds=True)
                self._owner = os.getpid()
            proc = self._proc
            try:
                proc.stdin.write((json.dumps(req) + '\n').encode())
                line = self._read_line(proc)
            except OSError:
                line = None
            if line is None:
                self.stop()
                raise SandboxError(f'stopped: it exceeded the sandbox limits ({CPU_SECONDS} s of CPU, '
                                   f'{self.wall_seconds:g} s in all, {MEMORY_BYTES // 2 ** 20} MiB)')
            try:
                return json.loads(line)
            except ValueError:
                self.stop()
                raise SandboxError('the sandbox gave an unreadable answer') from None

    def _read_line(self, proc: subprocess.Popen) -> bytes | None:
        """The worker's next line, or None when it ends or does not answer in time."""
        import time
        deadline = time.monotonic() + self.wall_seconds
        fd, buf = proc.stdout.fileno(), b''
        while not buf.endswith(b'\n'):
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                return None
            chunk = os.read(fd, 65536)
            if not chunk:
                return None
            buf += chunk
        return buf

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and self._owner == os.getpid():
            proc.kill()
            proc.wait()
            for stream in (proc.stdin, proc.stdout):
                stream.close()


_WORKER = Worker()
atexit.register(_WORKER.stop)


def _short(source: str) -> str:
    return repr(source if len(source) <= 60 else source[:60] + '…')


def _ask(op: str, source: str) -> dict:
    if len(source) > MAX_SOURCE:
        raise SandboxError(f'{_short(source)} is longer than the sandbox\'s {MAX_SOURCE} characters')
    return _WORKER.request({'op': op, 'source': source})


def calculate(expression: str) -> int | float:
    """The value of an arithmetic expression (``SandboxError`` saying why when there is none)."""
    answer = _ask('calculate', expression)
    if 'error' in answer:
        raise SandboxError(f'cannot evaluate {_short(expression)}: {answer["error"]}')
    return answer['value']


def run_code(code: str) -> tuple[str, str]:
    """``(status, text)`` for a snippet: ``ok`` and what it prints, ``executed`` and a note for code
    the evaluator does not run, or ``error`` and a one-line reason."""
    try:
        answer = _ask('run_code', code)
    except SandboxError as e:
        return 'error', str(e)
    if 'error' in answer:
        return 'error', answer['error']
    return answer['status'], answer['stdout']


if __name__ == '__main__':
    _serve()
