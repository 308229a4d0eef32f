"""Conversion: raw ``ms_agent`` records → AgentFabric training samples whose prompts are what RolePlay sends.

A raw record is ``{"id", "conversations": [{"from": "system", "value": "Answer the following questions
… You have access to the following APIs:\\n1. name: … Parameters: [{…}]\\n\\n2. …"}, {"from": "user", …},
{"from": "assistant", "value": "Action: …\\nAction Input: {…}\\nObservation: …\\nThought: …\\nFinal Answer: …"},
…]}``. Parsing gives a :class:`~helpers.agentfabric.Conversation` (tools with full JSON-schema parameters,
calls with their observations, final answers), and :func:`~helpers.agentfabric.render` turns it into one
sample per request RolePlay would make. Unlike the published script this keeps every parameter and the
right ``required`` list, numbers any count of APIs, and writes arguments as valid one-line JSON.

Nothing is dropped silently and one record never stops the others: a record that cannot be read
(not UTF-8, not JSON, nested too deeply, a line over :data:`MAX_RECORD_BYTES`, rejected before parsing),
parsed (a tool schema of the wrong shape, an Action Input with NaN or Infinity, which JSON does not have, or
with a key given twice), rendered or written (a lone surrogate, which UTF-8 cannot encode), or that fails
in any other way, goes to the report with its line number and reason, and ``read == converted + rejected``.
A record whose tool texts or user turns could pass for prompt structure — a chat-template token such as
``<|im_end|>``, or AgentFabric's own ``Action:`` / ``Observation:`` lines and section headers
(:func:`injection_problems`) — is rejected as a possible prompt injection, or with ``keep_suspicious`` kept
with a warning in the report. :func:`convert_file` writes its output atomically. Every pattern here runs in
linear time, whatever the record holds.

The other direction: :func:`to_ms_agent` writes a conversation back as a raw ms_agent record, and
:func:`ms_agent_rows` renders conversations as ms-swift training rows in that original format (the
``ms_agent`` arm of the series' comparison: same conversations, the prompt format before the guide's fix).
"""
from __future__ import annotations

import ast
import functools
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import json5

from .agentfabric import (CaseError, Conversation, ConversationTurn, Instruction, Tool, ToolCall, ToolParam,
                          check_instruction, has_chinese, injection, render)
from .jsonl import (BadLine, DuplicateKeyError, atomic_write, check_paths, dumps, loads, read_text_lines, storable,
                    unique_keys)

FORMATS = ('messages', 'agentfabric')
_API_HEADER = re.compile(r'You have access to the following (?:APIs|tools):\s*\n', re.I)
_API_FOOTER = re.compile(r'\n[^\S\n]*Use the following format', re.I)
_API_ENTRY = re.compile(r'\n[^\S\n]*\d+\.[^\S\n]+(?=\S+?:)')  # any numbered line
_INTERACT = re.compile(r'Call this tool to interact with the (.*?) API\.\s*(.*)', re.S)
_USEFUL = re.compile(r'What is the .*? API useful for\?\s*(.*)', re.S)  # what may follow _INTERACT
# A tool line of an AgentFabric-style system prompt (RolePlay's, or the published conversion script's):
# "name: display API。description 输入参数: {schema} Format the arguments as a JSON object."
_AF_HEAD = re.compile(r'(\S+): ')
_AF_API = re.compile(r' API[。.] ?')
_AF_PARAMS = re.compile(r' ?(?:输入参数|Parameters): ')
_AF_TAIL = ' Format the arguments as a JSON object.'
_OPENING = re.compile(r'[\[{]')
_BLOCK_KEYS = re.compile(r'^(Thought|Action|Action Input|Observation|Final Answer):[ \t]?', re.M)


class ConversionError(ValueError):
    """Why one record cannot be converted (goes to the report)."""


_JSON5_MAX = 20_000  # characters; the pure-Python JSON5 parser needs seconds per 100 KB


def _unique_literal(text: str) -> Any:
    """A Python literal, refusing a dict literal that names a key twice (``ast.literal_eval`` keeps the last)."""
    tree = ast.parse(text, mode='eval')
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            keys = [ast.literal_eval(k) for k in node.keys if k is not None]
            unique_keys([(k, None) for k in keys])
    return ast.literal_eval(tree)


