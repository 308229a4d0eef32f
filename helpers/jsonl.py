"""Files: JSON Lines and JSON read one way, written atomically, and never written over an input.

Every command and stage reads and writes its data files through this module:

* :func:`read_text_lines` yields each physical line of a UTF-8 file (a byte-order mark and CRLF line ends
  are accepted), or a :class:`BadLine` for a line that is not UTF-8 or is longer than
  :data:`MAX_LINE_BYTES`, so a caller can reject that one record and go on; :func:`read_jsonl` parses the
  non-blank lines and raises :class:`JsonlError` naming file and line for the first bad one.
* :func:`loads` is strict JSON: ``NaN`` and ``Infinity`` are refused, and nesting too deep for the parser
  is a ``ValueError`` like any other bad JSON; :func:`dumps` refuses them when writing. :func:`storable` turns
  what a model produced into a value :func:`dumps` always writes (lone surrogates escaped, ``NaN`` named).
* :func:`atomic_write` writes a temporary file in the target's folder and renames it over the target only
  once everything was written: an interrupted run leaves the old file (or none), never a partial one.
* :func:`check_paths` refuses, before anything is opened for writing, an output that resolves (through
  symlinks and hard links) to an input or to another output, an output that is a folder, and an output
  whose folder does not exist.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import re
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Iterable, Iterator, Mapping

MAX_LINE_BYTES = 64 * 2 ** 20  # a longer line is rejected unread rather than held in memory
_UMASK = os.umask(0)
os.umask(_UMASK)

PathLike = str | os.PathLike


class JsonlError(ValueError):
    """A file, or one of its lines, that cannot be used; the message says where and what to do."""


class PathError(ValueError):
    """An input or output path that cannot be used as given."""


class DuplicateKeyError(ValueError):
    """A JSON object that names one key twice (which value was meant?)."""


def unique_keys(pairs: list[tuple[str, Any]]) -> dict:
    """An ``object_pairs_hook`` that refuses a key given twice (:class:`DuplicateKeyError`) instead of keeping
    the last value silently."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set = set()
        key = next(k for k, _ in pairs if k in seen or seen.add(k))
        raise DuplicateKeyError(f'the key {key!r} appears twice')
    return obj


@dataclass
class BadLine:
    """A line that could not be read as text (it counts as a line, and is rejected)."""
    reason: str


def _no_constant(name: str) -> Any:
    raise ValueError(f'{name} is not a JSON value')


def loads(text: str | bytes) -> Any:
    """Strict JSON: NaN/Infinity refused; nesting too deep for the parser is a ValueError."""
    try:
        return json.loads(text, parse_constant=_no_constant)
    except RecursionError:
        raise ValueError('nested too deeply to parse') from None


_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False)  # built once: dumps runs per row


_LINE_BREAKS = {'\x85': '\\u0085', '\u2028': '\\u2028', '\u2029': '\\u2029'}


def dumps(obj: Any, indent: int | None = None) -> str:
    """JSON text with non-ASCII kept, except the three characters other readers take for line ends (NEL, U+2028,
    U+2029: ``str.splitlines`` splits on them), which are escaped; NaN/Infinity (not JSON) raise ValueError."""
    try:
        text = _ENCODER.encode(obj) if indent is None else \
            json.dumps(obj, ensure_ascii=False, allow_nan=False, indent=indent)
        if not text.isascii():
            for char, escape in _LINE_BREAKS.items():
                if char in text:
                    text = text.replace(char, escape)
        return text
    except RecursionError:
        raise ValueError('nested too deeply to write as JSON') from None
    except ValueError as e:
        if str(e).startswith('Out of range float'):
            raise ValueError('holds NaN or Infinity, which JSON does not have') from None
        raise


MAX_STORED_DEPTH = 64  # storable: containers nested deeper are replaced by a note