def _unique_json5(text: str) -> Any:
    """JSON5, refusing an object that names a key twice (json5 turns the hook's error into a plain ValueError)."""
    refused: list[DuplicateKeyError] = []

    def hook(pairs):
        try:
            return unique_keys(pairs)
        except DuplicateKeyError as e:
            refused.append(e)
            raise
    try:
        return json5.loads(text, object_pairs_hook=hook)
    except ValueError:
        if refused:
            raise refused[0] from None
        raise


def _parse_literal(text: str) -> Any:
    """JSON, then a Python literal (ms_agent often writes single quotes), then JSON5 (short texts only); an object
    that names a key twice is refused by each of them (which value was meant?)."""
    text = text.strip()
    parsers = (functools.partial(json.loads, object_pairs_hook=unique_keys), _unique_literal) + (
        (_unique_json5,) if len(text) <= _JSON5_MAX else ())
    for parse in parsers:
        try:
            return parse(text)
        except DuplicateKeyError as e:
            raise ConversionError(f'not one JSON value: {e}') from None
        except Exception:  # noqa: BLE001 - any other failure means: try the next reading
            continue
    raise ConversionError(f'not JSON: {text[:80]!r}')


_JSON = json.JSONDecoder()
# Outside quotes only brackets and quotes matter; a quoted string is skipped whole (a backslash escapes the
# next character). A lone quote is one that never closes.
_SCAN = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|\'[^\'\\]*(?:\\.[^\'\\]*)*\'|(["\'])|([\[{])|([\]}])', re.S)


def _bracketed(text: str, start: int) -> str:
    """The balanced ``[...]`` or ``{...}`` starting at ``text[start]`` (quotes respected)."""
    try:  # valid JSON (the usual case) ends where the scan below would end it
        return text[start:_JSON.raw_decode(text, start)[1]]
    except (ValueError, RecursionError):
        pass
    close_ch = {'[': ']', '{': '}'}[text[start]]
    depth, pos = 0, start
    while m := _SCAN.search(text, pos):
        lone_quote, opening, closing = m.groups()
        if lone_quote:
            break
        pos = m.end()
        if opening:
            depth += 1
        elif closing:
            depth -= 1
            if depth == 0:
                if closing != close_ch:
                    break
                return text[start:pos]
    raise ConversionError(f'unbalanced parameter list: {text[start:start + 80]!r}')


def _copy(tool: Tool) -> Tool:
    """A tool of its own for the caller (parsed tools are memoised, so they are never handed out)."""
    return Tool(tool.name, tool.description, [ToolParam(p.name, p.description, p.type, p.required,
                                                        p.enum and list(p.enum)) for p in tool.parameters])


_MEMO_MAX_CHARS = 8192


def _memoised(maxsize: int):
    """Parse each text once: records repeat their system prompts and draw their APIs from a far smaller set.
    Only the last ``maxsize`` texts of up to :data:`_MEMO_MAX_CHARS` are kept, so the memo stays small
    whatever the input holds (a longer text is parsed every time)."""
    def wrap(parse):
        memo = functools.lru_cache(maxsize=maxsize)(parse)

        @functools.wraps(parse)
        def parse_once(text: str):
            return memo(text) if len(text) <= _MEMO_MAX_CHARS else parse(text)
        return parse_once
    return wrap


def parse_api(entry: str) -> Tool:
    """One numbered API line of an ms_agent system prompt → a :class:`Tool` with a JSON schema."""
    return _copy(_parse_api(entry))