def storable(value: Any, depth: int = 0) -> Any:
    """``value`` with everything that JSON or UTF-8 cannot hold made storable, so that writing it never fails:

    * text holding a lone surrogate (``\\ud800``: no Unicode, UTF-8 cannot encode it; a byte-level tokenizer
      can produce one) is **escaped**: each lone surrogate becomes the six characters ``\\ud800``;
    * ``NaN``, ``Infinity`` and ``-Infinity`` (numbers JSON does not have) are **replaced** by those names as
      strings; a value of any other type by its ``str``; keys become strings;
    * a container nested deeper than :data:`MAX_STORED_DEPTH` is **replaced** by a note saying so.
    """
    if isinstance(value, str):
        return value if value.isascii() else value.encode('utf-8', 'backslashreplace').decode('utf-8')
    if value is None or isinstance(value, (bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else ('NaN' if value != value else 'Infinity' if value > 0
                                                   else '-Infinity')
    if isinstance(value, (dict, list, tuple)) and depth >= MAX_STORED_DEPTH:
        return f'(nested deeper than {MAX_STORED_DEPTH} levels: not kept)'
    if isinstance(value, dict):
        return {storable(k if isinstance(k, str) else str(k)): storable(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [storable(v, depth + 1) for v in value]
    return storable(str(value))


def lone_surrogate(value: Any) -> str | None:
    """Where in ``value`` (parsed JSON) a string or key holds a lone surrogate (``"query"``, ``"tools[0].name"``),
    which UTF-8 cannot encode; None when there is none. Iterative: any depth."""
    stack: list[tuple[Any, str]] = [(value, '')]
    while stack:
        item, where = stack.pop()
        if isinstance(item, str):
            if not item.isascii() and _SURROGATE.search(item):
                return where or 'the value'
        elif isinstance(item, dict):
            for key, child in item.items():
                path = f'{where}.{key}' if where else str(key)
                if isinstance(key, str) and _SURROGATE.search(key):
                    return f'a key of {where or "the object"}'
                stack.append((child, path))
        elif isinstance(item, (list, tuple)):
            stack.extend((child, f'{where}[{i}]') for i, child in enumerate(item))
    return None


_SURROGATE = re.compile('[\ud800-\udfff]')


def read_text_lines(path: PathLike, max_bytes: int | None = None) -> Iterator[str | BadLine]:
    """Every physical line of a UTF-8 text file without its line end (numbering = position + 1); a line longer
    than ``max_bytes`` (default :data:`MAX_LINE_BYTES`) is skipped unread, as a :class:`BadLine`."""
    limit = MAX_LINE_BYTES if max_bytes is None else max_bytes
    with open(path, 'rb') as f:
        first = True
        while True:
            raw = f.readline(limit + 1)
            if not raw:
                return
            if len(raw) > limit and not raw.endswith(b'\n'):
                while (rest := f.readline(2 ** 20)) and not rest.endswith(b'\n'):
                    pass
                yield BadLine(f'line longer than {limit:,} bytes')
                first = False
                continue
            raw = raw.rstrip(b'\n').rstrip(b'\r')
            if first and raw.startswith(b'\xef\xbb\xbf'):
                raw = raw[3:]
            first = False
            try:
                yield raw.decode('utf-8')
            except UnicodeDecodeError as e:
                yield BadLine(f'not UTF-8 text (byte 0x{raw[e.start]:02x} at column {e.start + 1})')


def read_jsonl(path: PathLike) -> Iterator[tuple[int, Any]]:
    """``(line number, value)`` for each non-blank line; the first bad line raises :class:`JsonlError`."""
    for n, line in enumerate(read_text_lines(path), 1):
        if isinstance(line, BadLine):
            raise JsonlError(f'{path}:{n}: {line.reason}; fix or remove that line')
        if not line.strip():
            continue
        try:
            yield n, loads(line)
        except ValueError as e:
            raise JsonlError(f'{path}:{n}: not valid JSON ({e}); fix or remove that line') from None


def read_json(path: PathLike) -> Any:
    """One JSON document from a UTF-8 file (a byte-order mark is accepted)."""
    try:
        text = Path(path).read_bytes().decode('utf-8-sig')
    except UnicodeDecodeError as e:
        raise JsonlError(f'{path}: not UTF-8 text (byte at offset {e.start}); save it as UTF-8') from None
    try:
        return loads(text)
    except ValueError as e:
        raise JsonlError(f'{path}: not valid JSON ({e})') from None


@contextlib.contextmanager
def atomic_write(path: PathLike) -> Iterator[IO[str]]:
    """A text file that appears at ``path`` (through a symlink: at its target) only when the block ends
    without an error; on any error or interrupt the old content stays and the temporary file is removed.
    An existing device or pipe (``/dev/null``) is written in place: it cannot be replaced."""
    target = Path(os.path.realpath(path))
    if target.exists() and not target.is_file() and not target.is_dir():
        with open(target, 'w', encoding='utf-8') as f:
            yield f
        return
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f'.{target.name}.', suffix='.part')
    try:
        with os.fdopen(fd, 'w', encoding='utf-8', newline='\n') as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        mode = stat.S_IMODE(target.stat().st_mode) if target.exists() else 0o666 & ~_UMASK
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_jsonl(path: PathLike, rows: Iterable[Any]) -> int:
    """Write values as JSON lines (UTF-8, non-ASCII kept), atomically; returns the count."""
    n = 0
    with atomic_write(path) as f:
        for row in rows:
            f.write(dumps(row) + '\n')
            n += 1
    return n


def write_json(path: PathLike, obj: Any, indent: int = 2) -> None:
    """Write one JSON document, atomically."""
    text = dumps(obj, indent=indent) + '\n'
    with atomic_write(path) as f:
        f.write(text)


def _same(a: PathLike, b: PathLike) -> bool:
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)  # hard links
    except OSError:
        return False


def _not_empty(label: str, path: PathLike, what: str) -> None:
    if not os.fspath(path).strip():
        raise PathError(f'{label} is empty; give {what}')


def check_input(label: str, path: PathLike) -> None:
    """An input that can be opened for reading (a file, a pipe or a device; not a folder)."""
    _not_empty(label, path, 'a file path')
    p = Path(path)
    if not p.exists():
        raise PathError(f'cannot read {label} {path}: it does not exist; check the path')
    if p.is_dir():
        raise PathError(f'cannot read {label} {path}: it is a folder; give a file')
    if not os.access(p, os.R_OK):
        raise PathError(f'cannot read {label} {path}: permission denied')


def check_output_dir(label: str, path: PathLike) -> None:
    """A folder that exists or can be created (no file in the way)."""
    _not_empty(label, path, 'a folder path')
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise PathError(f'{label} {path} is a file, not a folder; give a folder path')
    parent = p
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise PathError(f'{label} {path}: {parent} is a file, so the folder cannot be created')
    if not os.access(parent, os.W_OK | os.X_OK):
        raise PathError(f'{label} {path}: cannot create or write to folder {parent} (permission denied)')


def check_paths(outputs: Mapping[str, PathLike | None], inputs: Mapping[str, PathLike | None] | None = None) -> None:
    """Refuse outputs that would overwrite an input or each other, are folders, or have no folder;
    keys are the names shown in the message (an option such as ``--output``)."""
    outs = {k: v for k, v in outputs.items() if v is not None}
    ins = {k: v for k, v in (inputs or {}).items() if v is not None}
    for label, path in outs.items():
        _not_empty(label, path, 'a file path')
        p = Path(path)
        if p.is_dir():
            raise PathError(f'{label} {path} is a folder; give a file path')
        if p.exists() and not p.is_file():
            continue  # a device or pipe, written in place
        if p.exists() and not os.access(p, os.W_OK):
            raise PathError(f'{label} {path} is read-only; make it writable or choose another path')
        folder = Path(os.path.realpath(p)).parent
        if folder.exists() and not folder.is_dir():
            raise PathError(f'{label} {path}: {folder} is a file, not a folder')
        if not folder.is_dir():
            raise PathError(f'{label} {path}: folder {folder} does not exist; create it first')
        if not os.access(folder, os.W_OK | os.X_OK):
            raise PathError(f'{label} {path}: cannot write to folder {folder} (permission denied)')
        for in_label, in_path in ins.items():
            if _same(path, in_path):
                raise PathError(f'{label} {path} is the same file as {in_label} {in_path}; '
                                'choose another path (inputs are never overwritten)')
    labels = list(outs)
    for i, a in enumerate(labels):
        for b in labels[i + 1:]:
            if _same(outs[a], outs[b]):
                raise PathError(f'{a} and {b} are the same file ({outs[a]}); give two different paths')