@_memoised(maxsize=2048)
def _parse_api(entry: str) -> Tool:
    name, sep, rest = entry.partition(':')
    name = name.strip()
    if not sep or not name or re.search(r'[\s,\[\]]', name):
        raise ConversionError(f'API entry without a usable name: {entry[:80]!r}')
    pos = rest.find('Parameters:')
    if pos == -1:
        desc_text, params = rest, []
    else:
        desc_text = rest[:pos]
        after = rest[pos + len('Parameters:'):]
        m = _OPENING.search(after)
        if not m:
            raise ConversionError(f'{name}: "Parameters:" is not followed by a list')
        params = _parse_literal(_bracketed(after, m.start()))
    desc_text = desc_text.strip()
    m = _INTERACT.match(desc_text)
    useful = _USEFUL.match(m.group(2)) if m else None
    description = (useful.group(1) if useful else m.group(2) if m else desc_text).strip()
    if description.endswith('.'):  # the template's own separator: "… useful for? {description}. Parameters:"
        description = description[:-1].rstrip()
    if not description and m:
        description = f'Interact with the {m.group(1)} API'
    try:
        if isinstance(params, dict):
            return Tool.from_openai({'name': name, 'description': description, 'parameters': params})
        if not isinstance(params, list):
            raise ConversionError(f'{name}: parameters are neither a list nor a JSON schema')
        return Tool.from_dict({'name': name, 'description': description, 'parameters': params})
    except CaseError as e:
        raise ConversionError(str(e) if str(e).startswith(f'tool {name}:') else f'{name}: {e}') from e


def _agentfabric_tool_line(line: str) -> tuple[str, str, str] | None:
    """``(name, description, schema text)`` of one tool line, or None for any other line."""
    line = line.rstrip()
    head = _AF_HEAD.match(line)
    if not head or not line.endswith(_AF_TAIL):
        return None
    api = _AF_API.search(line, head.end() + 1)
    params = _AF_PARAMS.search(line, api.end()) if api else None
    if not params or params.end() >= len(line) - len(_AF_TAIL):
        return None
    return head.group(1), line[api.end():params.start()], line[params.end():len(line) - len(_AF_TAIL)]


def parse_agentfabric_system(system: str) -> list[Tool]:
    """The tools of an AgentFabric-style system prompt (e.g. ms_agent_for_agentfabric records)."""
    tools = []
    for name, description, schema in filter(None, map(_agentfabric_tool_line, system.split('\n'))):
        try:
            params = loads(schema)
        except ValueError as e:
            raise ConversionError(f'{name}: its parameter schema is not valid JSON ({e})') from e
        try:
            tools.append(Tool.from_openai({'name': name, 'description': description.strip(), 'parameters': params}))
        except CaseError as e:
            raise ConversionError(f'{name}: unusable parameter schema ({e})') from e
    if not tools:
        raise ConversionError('system prompt lists no tools')
    return tools


@functools.lru_cache(maxsize=256)
def _numbered(k: int) -> re.Pattern:
    """Line ``k. name:`` of an API list."""
    return re.compile(rf'\n[^\S\n]*{k}\.[^\S\n]+(?=\S+?:)')


def _api_entries(body: str) -> list[str]:
    """The text of each API entry. Entry ``k`` starts at ``k. name:`` on a new line and runs through its
    ``Parameters:`` list, so a description holding a numbered line (even ``\n\n2. name: …``) stays in its
    tool; an entry without a parameter list ends at the next number."""
    body = '\n' + body  # every entry starts after a line end (a pattern starting with "\n" is found fast)
    entries, pos, params = [], 0, 0
    while mark := _numbered(len(entries) + 1).search(body, pos):
        if 0 <= params < mark.end():  # -1: no "Parameters:" left (searched once, so linear time)
            params = body.find('Parameters:', mark.end())
        bracket = _OPENING.search(body, params) if params != -1 else None
        if bracket:
            end = bracket.start() + len(_bracketed(body, bracket.start()))
        else:
            params = -1  # no list after any later "Parameters:" either
            nxt = _numbered(len(entries) + 2).search(body, mark.end())
            end = nxt.start() if nxt else len(body)
        entries.append(body[mark.end():end])
        pos = end
    if _API_ENTRY.search(body, pos):
        raise ConversionError('API entries must be numbered 1, 2, 3, … in order')
    return entries


def parse_system(system: str) -> list[Tool]:
    """All APIs of an ms_agent system prompt, in order, however many there are.

    An AgentFabric-style system prompt (``## 你拥有如下工具：`` / ``## You have the following tools:``)
    is read too, so already-converted data can be re-rendered with the exact current format.
    Each text is parsed once (:func:`_memoised`); every call gets its own Tool objects.
    """
    return [_copy(t) for t in _parse_system(system)]


@_memoised(maxsize=1024)
def _parse_system(system: str) -> tuple[Tool, ...]:
    head = _API_HEADER.search(system)
    if not head:
        if re.search(r'## (你拥有如下工具：|You have the following tools:)', system):
            return tuple(parse_agentfabric_system(system))
        raise ConversionError('system prompt lists no APIs ("You have access to the following APIs:" missing)')
    body = system[head.end():]
    foot = _API_FOOTER.search(body)
    body = body[:foot.start()] if foot else body
    entries = _api_entries(body)
    if not entries:
        raise ConversionError('no numbered API entries found in the system prompt')
    tools = [_parse_api(entry.strip()) for entry in entries]
    names = [t.name for t in tools]
    if len(set(names)) != len(names):
        raise ConversionError(f'duplicate API names {names}')
    return tuple(tools)


def parse_assistant(text: str, tool_names: set[str]) -> tuple[list[ToolCall], str]:
    """An ms_agent assistant reply → its calls (with observations) and the final answer."""
    parts = [(m.group(1), m.end(), m.start()) for m in _BLOCK_KEYS.finditer(text)]
    if not parts:
        return [], text.strip()
    blocks = [(key, text[end:(parts[i + 1][2] if i + 1 < len(parts) else len(text))])
              for i, (key, end, _) in enumerate(parts)]
    lead = text[:parts[0][2]].strip()
    calls: list[ToolCall] = []
    final: str | None = None
    after_calls: list[str] = []  # thoughts after the last observation, when there is no Final Answer
    pending: dict | None = None
    for key, value in blocks:
        if key == 'Action':
            if pending:
                raise ConversionError(f'Action {pending["name"]!r} has no Action Input/Observation')
            pending = {'name': value.strip()}
        elif key == 'Action Input':
            if not pending or 'arguments' in pending:
                raise ConversionError('Action Input without a preceding Action')
            try:
                args = _parse_literal(value)
            except ConversionError as e:
                raise ConversionError(f'Action Input of {pending["name"]!r} is {e}') from e
            if not isinstance(args, dict):
                raise ConversionError(f'Action Input of {pending["name"]!r} is not a JSON object')
            try:
                dumps(args)
            except (TypeError, ValueError) as e:  # NaN, Infinity, or a Python-only value such as a set
                raise ConversionError(f'Action Input of {pending["name"]!r} is not valid JSON ({e})') from None
            pending['arguments'] = args
        elif key == 'Observation':
            if not pending or 'arguments' not in pending:
                raise ConversionError('Observation without a preceding Action/Action Input')
            if pending['name'] not in tool_names:
                raise ConversionError(f'calls {pending["name"]!r}, which is not among the APIs {sorted(tool_names)}')
            obs = value.strip()
            obs = obs[len('<result>'):-len('</result>')] if obs.startswith('<result>') and obs.endswith('</result>') else obs
            calls.append(ToolCall(pending['name'], pending['arguments'], observation=obs))
            pending = None
            after_calls = []
        elif key == 'Final Answer':
            final = value.strip()
        elif key == 'Thought' and value.strip() and 'final answer' not in value.lower():
            after_calls.append(value.strip())
    if pending:
        raise ConversionError(f'Action {pending["name"]!r} is not followed by an Observation')
    answer = final if final is not None else '\n'.join(after_calls if calls else [lead, *after_calls]).strip()
    if not answer:
        raise ConversionError('assistant reply has no final answer')
    return calls, answer


def parse_record(record: Any, rid: str) -> tuple[list[Tool], list[ConversationTurn]]:
    if not isinstance(record, dict) or not isinstance(record.get('conversations'), list):
        raise ConversionError('record has no "conversations" list')
    conv = record['conversations']
    if any(not isinstance(m, dict) or not isinstance(m.get('value'), str) for m in conv):
        raise ConversionError('every message needs "from" and a string "value"')
    roles = [m.get('from') for m in conv]
    if not roles or roles[0] != 'system':
        raise ConversionError('first message is not the system prompt')
    rest = roles[1:]
    if len(rest) < 2 or rest[::2] != ['user'] * len(rest[::2]) or rest[1::2] != ['assistant'] * len(rest[1::2]) \
            or len(rest) % 2:
        raise ConversionError(f'messages after the system prompt must alternate user/assistant, got {roles}')
    tools = parse_system(conv[0]['value'])
    names = {t.name for t in tools}
    turns = []
    for user, assistant in zip(conv[1::2], conv[2::2]):
        if not user['value'].strip():
            raise ConversionError('empty user message')
        calls, answer = parse_assistant(assistant['value'], names)
        turns.append(ConversationTurn(user['value'], calls, answer))
    return tools, turns


def pick_instruction(pool: dict[str, list], rid: str, lang: str) -> Instruction:
    """A stable pick from an instruction pool (the same record always gets the same role)."""
    options = pool.get(lang) or pool.get('en') or ['']
    digest = int(hashlib.sha256(rid.encode()).hexdigest(), 16)
    return check_instruction(options[digest % len(options)])


MAX_RECORD_BYTES = 4 * 2 ** 20  # a longer raw line is rejected unread (ms_agent records take a few KB)
MAX_LISTED = 10_000  # rejects and warnings listed in a report; more are counted only


@dataclass
class ConversionReport:
    """What a conversion did: ``read == converted + rejected`` records; the first :data:`MAX_LISTED` rejects
    and warnings are listed (line, id, reason)."""
    read: int = 0
    converted: int = 0
    written: int = 0  # samples (one per RolePlay request)
    n_rejected: int = 0
    rejected: list[dict] = field(default_factory=list)
    warned: list[dict] = field(default_factory=list)  # records kept although suspicious (keep_suspicious)
    n_warned: int = 0

    def reject(self, line: int, rid: str, reason: str) -> None:
        self.n_rejected += 1
        if len(self.rejected) < MAX_LISTED:
            self.rejected.append({'line': line, 'id': storable(rid[:200]), 'reason': storable(reason[:500])})

    def warn(self, line: int, rid: str, reason: str) -> None:
        self.n_warned += 1
        if len(self.warned) < MAX_LISTED:
            self.warned.append({'line': line, 'id': storable(rid[:200]), 'reason': storable(reason[:500])})

    def summary(self) -> dict:
        return {'read': self.read, 'converted': self.converted, 'rejected': self.n_rejected,
                'kept_with_warning': self.n_warned, 'samples_written': self.written}

    def to_dict(self) -> dict:
        return {**self.summary(), 'rejects': self.rejected, 'warnings': self.warned}


def _record(line: str | BadLine) -> Any:
    """The JSON value of one raw line (ConversionError when there is none)."""
    if isinstance(line, BadLine):
        raise ConversionError(line.reason)
    try:
        return loads(line)
    except ValueError as e:
        raise ConversionError(f'not JSON: {e}') from None


def _record_id(record: Any, default: str) -> str:
    rid = record.get('id') if isinstance(record, dict) else None
    if rid is None:
        return default
    if not isinstance(rid, (str, int)) or isinstance(rid, bool):
        raise ConversionError('"id" must be a string or an integer')
    return str(rid)


def injection_problems(tools: list[Tool], turns: list[ConversationTurn]) -> list[str]:
    """Where a record's texts could pass for prompt structure (:func:`helpers.agentfabric.injection`): its tool
    texts (names, descriptions, parameters, enum values) and user turns must hold neither a chat-template token
    nor a prompt marker or section header; its calls, observations and answers no chat-template token (markers
    belong there)."""
    found = []

    def check(where: str, text: Any, markers: bool = True) -> None:
        what = injection(text, markers) if isinstance(text, str) else None
        if what:
            found.append(f'{where} holds {what}')
    for t in tools:
        check(f'tool {t.name!r}: its name', t.name)
        check(f'tool {t.name!r}: its description', t.description)
        for p in t.parameters:
            for text in (p.name, p.description, *(p.enum or ())):
                check(f'tool {t.name!r}: parameter {p.name!r}', text)
    for k, turn in enumerate(turns, 1):
        check(f'user turn {k}', turn.query)
        check(f'the answer of turn {k}', turn.answer, markers=False)
        for c in turn.calls:
            check(f'the call of {c.name!r} in turn {k}', dumps(c.arguments), markers=False)
            check(f'the observation of {c.name!r} in turn {k}', c.observation, markers=False)
    return found


def _conversation(record: Any, rid: str, instruction: Instruction | None, pool: dict | None,
                  fmt: str, keep_suspicious: bool, warn) -> tuple[Conversation, list[str]]:
    """One raw record → its conversation and its output rows as JSON text (ConversionError: why not)."""
    tools, turns = parse_record(record, rid)
    problems = injection_problems(tools, turns)
    if problems and not keep_suspicious:
        raise ConversionError(f'possible prompt injection: {"; ".join(problems[:3])} (keep_suspicious / '
                              '--keep-suspicious keeps such records with a warning)')
    lang = 'zh' if has_chinese(turns[0].query) else 'en'
    instr = instruction if instruction is not None else pick_instruction(pool or {}, rid, lang)
    conv = Conversation(id=rid, instruction=instr, tools=tools, turns=turns, lang=None, meta={'source': 'ms_agent'})
    rows = [dumps(row) for row in sample_rows([conv], fmt)]
    for row in rows:
        try:
            row.encode('utf-8')
        except UnicodeEncodeError as e:
            raise ConversionError(f'holds a lone surrogate ({row[e.start]!r}), which is no Unicode text: UTF-8 '
                                  'cannot encode it') from None
    if problems:
        warn(f'kept although: {"; ".join(problems[:3])}')
    return conv, rows


def _convert(lines: Iterable[str | BadLine], instruction: Instruction | None, pool: dict | None,
             report: ConversionReport, fmt: str,
             keep_suspicious: bool = False) -> Iterator[tuple[Conversation, list[str]]]:
    for n, line in enumerate(lines, 1):
        if isinstance(line, str) and not line.strip():
            continue
        report.read += 1
        rid = f'line{n}'
        warnings: list[str] = []
        try:
            record = _record(line)
            rid = _record_id(record, rid)
            conv, rows = _conversation(record, rid, instruction, pool, fmt, keep_suspicious, warnings.append)
        except ConversionError as e:
            reason = str(e)
        except Exception as e:  # noqa: BLE001 - whatever fails inside one record rejects that record only
            reason = f'{type(e).__name__}: {e}' if str(e) else type(e).__name__
        else:
            report.converted += 1
            for w in warnings:
                report.warn(n, rid, w)
            yield conv, rows
            continue
        report.reject(n, rid, reason)


def convert_lines(lines: Iterable[str | BadLine], instruction: Instruction | None = None, pool: dict | None = None,
                  report: ConversionReport | None = None, keep_suspicious: bool = False) -> Iterator[Conversation]:
    """Parse raw JSONL lines into conversations; bad ones are recorded in ``report`` (and, with
    ``keep_suspicious``, records that hold prompt structure are kept with a warning there instead)."""
    report = report if report is not None else ConversionReport()
    for conv, _ in _convert(lines, instruction, pool, report, 'messages', keep_suspicious):
        yield conv


def sample_rows(conversations: Iterable[Conversation], fmt: str = 'messages') -> Iterator[dict]:
    """Training rows in ms-swift ``messages`` form or the ``conversations`` (agentfabric) form."""
    if fmt not in FORMATS:
        raise ValueError(f'unknown format {fmt!r}: use one of {FORMATS}')
    for conv in conversations:
        for i, s in enumerate(render(conv)):
            yield s.to_messages() if fmt == 'messages' else s.to_conversations(f'{conv.id}#{i}')


def convert_file(input_path: str | Path, output_path: str | Path, fmt: str = 'messages',
                 instruction: Instruction | None = None, pool: dict | None = None,
                 keep_suspicious: bool = False) -> ConversionReport:
    """Convert a raw ms_agent JSONL file, writing the output atomically; a line longer than
    :data:`MAX_RECORD_BYTES` is rejected unread. Raises :class:`~helpers.jsonl.PathError` for an output that
    would overwrite the input (or has no folder) and OSError only when the input cannot be read at all."""
    if fmt not in FORMATS:
        raise ValueError(f'unknown format {fmt!r}: use one of {FORMATS}')
    check_paths({'output': output_path}, {'input': input_path})
    report = ConversionReport()
    lines = read_text_lines(input_path, MAX_RECORD_BYTES)
    with atomic_write(output_path) as out:
        for _, rows in _convert(lines, instruction, pool, report, fmt, keep_suspicious):
            out.write(''.join(row + '\n' for row in rows))
            report.written += len(rows)
    return report


def hub_records(dataset_id: str, split: str = 'train', limit: int | None = None,
                subset: str | None = None) -> Iterator[str]:
    """Raw records of a ModelScope dataset (``iic/ms_agent``, ``AI-ModelScope/ms_agent_for_agentfabric`` …)
    as JSON lines for :func:`convert_lines`; needs the hub (check ``environment.hub_reachable`` first)."""
    from modelscope.msdatasets import MsDataset
    ds = MsDataset.load(dataset_id, subset_name=subset, split=split)
    for i, row in enumerate(ds):
        if limit is not None and i >= limit:
            break
        conv = row.get('conversations')
        if isinstance(conv, str):
            try:
                conv = json.loads(conv)
            except ValueError:
                pass
        yield json.dumps({'id': row.get('id') or f'{dataset_id}:{split}:{i}', 'conversations': conv},
                         ensure_ascii=False)


def to_ms_agent(conv: Conversation) -> dict:
    """A conversation written back in the raw ms_agent format (for benchmarks and round-trip tests)."""
    apis = []
    for i, t in enumerate(conv.tools, 1):
        params = [{'name': p.name, 'description': p.description, 'required': str(p.required), 'type': p.type,
                   **({'enum': p.enum} if p.enum else {})} for p in t.parameters]
        apis.append(f'{i}. {t.name}: Call this tool to interact with the {t.name} API. What is the {t.name} API '
                    f'useful for? {t.description}. Parameters: {json.dumps(params, ensure_ascii=False)}')
    system = ('Answer the following questions as best you can. You have access to the following APIs:\n'
              + '\n\n'.join(apis) + '\n\nUse the following format:\n\nThought: you should always think about what to do\n'
              f'Action: the action to take, should be one of the above tools[{", ".join(t.name for t in conv.tools)}]\n'
              'Action Input: the input to the action\nObservation: the result of the action\n'
              '... (this Thought/Action/Action Input/Observation can be repeated zero or more times)\n'
              'Thought: I now know the final answer\nFinal Answer: the final answer to the original input question\nBegin!')
    turns = [{'from': 'system', 'value': system}]
    for t in conv.turns:
        reply = ''.join(f'Action: {c.name}\nAction Input: {json.dumps(c.arguments, ensure_ascii=False)}\n'
                        f'Observation: {c.observation}\n' for c in t.calls)
        reply += f'Thought: I now know the final answer\nFinal Answer: {t.answer}' if t.calls else t.answer
        turns += [{'from': 'user', 'value': t.query}, {'from': 'assistant', 'value': reply}]
    return {'id': conv.id, 'conversations': turns}


def ms_agent_rows(conversations: Iterable[Conversation]) -> list[dict]:
    """The conversations as ms-swift ``messages`` rows in the original ``ms_agent`` prompt format, the
    recipe before the guide's fix: one row per conversation, exactly the record :func:`to_ms_agent` writes
    (ms_agent's ReAct system prompt listing the APIs, the bare user queries, assistant replies
    ``Action:``/``Action Input:``, ``Observation:``, ``Thought:``/``Final Answer:``). Every assistant turn
    is trained, as ms-swift trains ms_agent records; train with ``--loss_scale react`` (the call lines
    weighted 2, the observation text after ``Observation:`` masked)."""
    rows = []
    for conv in conversations:
        record = to_ms_agent(conv)
        rows.append({'messages': [{'role': m['from'], 'content': m['value']} for m in record['conversations']],
                     'meta': {'conversation': conv.id, 'format': 'ms_agent', 'lang': conv.lang,
                              'kind': conv.meta.get('kind'), 'masked': bool(conv.meta.get('masked'))}})
    return rows
