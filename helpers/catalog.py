"""Tool catalog: the bundled offline tools, their bilingual texts and deterministic implementations.

``data/tool_catalog.json`` describes 36 tools in 16 categories (6 are held out for the test split):
zh/en descriptions, typed parameters whose values come from the pools in ``data/slot_values.json``,
query templates per language, *option clauses* that state optional values (appended to a query that
leaves them out) and an answer template for the reply after the tool result. An optional parameter may
declare its ``default``: the value the implementation uses when it is left out (scoring accepts it).
Each tool runs offline through a stand-in in :data:`IMPLEMENTATIONS` that derives its numbers from a
SHA-256 of the arguments, so the same call always gives the same result.

Queries that need no tool: ``data/no_call_queries.json`` holds fixed ones (greetings, knowledge
questions, requests no tool can serve), ``data/near_miss_queries.json`` templates that sit close to
named tools without fitting them (``{value}`` takes a value from a slot pool: "What kind of climate does
{value} have?" next to a weather tool). Either may name ``near`` tools (offered with the query) and
``avoid`` categories (never offered: a search tool could answer a knowledge question).
``data/instructions.json`` holds role instructions. :func:`validate_catalog` and
:func:`validate_no_call` check the data against the rules the synthetic data generator relies on.
"""
from __future__ import annotations

import functools
import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from .agentfabric import LANGS, Instruction, Tool, ToolParam, check_instruction, has_chinese
from .jsonl import dumps, read_json
from .sandbox import calculate, run_code

DATA_DIR = Path(__file__).resolve().parent.parent / 'data'
DATA_FILES = {'catalog': 'tool_catalog.json', 'slots': 'slot_values.json', 'no_call': 'no_call_queries.json',
              'near_miss': 'near_miss_queries.json',
              'instructions': 'instructions.json'}  # what the loaders below read by default
PARAM_TYPES = ('string', 'integer', 'number', 'boolean')
CATEGORIES = ('weather', 'image', 'speech', 'translation', 'search', 'calendar', 'maps', 'math', 'code',
              'ecommerce', 'travel', 'finance', 'news', 'media', 'health', 'messaging')
SHARED_PARAMS = ('location', 'text', 'city', 'date', 'query', 'keyword')  # names the generator uses for distractors
BUILTIN_NAMES = ('amap_weather', 'image_gen')  # AgentFabric's own tool names, always in the training split
N_TOOLS, N_HOLDOUT = 36, 6
MIN_TEMPLATES, MIN_SLOT_VALUES = 7, 12
MIN_OPTIONS = 3  # option clauses per language of a tool with optional parameters: enough to split
_PLACEHOLDER = re.compile(r'\{(\w+)\}')
_TOOL_NAME = re.compile(r'[a-z][a-z0-9]*(_[a-z0-9]+)*')


# ------------------------------------------------------------------------------------------ data model

@dataclass
class CatalogParam:
    """One parameter: its JSON type, whether a call needs it, and the slot pool its values come from."""
    name: str
    type: str
    required: bool
    slot: str | None  # None for booleans: a template's wording fixes their value
    description: dict[str, str]
    enum: list | None = None
    default: Any = None  # what an optional parameter means when left out (None: nothing declared)


@dataclass
class QueryTemplate:
    """A user query: ``args`` are its ``{param}`` placeholders, ``fixed`` the values its wording implies.
    An *option clause* (a tool's ``options``) has the same shape: a sentence that states optional values,
    appended to a query that leaves them out."""
    id: str
    text: str
    args: list[str]
    fixed: dict[str, Any]


@dataclass
class CatalogTool:
    """A catalog tool with its texts in both languages and the name of its offline implementation."""
    name: str
    category: str
    holdout: bool
    impl: str
    description: dict[str, str]
    parameters: list[CatalogParam]
    primary: str  # the required parameter a follow-up such as "What about Shanghai?" changes
    queries: dict[str, list[QueryTemplate]]
    answer: dict[str, str]
    options: dict[str, list[QueryTemplate]] = field(default_factory=dict)  # lang -> option clauses

    def as_tool(self, lang: str) -> Tool:
        """The tool as AgentFabric describes it, with its texts in ``lang``."""
        return Tool(name=self.name, description=self.description[lang],
                    parameters=[ToolParam(name=p.name, description=p.description[lang], type=p.type,
                                          required=p.required, enum=p.enum, default=p.default)
                                for p in self.parameters])

    def fill(self, template: QueryTemplate, values: Mapping[str, Any],
             option: QueryTemplate | None = None, lang: str = 'en') -> tuple[str, dict]:
        """The query with ``values`` in its placeholders, and the call arguments in parameter order;
        an ``option`` clause (in ``lang``) is appended to the query and its values join the call."""
        given = {**{a: values[a] for a in template.args}, **template.fixed}
        text = _substitute(template.text, given)
        if option is not None:
            extra = {**{a: values[a] for a in option.args}, **option.fixed}
            text = join_clause(text, _substitute(option.text, extra), lang)
            given.update(extra)
        return text, {p.name: given[p.name] for p in self.parameters if p.name in given}

    def run(self, args: Mapping[str, Any]) -> dict:
        """The offline result of calling the tool with ``args`` (ValueError on bad arguments)."""
        return IMPLEMENTATIONS[self.impl](dict(args))

    def observation(self, args: Mapping[str, Any]) -> str:
        """The result as the tool returns it to the agent: JSON, or ``{"error": …}`` when the arguments
        cannot be used (the model reads why, as from a real tool)."""
        try:
            return dumps(self.run(args))
        except (ValueError, ArithmeticError) as e:  # an argument out of any range (a date past 9999) included
            return dumps({'error': str(e) or type(e).__name__})

    def answer_text(self, lang: str, args: Mapping[str, Any], result: Mapping[str, Any]) -> str:
        """The final answer in ``lang``, filled from the call's arguments and the result."""
        return _substitute(self.answer[lang], {**args, **result})


def join_clause(query: str, clause: str, lang: str) -> str:
    """A query followed by one more sentence: ``查下北京的天气预报`` + ``看5天的。`` -> ``查下北京的天气预报，看5天的。``"""
    query = query.rstrip()
    if lang == 'zh':
        return query + ('' if query[-1:] in '。？！?!.；;' else '，') + clause
    return query + ('' if query[-1:] in '.?!' else '.') + ' ' + clause


@dataclass(frozen=True)
class NoCallQuery:
    """A query that needs no tool, and its answer. A *template* has a ``slot``: ``{value}`` in its text and
    answer takes a value from that pool (:meth:`fill`). ``near``: tools it sits close to, offered with it;
    ``avoid``: tool categories never offered with it (a search tool could answer a knowledge question)."""
    id: str
    text: str
    answer: str
    near: tuple[str, ...] = ()
    avoid: tuple[str, ...] = ()
    slot: str | None = None

    def fill(self, value: Any) -> 'NoCallQuery':
        """The concrete query for one pool value (its id names the value)."""
        filled = {'value': value}
        return NoCallQuery(f'{self.id}:{value}', _substitute(self.text, filled), _substitute(self.answer, filled),
                           self.near, self.avoid)


def _substitute(text: str, values: Mapping[str, Any]) -> str:
    """Replace each ``{name}`` with ``values[name]`` (KeyError when one is missing)."""
    return _PLACEHOLDER.sub(lambda m: str(values[m[1]]), text)


# ------------------------------------------------------------------------------------------ loading

def _read_json(path: Path) -> Any:
    try:
        return read_json(path)
    except OSError as e:
        raise ValueError(f'cannot read {path}: {e}') from e
    except ValueError as e:  # names the file already
        raise ValueError(f'cannot read {e}') from e


def _field(d: Any, key: str, kind: type | tuple, where: str) -> Any:
    if not isinstance(d, Mapping) or key not in d:
        raise ValueError(f'{where}: missing "{key}"')
    if not isinstance(d[key], kind):
        raise ValueError(f'{where}: "{key}" has the wrong type ({type(d[key]).__name__})')
    return d[key]


def _texts(d: Any, key: str, where: str) -> dict[str, str]:
    texts = _field(d, key, Mapping, where)
    for lang in LANGS:
        if not isinstance(texts.get(lang), str) or not texts[lang].strip():
            raise ValueError(f'{where}: "{key}" needs a non-empty "{lang}" text')
    return {lang: texts[lang] for lang in LANGS}


def _parse_param(d: Any, where: str) -> CatalogParam:
    where = f'{where}, parameter {_field(d, "name", str, where)!r}'
    enum = d.get('enum')
    if enum is not None and (not isinstance(enum, list) or not enum):
        raise ValueError(f'{where}: "enum" must be a non-empty list')
    if 'slot' not in d or not (d['slot'] is None or isinstance(d['slot'], str)):
        raise ValueError(f'{where}: "slot" must be a pool name or null')
    return CatalogParam(d['name'], _field(d, 'type', str, where), _field(d, 'required', bool, where), d['slot'],
                        _texts(d, 'description', where), enum, d.get('default'))


def _parse_template(d: Any, where: str) -> QueryTemplate:
    where = f'{where}, template {_field(d, "id", str, where)!r}'
    args, fixed = [], {}
    for a in _field(d, 'args', list, where):
        if isinstance(a, str):
            args.append(a)
        elif isinstance(a, Mapping) and isinstance(a.get('name'), str) and 'value' in a and len(a) == 2:
            fixed[a['name']] = a['value']
        else:
            raise ValueError(f'{where}: an args entry is a parameter name or {{"name": ..., "value": ...}}: {a!r}')
    return QueryTemplate(d['id'], _field(d, 'text', str, where), args, fixed)


def _parse_tool(d: Any, where: str) -> CatalogTool:
    where = f'{where} ({_field(d, "name", str, where)})'
    queries = _field(d, 'queries', Mapping, where)
    options = d.get('options', {})
    if not isinstance(options, Mapping):
        raise ValueError(f'{where}: "options" must be an object of option clauses per language')
    return CatalogTool(
        name=d['name'], category=_field(d, 'category', str, where), holdout=_field(d, 'holdout', bool, where),
        impl=_field(d, 'impl', str, where), description=_texts(d, 'description', where),
        parameters=[_parse_param(p, where) for p in _field(d, 'parameters', list, where)],
        primary=_field(d, 'primary', str, where),
        queries={lang: [_parse_template(q, f'{where} {lang}') for q in _field(queries, lang, list, where)]
                 for lang in LANGS},
        answer=_texts(d, 'answer', where),
        options={lang: [_parse_template(q, f'{where} {lang} option') for q in _field(options, lang, list, where)]
                 for lang in LANGS if options})


def load_catalog(path: str | Path | None = None) -> list[CatalogTool]:
    """The tools of ``data/tool_catalog.json`` (or ``path``)."""
    path = Path(path or DATA_DIR / DATA_FILES['catalog'])
    data = _read_json(path)
    if not isinstance(data, list):
        raise ValueError(f'{path}: the catalog must be a JSON list of tools')
    return [_parse_tool(d, f'{path}: tool #{i}') for i, d in enumerate(data)]


def load_slot_values(path: str | Path | None = None) -> dict[str, dict[str, list]]:
    """The value pools, ``{slot: {"zh": [...], "en": [...]}}``."""
    path = Path(path or DATA_DIR / DATA_FILES['slots'])
    data = _read_json(path)
    if not isinstance(data, Mapping):
        raise ValueError(f'{path}: slot values must be an object of pools')
    for slot, pools in data.items():
        for lang in LANGS:
            values = _field(pools, lang, list, f'{path}: slot {slot!r}')
            if not values or not all(isinstance(v, (str, int, float)) and not isinstance(v, bool) for v in values):
                raise ValueError(f'{path}: slot {slot!r} {lang} must be a non-empty list of strings or numbers')
    return dict(data)


def _no_call_query(item: Any, where: str, qid: str | None = None, group: Mapping | None = None) -> NoCallQuery:
    """One no-call query of a file; ``near``, ``avoid`` and ``slot`` come from its ``group`` when it has one."""
    for key in ('text', 'answer') if qid else ('id', 'text', 'answer'):
        if not _field(item, key, str, where).strip():
            raise ValueError(f'{where}: "{key}" is empty')
    source = group if group is not None else item
    lists = {key: source.get(key, []) for key in ('near', 'avoid')}
    for key, value in lists.items():
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ValueError(f'{where}: "{key}" must be a list of names')
    slot = source.get('slot')
    if slot is not None and not isinstance(slot, str):
        raise ValueError(f'{where}: "slot" must be a pool name or null')
    return NoCallQuery(qid or item['id'], item['text'], item['answer'], tuple(lists['near']),
                       tuple(lists['avoid']), slot)


def load_no_call(path: str | Path | None = None) -> dict[str, list[NoCallQuery]]:
    """The fixed queries that need no tool call, per language: ``{lang: [NoCallQuery]}``
    (file: ``{lang: [{"id", "text", "answer", "near"?, "avoid"?}]}``)."""
    path = Path(path or DATA_DIR / DATA_FILES['no_call'])
    data = _read_json(path)
    return {lang: [_no_call_query(item, f'{path}: {lang} #{i}') for i, item in
                   enumerate(_field(data, lang, list, str(path)))] for lang in LANGS}


def load_near_miss(path: str | Path | None = None) -> dict[str, list[NoCallQuery]]:
    """Near-miss no-call templates per language, ids ``<group>.<lang>.<n>`` (file: a list of groups
    ``{"id", "near", "avoid", "slot", "zh": [{"text", "answer"}], "en": [...]}``)."""
    path = Path(path or DATA_DIR / DATA_FILES['near_miss'])
    data = _read_json(path)
    if not isinstance(data, list):
        raise ValueError(f'{path}: near-miss queries must be a JSON list of groups')
    out: dict[str, list[NoCallQuery]] = {lang: [] for lang in LANGS}
    for i, group in enumerate(data):
        where = f'{path}: group #{i}'
        gid = _field(group, 'id', str, where)
        for lang in LANGS:
            for n, item in enumerate(_field(group, lang, list, where), 1):
                out[lang].append(_no_call_query(item, f'{where} ({gid}) {lang} #{n}', f'{gid}.{lang}.{n}', group))
    return out


def load_instructions(path: str | Path | None = None) -> dict[str, list[Instruction]]:
    """Role instructions per language: plain strings or role configs ``{"name", "description", "instruction"}``."""
    path = Path(path or DATA_DIR / DATA_FILES['instructions'])
    data = _read_json(path)
    for lang in LANGS:
        for i, item in enumerate(_field(data, lang, list, str(path))):
            try:
                check_instruction(item)
            except ValueError as e:
                raise ValueError(f'{path}: {lang} #{i}: {e}') from e
    return {lang: data[lang] for lang in LANGS}


# ------------------------------------------------------------------------------------------ validation

def _type_ok(value: Any, kind: str) -> bool:
    """Whether ``value`` is a valid JSON value of parameter type ``kind`` (bools are not numbers)."""
    if kind == 'string':
        return isinstance(value, str) and bool(value.strip())
    if kind == 'boolean':
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    if kind == 'integer':
        return isinstance(value, int)
    return kind == 'number' and isinstance(value, (int, float)) and math.isfinite(value)


def _lang_problem(text: str, lang: str) -> bool:
    """Chinese text must contain Chinese; English text must not."""
    return has_chinese(text) != (lang == 'zh')


def _check_param(tool: str, p: CatalogParam, slots: Mapping[str, Mapping[str, list]]) -> list[str]:
    where = f'{tool}.{p.name}'
    problems = [f'{where}: {lang} description is not in that language'
                for lang in LANGS if _lang_problem(p.description[lang], lang)]
    if p.type not in PARAM_TYPES:
        return problems + [f'{where}: type {p.type!r} is not one of {PARAM_TYPES}']
    if p.enum and not all(_type_ok(v, p.type) for v in p.enum):
        problems.append(f'{where}: enum values must be of type {p.type}')
    if p.default is not None and (p.required or not _type_ok(p.default, p.type)
                                  or (p.enum and p.default not in p.enum)):
        problems.append(f'{where}: a default belongs to an optional parameter and must be a valid {p.type}'
                        + (' among the enum values' if p.enum else ''))
    if p.type == 'boolean':
        return problems + ([f'{where}: a boolean takes no slot pool (fix it in the wording)'] if p.slot else [])
    if p.slot not in slots:
        return problems + [f'{where}: slot pool {p.slot!r} is missing from the slot values']
    for lang in LANGS:
        values = slots[p.slot].get(lang) or []
        if p.enum and sorted(map(str, values)) != sorted(map(str, p.enum)):
            problems.append(f'{where}: enum slot {p.slot!r} ({lang}) must hold exactly the enum values')
        elif not p.enum and len(set(map(str, values))) < MIN_SLOT_VALUES:
            problems.append(f'{where}: slot {p.slot!r} ({lang}) has fewer than {MIN_SLOT_VALUES} distinct values')
        if not all(_type_ok(v, p.type) for v in values):
            problems.append(f'{where}: slot {p.slot!r} ({lang}) holds values that are not of type {p.type}')
        if lang == 'en' and any(has_chinese(v) for v in values):
            problems.append(f'{where}: slot {p.slot!r} (en) holds Chinese values')
    return problems


def _check_template(tool: CatalogTool, t: QueryTemplate, lang: str) -> list[str]:
    params = {p.name: p for p in tool.parameters}
    placeholders = _PLACEHOLDER.findall(t.text)
    problems = []
    if set(placeholders) != set(t.args):
        problems.append(f'{t.id}: placeholders {sorted(set(placeholders))} do not match args {sorted(t.args)}')
    if '{' in _PLACEHOLDER.sub('', t.text) or '}' in _PLACEHOLDER.sub('', t.text):
        problems.append(f'{t.id}: stray brace in the text')
    if len(set(t.args)) != len(t.args) or set(t.args) & set(t.fixed):
        problems.append(f'{t.id}: a parameter is listed twice in args')
    for name in t.args:
        if name not in params:
            problems.append(f'{t.id}: {name!r} is not a parameter of {tool.name}')
        elif params[name].type == 'boolean':
            problems.append(f'{t.id}: boolean {name!r} must use the {{"name", "value"}} form')
    for name, value in t.fixed.items():
        p = params.get(name)
        if p is None:
            problems.append(f'{t.id}: fixed {name!r} is not a parameter of {tool.name}')
        elif not (p.type == 'boolean' or p.enum) or not _type_ok(value, p.type) or (p.enum and value not in p.enum):
            problems.append(f'{t.id}: fixed {name}={value!r} must be a boolean or one of the enum values')
    missing = [p.name for p in tool.parameters if p.required and p.name not in t.args and p.name not in t.fixed]
    if missing:
        problems.append(f'{t.id}: required {missing} not in args')
    if _lang_problem(t.text, lang):
        problems.append(f'{t.id}: text is not in {lang}')
    return problems


def _check_option(tool: CatalogTool, t: QueryTemplate, lang: str) -> list[str]:
    """An option clause states optional values only, in its language, through placeholders or fixed values."""
    params = {p.name: p for p in tool.parameters}
    problems = [f'{t.id}: {name!r} is not an optional parameter of {tool.name}'
                for name in [*t.args, *t.fixed] if name not in params or params[name].required]
    if not t.args and not t.fixed:
        problems.append(f'{t.id}: an option clause must state at least one optional value')
    if set(_PLACEHOLDER.findall(t.text)) != set(t.args):
        problems.append(f'{t.id}: placeholders do not match args {sorted(t.args)}')
    for name in t.args:
        if name in params and params[name].type == 'boolean':
            problems.append(f'{t.id}: boolean {name!r} must use the {{"name", "value"}} form')
    for name, value in t.fixed.items():
        p = params.get(name)
        if p and (not (p.type == 'boolean' or p.enum) or not _type_ok(value, p.type)
                  or (p.enum and value not in p.enum)):
            problems.append(f'{t.id}: fixed {name}={value!r} must be a boolean or one of the enum values')
    if _lang_problem(t.text, lang):
        problems.append(f'{t.id}: text is not in {lang}')
    return problems


def _check_defaults(tool: CatalogTool, slots: Mapping[str, Mapping[str, list]]) -> list[str]:
    """A declared default must be what the implementation uses when the parameter is left out."""
    template = tool.queries['en'][0]
    params = {p.name: p for p in tool.parameters}
    try:
        _, args = tool.fill(template, {a: slots[params[a].slot]['en'][0] for a in template.args})
        used = implementation_defaults(tool.impl, args)
    except Exception:  # noqa: BLE001 - the template and run checks report it
        return []
    return [f'{tool.name}.{p.name}: declared default {p.default!r} but the implementation uses {used.get(p.name)!r}'
            for p in tool.parameters if p.default is not None and used.get(p.name) != p.default]


def _check_runs(tool: CatalogTool, slots: Mapping[str, Mapping[str, list]]) -> list[str]:
    """Run every template on sample pool values and fill the answer; report what fails."""
    params = {p.name: p for p in tool.parameters}
    problems = []
    for lang in LANGS:
        for i, t in enumerate(tool.queries[lang]):
            pools = {a: slots.get(params[a].slot or '', {}).get(lang) for a in t.args if a in params}
            if len(pools) != len(t.args) or not all(pools.values()) or set(_PLACEHOLDER.findall(t.text)) != set(t.args):
                continue  # reported by the template and parameter checks
            _, args = tool.fill(t, {a: pool[i % len(pool)] for a, pool in pools.items()})
            try:
                result = tool.run(args)
                if result != tool.run(args):
                    problems.append(f'{t.id}: {tool.name} is not deterministic')
                if not isinstance(result, dict) or not 3 <= len(result) <= 6:
                    problems.append(f'{t.id}: {tool.name} must return a dict of 3-6 keys')
                dumps(result)
                tool.answer_text(lang, args, result)
            except KeyError as e:
                problems.append(f'{t.id}: answer placeholder {e} is neither a required argument nor a result key')
            except Exception as e:  # noqa: BLE001 - any failure of the stand-in is a problem to report
                problems.append(f'{t.id}: running {tool.name}({args}) failed: {type(e).__name__}: {e}')
        for i, o in enumerate(tool.options.get(lang, [])):
            base = next((t for t in tool.queries[lang] if not {*o.args, *o.fixed} & {*t.args, *t.fixed}), None)
            names = [*(base.args if base else []), *o.args]
            pools = {a: slots.get(params[a].slot or '', {}).get(lang) for a in names if a in params}
            if base is None or len(pools) != len(names) or not all(pools.values()):
                continue  # reported by the template and option checks
            try:
                _, args = tool.fill(base, {a: pool[i % len(pool)] for a, pool in pools.items()}, o, lang)
                tool.answer_text(lang, args, tool.run(args))
            except Exception as e:  # noqa: BLE001 - any failure of the stand-in is a problem to report
                problems.append(f'{o.id}: running {tool.name} after {base.id} failed: {type(e).__name__}: {e}')
    return problems


def _check_id(item_id: str, prefix: str, kind: str, seen: set[str]) -> list[str]:
    """A template's or option clause's id: ``<prefix>.<n>`` and unique across the catalog (recorded in ``seen``)."""
    problems = []
    if not re.fullmatch(rf'{re.escape(prefix)}\.\d+', item_id):
        problems.append(f'{item_id}: id must look like {prefix}.<n>')
    if item_id in seen:
        problems.append(f'{item_id}: duplicate {kind} id')
    seen.add(item_id)
    return problems


def _check_tool(tool: CatalogTool, slots: Mapping[str, Mapping[str, list]], ids: set[str]) -> list[str]:
    problems = []
    if not _TOOL_NAME.fullmatch(tool.name):
        problems.append(f'{tool.name}: a tool name must be lowercase snake_case')
    if tool.impl not in IMPLEMENTATIONS:
        problems.append(f'{tool.name}: no implementation {tool.impl!r}')
    for key in ('description', 'answer'):
        problems += [f'{tool.name}: {lang} {key} is not in that language'
                     for lang in LANGS if _lang_problem(getattr(tool, key)[lang], lang)]
    params = {p.name: p for p in tool.parameters}
    problems += [f'{tool.name}: {lang} answer uses optional parameter {{{name}}}' for lang in LANGS
                 for name in _PLACEHOLDER.findall(tool.answer[lang]) if name in params and not params[name].required]
    if not 1 <= len(tool.parameters) <= 4 or len(params) != len(tool.parameters):
        problems.append(f'{tool.name}: needs 1-4 parameters with distinct names')
    for p in tool.parameters:
        problems += _check_param(tool.name, p, slots)
    if tool.primary not in params or not params[tool.primary].required:
        problems.append(f'{tool.name}: primary {tool.primary!r} must be a required parameter')
    for lang in LANGS:
        templates = tool.queries[lang]
        if len(templates) < MIN_TEMPLATES:
            problems.append(f'{tool.name}: {lang} has {len(templates)} templates, fewer than {MIN_TEMPLATES}')
        for t in templates:
            problems += _check_id(t.id, f'{tool.name}.{lang}', 'template', ids) + _check_template(tool, t, lang)
        for p in tool.parameters:
            mentioned = [p.name in t.args or p.name in t.fixed for t in templates]
            if not p.required and (all(mentioned) or not any(mentioned)):
                problems.append(f'{tool.name}: optional {p.name!r} must appear in some {lang} templates, not all')
        options = tool.options.get(lang, [])
        if any(not p.required for p in tool.parameters) and len(options) < MIN_OPTIONS:
            problems.append(f'{tool.name}: {lang} has {len(options)} option clauses, fewer than {MIN_OPTIONS}')
        for o in options:
            problems += _check_id(o.id, f'{tool.name}.opt.{lang}', 'option', ids) + _check_option(tool, o, lang)
    if tool.impl not in IMPLEMENTATIONS:
        return problems
    return problems + _check_runs(tool, slots) + _check_defaults(tool, slots)


def validate_catalog(tools: Sequence[CatalogTool], slots: Mapping[str, Mapping[str, list]]) -> list[str]:
    """Every problem with the catalog and its slot pools; an empty list when the data follows the rules."""
    problems, ids = [], set()
    names = [t.name for t in tools]
    if len(tools) != N_TOOLS:
        problems.append(f'the catalog has {len(tools)} tools, not {N_TOOLS}')
    problems += [f'{n}: duplicate tool name' for n in sorted({n for n in names if names.count(n) > 1})]
    for tool in tools:
        problems += _check_tool(tool, slots, ids)
    problems += [f'{t.name}: unknown category {t.category!r}' for t in tools if t.category not in CATEGORIES]
    problems += [f'category {c!r} has fewer than 2 tools' for c in CATEGORIES
                 if sum(t.category == c for t in tools) < 2]
    holdout = [t for t in tools if t.holdout]
    if len(holdout) != N_HOLDOUT or len({t.category for t in holdout}) != len(holdout):
        problems.append(f'need exactly {N_HOLDOUT} holdout tools in different categories, '
                        f'got {[t.name for t in holdout]}')
    problems += [f'{n}: must be in the catalog and not held out' for n in BUILTIN_NAMES
                 if not any(t.name == n and not t.holdout for t in tools)]
    counts = {'an optional parameter': (20, lambda t: any(not p.required for p in t.parameters)),
              'a non-string parameter': (8, lambda t: any(p.type != 'string' for p in t.parameters)),
              '3+ parameters': (6, lambda t: len(t.parameters) >= 3)}
    problems += [f'fewer than {n} tools have {what}' for what, (n, has) in counts.items()
                 if sum(map(has, tools)) < n]
    problems += [f'parameter name {n!r} must be shared by at least 2 tools' for n in SHARED_PARAMS
                 if sum(any(p.name == n for p in t.parameters) for t in tools) < 2]
    return problems


def validate_no_call(fixed: Mapping[str, Sequence[NoCallQuery]], templates: Mapping[str, Sequence[NoCallQuery]],
                     tools: Sequence[CatalogTool], slots: Mapping[str, Mapping[str, list]]) -> list[str]:
    """Every problem with the no-call queries: unknown tools, categories or pools, a ``{value}`` without a
    pool (or the reverse), text in the wrong language, ids or texts used twice."""
    names = {t.name for t in tools}
    problems = []
    for lang in LANGS:
        ids, texts = set(), set()
        for q in [*fixed.get(lang, []), *templates.get(lang, [])]:
            problems += [f'{q.id}: unknown near tool {n!r}' for n in q.near if n not in names]
            problems += [f'{q.id}: unknown category {c!r} to avoid' for c in q.avoid if c not in CATEGORIES]
            if q.id in ids:
                problems.append(f'{q.id}: duplicate id')
            if q.text in texts:
                problems.append(f'{q.id}: the same text as another no-call query: {q.text!r}')
            ids.add(q.id)
            texts.add(q.text)
            places = set(_PLACEHOLDER.findall(q.text + q.answer))
            pool = slots.get(q.slot, {}).get(lang) if q.slot else None
            if q.slot and (not pool or len(pool) < 9 or not all(isinstance(v, str) for v in pool)):
                problems.append(f'{q.id}: slot {q.slot!r} must be a pool of at least 9 strings (split like call '
                                'values)')
            if places - {'value'} or ('value' in _PLACEHOLDER.findall(q.text)) != bool(q.slot):
                problems.append(f'{q.id}: {{value}} must appear in the text exactly when a slot is named')
            if _lang_problem(q.text, lang) or _lang_problem(q.answer, lang):
                problems.append(f'{q.id}: text or answer is not in {lang}')
    return problems


# ------------------------------------------------------------------------------------------ implementations

IMPLEMENTATIONS: dict[str, Callable[[dict], dict]] = {}
_BASE_DAY = date(2025, 6, 1)  # results' dates count from here: no clock is read


class _Arguments:
    """One call's checked arguments, and numbers derived deterministically from their SHA-256."""

    def __init__(self, args: Any, required: Mapping[str, str]):
        if not isinstance(args, Mapping):
            raise ValueError(f'arguments must be a JSON object, got {type(args).__name__}')
        for name, kind in required.items():
            if args.get(name) is None:
                raise ValueError(f'missing required argument {name!r}')
            if not _type_ok(args[name], kind):
                raise ValueError(f'argument {name!r} must be a non-empty {kind}, got {args[name]!r}')
        self.args = dict(args)
        self.defaults: dict[str, Any] = {}  # optional parameter -> the default the implementation used
        try:
            canonical = json.dumps(self.args, sort_keys=True, ensure_ascii=False, default=str)
        except RecursionError:
            raise ValueError('arguments nested too deeply') from None
        self.seed = hashlib.sha256(canonical.encode('utf-8')).digest()
        self._n = 0

    def __getitem__(self, name: str) -> Any:
        return self.args[name]

    def opt(self, name: str, kind: str, default: Any, choices: Sequence = ()) -> Any:
        """An optional argument, checked, or ``default`` when absent."""
        self.defaults[name] = default
        value = self.args.get(name)
        if value is None:
            return default
        if not _type_ok(value, kind) or (choices and value not in choices):
            raise ValueError(f'argument {name!r} must be {"one of " + str(list(choices)) if choices else kind}, '
                             f'got {value!r}')
        return value

    def integer(self, lo: int, hi: int) -> int:
        self._n += 1
        digest = hashlib.sha256(self.seed + self._n.to_bytes(4, 'big')).digest()
        return lo + int.from_bytes(digest[:8], 'big') % (hi - lo + 1)

    def real(self, lo: float, hi: float, digits: int = 2) -> float:
        return round(lo + (hi - lo) * self.integer(0, 10 ** 6) / 10 ** 6, digits)

    def choice(self, seq: Sequence) -> Any:
        return seq[self.integer(0, len(seq) - 1)]

    def token(self, n: int = 12) -> str:
        return self.seed.hex()[:n]

    def day(self, span: int = 60) -> str:
        return (_BASE_DAY + timedelta(days=self.integer(0, span))).isoformat()

    def clock(self, first_hour: int = 6, last_hour: int = 22) -> str:
        return f'{self.integer(first_hour, last_hour):02d}:{self.integer(0, 11) * 5:02d}'


_RAW: dict[str, tuple[Callable[[_Arguments], dict], dict[str, str]]] = {}  # impl -> (function, required types)


def _impl(**required: str) -> Callable[[Callable[[_Arguments], dict]], Callable[[dict], dict]]:
    """Register ``fn(call)`` under its name as an implementation taking the raw argument dict."""
    def register(fn: Callable[[_Arguments], dict]) -> Callable[[dict], dict]:
        @functools.wraps(fn)
        def run(args: dict) -> dict:
            return fn(_Arguments(args, required))
        IMPLEMENTATIONS[fn.__name__] = run
        _RAW[fn.__name__] = (fn, required)
        return run
    return register


def implementation_defaults(impl: str, args: Mapping[str, Any]) -> dict[str, Any]:
    """The default each optional parameter takes inside implementation ``impl`` when called with ``args``."""
    fn, required = _RAW[impl]
    call = _Arguments(args, required)
    fn(call)
    return call.defaults


def _in_range(name: str, value: float, lo: float, hi: float) -> float:
    if not lo <= value <= hi:
        raise ValueError(f'argument {name!r} must be between {lo} and {hi}, got {value!r}')
    return value


# -- weather
_CONDITIONS = [('sunny', '晴'), ('partly cloudy', '多云'), ('overcast', '阴'), ('light rain', '小雨'),
               ('showers', '阵雨'), ('thunderstorms', '雷阵雨'), ('foggy', '雾'), ('hazy', '霾')]
_COLD_CONDITIONS = [('sunny', '晴'), ('overcast', '阴'), ('light snow', '小雪'), ('snow showers', '阵雪')]
_AQI_LEVELS = [(50, 'good', '优'), (100, 'moderate', '良'), (150, 'unhealthy for sensitive groups', '轻度污染'),
               (200, 'unhealthy', '中度污染'), (300, 'very unhealthy', '重度污染')]


@_impl(location='string')
def amap_weather(c: _Arguments) -> dict:
    """Current conditions."""
    temperature = c.integer(-8, 36)
    condition, condition_zh = c.choice(_COLD_CONDITIONS if temperature <= 1 else _CONDITIONS)
    return {'condition': condition, 'condition_zh': condition_zh, 'temperature': temperature,
            'humidity': c.integer(20, 95), 'wind_level': c.integer(1, 6)}


@_impl(location='string')
def air_quality(c: _Arguments) -> dict:
    """AQI, its level and the main pollutant."""
    c.opt('date', 'string', None)
    aqi = c.integer(12, 280)
    level, level_zh = next((en, zh) for top, en, zh in _AQI_LEVELS if aqi <= top)
    return {'aqi': aqi, 'level': level, 'level_zh': level_zh,
            'pollutant': 'O3' if aqi <= 50 else c.choice(['PM2.5', 'PM10', 'O3', 'NO2']),
            'pm25': round(aqi * c.real(0.35, 0.75), 1)}


@_impl(location='string')
def weather_forecast(c: _Arguments) -> dict:
    """Temperature range and rainy days over the next days."""
    days = _in_range('days', c.opt('days', 'integer', 3), 1, 15)
    low = c.integer(-10, 24)
    return {'forecast_days': days, 'low': low, 'high': low + c.integer(4, 12), 'rainy_days': c.integer(0, days)}


# -- image generation
@_impl(text='string')
def image_gen(c: _Arguments) -> dict:
    """A generated picture's URL."""
    resolution = c.opt('resolution', 'string', '1024*1024', ['1024*1024', '720*1280', '1280*720'])
    return {'image_url': f'https://example.com/img/{c.token()}.png', 'resolution': resolution,
            'seed': c.integer(1, 2 ** 31 - 1)}


@_impl(brand_name='string')
def logo_gen(c: _Arguments) -> dict:
    """A logo picture's URL."""
    style = c.opt('style', 'string', 'minimal', ['minimal', 'vintage', 'cartoon', 'tech'])
    c.opt('color', 'string', None)
    return {'image_url': f'https://example.com/img/logo_{c.token()}.png', 'style': style, 'variants': c.integer(2, 6)}


# -- speech
_TRANSCRIPTS = {
    'zh': ['明天上午十点的会改到下午两点，请大家互相转告。', '我已经到楼下了，你直接下来就行。',
           '这个方案整体没问题，细节我们下周再对一下。', '麻烦把报告的最终版发到群里，谢谢。',
           '今天的课就到这里，作业是第三章后面的练习题。', '您好，我想问一下订单退款的进度。'],
    'en': ["The ten o'clock meeting has moved to two this afternoon, please pass it on.",
           "I'm downstairs now, just come on down.",
           "The plan looks fine overall; let's go over the details next week.",
           'Please post the final version of the report in the group chat, thanks.',
           "That's all for today's class; homework is the exercises at the end of chapter three.",
           "Hi, I'm calling to check on the status of my refund."],
}


@_impl(text='string')
def text_to_speech(c: _Arguments) -> dict:
    """An audio file's URL and length (about 4 Chinese characters or 2.6 English words a second)."""
    voice = c.opt('voice', 'string', 'female', ['female', 'male', 'child'])
    speed = _in_range('speed', c.opt('speed', 'number', 1.0), 0.5, 2.0)
    seconds = (len(re.findall(r'[\u4e00-\u9fff]', c['text'])) * 0.24
               + len(re.findall(r'[A-Za-z0-9]+', c['text'])) * 0.38) / speed
    return {'audio_url': f'https://example.com/audio/{c.token()}.mp3', 'duration_seconds': round(max(seconds, 1.0), 1),
            'voice': voice, 'speed': speed}


@_impl(audio_url='string')
def speech_to_text(c: _Arguments) -> dict:
    """A canned transcript in the audio's language (auto: Chinese when the URL has Chinese in it)."""
    language = c.opt('language', 'string', 'auto', ['zh', 'en', 'auto'])
    if language == 'auto':
        language = 'zh' if has_chinese(c['audio_url']) else 'en'
    return {'transcript': c.choice(_TRANSCRIPTS[language]), 'language': language,
            'duration_seconds': c.integer(3, 95), 'confidence': c.real(0.82, 0.99)}


# -- translation
@_impl(text='string', target_language='string')
def translate(c: _Arguments) -> dict:
    """A placeholder translation: the text tagged with the target language (no model runs offline)."""
    tone = c.opt('tone', 'string', 'neutral', ['formal', 'casual'])
    return {'translation': f'[{c["target_language"]}] {c["text"]}', 'source_language': 'zh' if has_chinese(c['text'])
            else 'en', 'target_language': c['target_language'], 'tone': tone}


@_impl(word='string')
def dictionary_lookup(c: _Arguments) -> dict:
    """Part of speech and how many senses and examples the entry has."""
    word = c['word']
    pos = 'idiom' if re.fullmatch(r'[\u4e00-\u9fff]{4}', word) else c.choice(['n.', 'v.', 'adj.', 'adv.'])
    return {'word': word, 'part_of_speech': pos, 'senses': c.integer(1, 5), 'examples': c.integer(2, 12),
            'level': c.choice(['B1', 'B2', 'C1', 'C2'])}


# -- web search
_SOURCES = ['example.com', 'news.example.org', 'wiki.example.net', 'forum.example.cn', 'blog.example.io']


@_impl(query='string')
def web_search(c: _Arguments) -> dict:
    """Hit count and the top result's URL."""
    returned = _in_range('num_results', c.opt('num_results', 'integer', 5), 1, 50)
    source = c.choice(_SOURCES)
    return {'total_results': c.integer(1200, 9_800_000), 'returned': returned, 'top_source': source,
            'top_url': f'https://{source}/{c.token()}'}


@_impl(keyword='string')
def wiki_lookup(c: _Arguments) -> dict:
    """The entry's URL, length and last update; the edition defaults to the keyword's language."""
    lang = c.opt('lang', 'string', 'zh' if has_chinese(c['keyword']) else 'en', ['zh', 'en'])
    return {'title': c['keyword'], 'url': f'https://{lang}.wiki.example.org/entry/{c.token()}',
            'word_count': c.integer(800, 24_000), 'last_updated': c.day(), 'lang': lang}


# -- calendar / reminders
@_impl(content='string', time='string')
def create_reminder(c: _Arguments) -> dict:
    """The new reminder's id."""
    repeat = c.opt('repeat', 'string', 'none', ['none', 'daily', 'weekly', 'monthly'])
    return {'reminder_id': f'RMD-{c.token(8).upper()}', 'status': 'scheduled', 'repeat': repeat}


@_impl(title='string', date='string')
def calendar_add_event(c: _Arguments) -> dict:
    """The new event's id, start and length."""
    start = c.opt('start_time', 'string', '09:00')
    minutes = _in_range('duration_minutes', c.opt('duration_minutes', 'integer', 60), 1, 1440)
    return {'event_id': f'EVT-{c.token(8).upper()}', 'status': 'confirmed', 'starts_at': start,
            'length_minutes': minutes, 'conflicts': c.integer(0, 2)}


@_impl(date='string')
def calendar_query(c: _Arguments) -> dict:
    """How many events the day holds and when the first starts."""
    c.opt('keyword', 'string', None)
    count = c.integer(1, 6)
    return {'date': c['date'], 'count': count, 'first_time': c.clock(8, 14),
            'busy_hours': round(count * c.real(0.5, 1.5), 1)}


# -- maps / navigation
_SPEED_KMH = {'driving': 35.0, 'transit': 22.0, 'cycling': 14.0, 'walking': 4.8}


@_impl(keyword='string', location='string')
def poi_search(c: _Arguments) -> dict:
    """Matching places and the nearest one."""
    radius = _in_range('radius_m', c.opt('radius_m', 'integer', 1000), 50, 50_000)
    return {'count': c.integer(1, 20), 'nearest_name': f'{c["keyword"]} #{c.integer(1, 9)}',
            'distance_m': c.integer(30, radius), 'rating': c.real(3.5, 4.9, 1)}


@_impl(origin='string', destination='string')
def route_plan(c: _Arguments) -> dict:
    """Distance and travel time at a typical speed for the mode."""
    mode = c.opt('mode', 'string', 'driving', list(_SPEED_KMH))
    km = c.real(1.2, 45.0, 1) if c['origin'] != c['destination'] else 0.0
    return {'distance_km': km, 'duration_min': max(1, round(km / _SPEED_KMH[mode] * 60)), 'mode': mode,
            'steps': c.integer(3, 14)}


# -- maths / units
_UNITS = {'km': ('length', 1000.0), 'mile': ('length', 1609.344), 'm': ('length', 1.0), 'ft': ('length', 0.3048),
          'cm': ('length', 0.01), 'inch': ('length', 0.0254), 'kg': ('mass', 1000.0), 'lb': ('mass', 453.59237),
          'g': ('mass', 1.0), 'oz': ('mass', 28.349523125), 'liter': ('volume', 1.0), 'gallon': ('volume', 3.785411784),
          'celsius': ('temperature', None), 'fahrenheit': ('temperature', None)}


@_impl(expression='string')
def calculator(c: _Arguments) -> dict:
    """The expression's real value (``^``, ``×`` and ``÷`` are read as ``**``, ``*`` and ``/``), computed in
    the :mod:`~helpers.sandbox` (``SandboxError``, a ValueError, when there is none)."""
    expression = c['expression']
    value = calculate(expression.replace('^', '**').replace('×', '*').replace('÷', '/'))
    rounded = isinstance(value, float) and round(value, 6) != value
    value = round(value, 6) if isinstance(value, float) else value
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        value = int(value)
    return {'expression': expression, 'result': value, 'rounded': rounded}


@_impl(value='number', from_unit='string', to_unit='string')
def unit_convert(c: _Arguments) -> dict:
    """The value in the target unit (length, mass, volume or temperature)."""
    (kind, a), (kind_to, b) = _UNITS.get(c['from_unit'], (None, None)), _UNITS.get(c['to_unit'], (None, None))
    if kind is None or kind_to is None:
        raise ValueError(f'units must be among {list(_UNITS)}')
    if kind != kind_to:
        raise ValueError(f'cannot convert {kind} ({c["from_unit"]}) to {kind_to} ({c["to_unit"]})')
    value = c['value']
    if kind != 'temperature':
        converted = value * a / b
    elif c['from_unit'] == c['to_unit']:
        converted = value
    else:
        converted = value * 9 / 5 + 32 if c['from_unit'] == 'celsius' else (value - 32) * 5 / 9
    return {'value': value, 'from_unit': c['from_unit'], 'to_unit': c['to_unit'], 'converted': round(converted, 4)}


# -- code execution
@_impl(code='string')
def run_python(c: _Arguments) -> dict:
    """The snippet's output from the :mod:`~helpers.sandbox`, a canned note for code it does not cover,
    or the error."""
    status, stdout = run_code(c['code'])
    return {'status': status, 'stdout': stdout or '(no output)', 'exec_ms': c.integer(2, 60)}


_SQL_TOKEN = re.compile(r"\s+|'(?:[^']|'')*'?|\"[^\"]*\"?|\w+|.", re.S)  # no nested quantifiers: linear time
_SQL_MAX = 20_000  # characters of one query
_AGGREGATES = {'count', 'sum', 'avg', 'max', 'min'}


def _sql_select(sql: str) -> tuple[list[str], list[str]]:
    """The query's tokens (whitespace dropped, words lower-cased) and its top-level column list."""
    if len(sql) > _SQL_MAX:
        raise ValueError(f'the query is longer than {_SQL_MAX} characters')
    tokens = [t.lower() if t[0].isalnum() or t[0] == '_' else t for t in _SQL_TOKEN.findall(sql) if not t.isspace()]
    start = 1 if tokens[:1] == ['select'] else None
    if tokens[:1] == ['with']:  # a common table expression: the first SELECT outside its parentheses
        depth = 0
        for i, t in enumerate(tokens):
            depth = max(0, depth + (t == '(') - (t == ')'))
            if t == 'select' and depth == 0 and i and tokens[i - 1] == ')':
                start = i + 1
                break
    if start is None or start >= len(tokens):
        raise ValueError('the sample database is read-only: only SELECT queries can run')
    depth = 0
    for i in range(start, len(tokens)):
        depth = max(0, depth + (tokens[i] == '(') - (tokens[i] == ')'))
        if tokens[i] == 'from' and depth == 0 and i > start:
            return tokens, tokens[start:i]
    raise ValueError('the sample database is read-only: only SELECT queries can run')


@_impl(sql='string')
def run_sql(c: _Arguments) -> dict:
    """Row and column counts for a read-only query (read by a linear tokenizer: no backtracking)."""
    database = c.opt('database', 'string', 'demo')
    tokens, select = _sql_select(c['sql'])
    depth, commas = 0, 0
    for t in select:
        depth = max(0, depth + (t == '(') - (t == ')'))
        commas += t == ',' and depth == 0
    columns = c.integer(3, 9) if select == ['*'] else commas + 1
    limit = next((m[0] for t, n in zip(tokens, tokens[1:]) if t == 'limit' and (m := re.match(r'\d+', n))), None)
    aggregate = any(t in _AGGREGATES and n == '(' for t, n in zip(select, select[1:]))
    if aggregate and not any(t == 'group' and n == 'by' for t, n in zip(tokens, tokens[1:])):
        rows = 1
    else:
        digits = (limit or '120').lstrip('0') or '0'
        rows = c.integer(0, min(int(digits), 120) if len(digits) <= 3 else 120)
    return {'db_name': database, 'rows': rows, 'columns': columns, 'elapsed_ms': c.integer(3, 180)}


# -- e-commerce / orders
_ORDER_STATES = [('processing', '处理中'), ('shipped', '已发货'), ('in transit', '运输中'), ('out for delivery', '派送中')]
_PARCEL_STATES = [('picked up', '已揽收'), ('in transit', '运输中'), ('at a sorting hub', '到达转运中心'),
                  ('out for delivery', '派送中'), ('delivered', '已签收')]
_CARRIER_PREFIXES = [('ZTO', 'ZTO Express'), ('STO', 'STO Express'), ('EMS', 'EMS'), ('DHL', 'DHL'),
                     ('SF', 'SF Express'), ('YT', 'YTO Express'), ('JD', 'JD Logistics'), ('YD', 'Yunda'),
                     ('JT', 'J&T Express'), ('1Z', 'UPS')]


@_impl(order_id='string')
def order_status(c: _Arguments) -> dict:
    """Order state, item count and delivery estimate."""
    status, status_zh = c.choice(_ORDER_STATES)
    return {'status': status, 'status_zh': status_zh, 'items': c.integer(1, 5), 'estimated_delivery': c.day()}


@_impl(keyword='string')
def product_search(c: _Arguments) -> dict:
    """Listing count and the first result's price, honouring the price cap and sort order."""
    cap = c.opt('max_price', 'number', None)
    sort = c.opt('sort', 'string', 'relevance', ['relevance', 'price_asc', 'price_desc', 'sales'])
    if cap is not None and cap <= 0:
        raise ValueError('argument "max_price" must be positive')
    hi = float(cap) if cap is not None else 3999.0
    lo = hi * 0.05
    price = {'price_asc': c.real(lo, lo * 3), 'price_desc': c.real(hi * 0.7, hi)}.get(sort, c.real(lo, hi))
    sales = c.integer(5000, 50_000) if sort == 'sales' else c.integer(10, 20_000)
    return {'count': c.integer(3, 480), 'top_price': price, 'monthly_sales': sales, 'sort': sort}


@_impl(tracking_number='string')
def express_tracking(c: _Arguments) -> dict:
    """Parcel state and last scan; the carrier is taken from the number's prefix when not given."""
    number = c['tracking_number'].upper()
    guess = next((name for prefix, name in _CARRIER_PREFIXES if number.startswith(prefix)), 'unknown')
    status, status_zh = c.choice(_PARCEL_STATES)
    return {'carrier_name': c.opt('carrier', 'string', guess), 'status': status, 'status_zh': status_zh,
            'hops': c.integer(1, 9), 'last_update': f'{c.day(20)} {c.clock()}'}


# -- travel
@_impl(origin='string', destination='string', date='string')
def flight_search(c: _Arguments) -> dict:
    """Flight count and the cheapest flight."""
    cabin = c.opt('cabin', 'string', 'economy', ['economy', 'business', 'first'])
    factor = {'economy': 1.0, 'business': 3.2, 'first': 5.5}[cabin]
    flight = f'{c.choice(["CA", "MU", "CZ", "HU", "ZH", "3U", "MF", "HO"])}{c.integer(101, 9899)}'
    return {'count': c.integer(2, 28), 'cheapest_flight': flight,
            'cheapest_price': round(c.integer(380, 2600) * factor), 'departure_time': c.clock(), 'cabin': cabin}


def _iso_date(name: str, value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise ValueError(f'argument {name!r} must be a date like 2025-06-18, got {value!r}') from None


@_impl(city='string', date='string')
def hotel_search(c: _Arguments) -> dict:
    """Available hotels, the lowest nightly price and the checkout date."""
    check_in = _iso_date('date', c['date'])
    nights = _in_range('nights', c.opt('nights', 'integer', 1), 1, 60)
    breakfast = c.opt('breakfast', 'boolean', False)
    if check_in > date.max - timedelta(days=nights):
        raise ValueError(f'argument \'date\' {c["date"]!r} plus {nights} night(s) is past the last date there is '
                         f'({date.max.isoformat()})')
    return {'count': c.integer(3, 260), 'lowest_price': round(c.real(129, 899) * (1.12 if breakfast else 1.0), 2),
            'avg_rating': c.real(3.8, 4.9, 1), 'checkout_date': (check_in + timedelta(days=nights)).isoformat(),
            'breakfast': breakfast}


@_impl(origin='string', destination='string', date='string')
def train_ticket(c: _Arguments) -> dict:
    """Trains with seats left and the earliest one."""
    seat = c.opt('seat_type', 'string', 'second_class', ['second_class', 'first_class', 'business', 'sleeper'])
    factor = {'second_class': 1.0, 'first_class': 1.6, 'business': 3.1, 'sleeper': 1.3}[seat]
    prefix = c.choice(['Z', 'T', 'K', 'D'] if seat == 'sleeper' else ['G', 'G', 'D', 'C'])
    return {'count': c.integer(1, 40), 'earliest_train': f'{prefix}{c.integer(1, 2999)}',
            'departure_time': c.clock(5, 10), 'price': round(c.real(55, 620) * factor * 2) / 2, 'seat_type': seat}


# -- finance
_CNY_PER_UNIT = {'USD': 7.2, 'CNY': 1.0, 'EUR': 7.8, 'JPY': 0.048, 'GBP': 9.1, 'HKD': 0.92, 'KRW': 0.0053,
                 'AUD': 4.7, 'CAD': 5.3, 'SGD': 5.35, 'CHF': 8.1, 'THB': 0.2, 'NZD': 4.3, 'MYR': 1.55}  # illustrative
_CURRENCY_NAMES = {'美元': 'USD', '人民币': 'CNY', '元': 'CNY', '欧元': 'EUR', '日元': 'JPY', '英镑': 'GBP', '港币': 'HKD',
                   '港元': 'HKD', '韩元': 'KRW', '澳元': 'AUD', '加元': 'CAD', '新加坡元': 'SGD', '瑞士法郎': 'CHF',
                   '泰铢': 'THB', '新西兰元': 'NZD', '林吉特': 'MYR', 'RMB': 'CNY'}


def _currency(name: str, value: str) -> str:
    code = _CURRENCY_NAMES.get(value.strip(), value.strip().upper())
    if code not in _CNY_PER_UNIT:
        raise ValueError(f'argument {name!r}: unknown currency {value!r}; use one of {list(_CNY_PER_UNIT)}')
    return code


@_impl(symbol='string')
def stock_quote(c: _Arguments) -> dict:
    """Last price and daily change."""
    symbol = c['symbol'].upper()
    currency = ('HKD' if symbol.endswith('.HK') else
                'CNY' if symbol.endswith(('.SH', '.SZ')) or has_chinese(symbol) else 'USD')
    price = {'HKD': c.real(3, 520), 'CNY': c.real(4, 1900), 'USD': c.real(12, 950)}[currency]
    return {'price': price, 'currency': currency, 'change_pct': c.real(-6.5, 6.5), 'as_of': c.day()}


@_impl(amount='number', from_currency='string', to_currency='string')
def currency_convert(c: _Arguments) -> dict:
    """The amount at fixed illustrative reference rates."""
    src, dst = _currency('from_currency', c['from_currency']), _currency('to_currency', c['to_currency'])
    exact = _CNY_PER_UNIT[src] / _CNY_PER_UNIT[dst]
    return {'converted': round(c['amount'] * exact, 2), 'rate': float(f'{exact:.6g}'), 'from_code': src,
            'to_code': dst}


# -- news
_OUTLETS = ['Example Daily', 'City Wire', 'Metro Example News', 'Example Times', 'Example Broadcasting']


@_impl(city='string')
def news_headlines(c: _Arguments) -> dict:
    """How many headlines came back and the latest one's source."""
    category = c.opt('category', 'string', 'general', ['general', 'sports', 'tech', 'business', 'entertainment'])
    returned = _in_range('count', c.opt('count', 'integer', 5), 1, 50)
    return {'returned': returned, 'category': category, 'latest_time': f'{c.day(30)} {c.clock()}',
            'top_source': c.choice(_OUTLETS), 'top_url': f'https://news.example.com/{category}/{c.token()}'}


@_impl(keyword='string')
def news_search(c: _Arguments) -> dict:
    """Article count and the latest article."""
    day = c.opt('date', 'string', None)
    return {'total': c.integer(3, 2400), 'latest_date': day or c.day(), 'top_source': c.choice(_OUTLETS),
            'top_url': f'https://news.example.com/a/{c.token()}'}


# -- music / video
@_impl(song='string')
def music_search(c: _Arguments) -> dict:
    """The track's length and play link (and lyrics link when asked for)."""
    c.opt('artist', 'string', None)
    result = {'song_id': f'SONG-{c.token(8).upper()}', 'duration': f'{c.integer(2, 5)}:{c.integer(0, 59):02d}',
              'play_url': f'https://example.com/music/{c.token()}.mp3'}
    if c.opt('with_lyrics', 'boolean', False):
        result['lyrics_url'] = f'https://example.com/lyrics/{c.token()}.lrc'
    return result


@_impl(query='string')
def video_search(c: _Arguments) -> dict:
    """Video count and the best match, no longer than ``max_minutes``."""
    limit = _in_range('max_minutes', c.opt('max_minutes', 'integer', 40), 1, 600)
    seconds = c.integer(30, limit * 60)
    return {'count': c.integer(5, 900), 'duration': f'{seconds // 60}:{seconds % 60:02d}',
            'views': c.integer(800, 5_000_000), 'video_url': f'https://example.com/video/{c.token()}'}


# -- health / fitness
_BMI_CLASSES = [(18.5, 'underweight', '偏瘦'), (25.0, 'normal', '正常'), (30.0, 'overweight', '超重'),
                (math.inf, 'obese', '肥胖')]  # WHO adult cut-offs


@_impl(height_cm='number', weight_kg='number')
def bmi_calculator(c: _Arguments) -> dict:
    """The real BMI, its WHO class and the healthy weight range for the height."""
    metres = _in_range('height_cm', c['height_cm'], 50, 250) / 100
    bmi = round(_in_range('weight_kg', c['weight_kg'], 2, 400) / metres ** 2, 1)
    category, category_zh = next((en, zh) for top, en, zh in _BMI_CLASSES if bmi < top)
    return {'bmi': bmi, 'category': category, 'category_zh': category_zh,
            'healthy_weight_range': f'{18.5 * metres ** 2:.1f}-{24.9 * metres ** 2:.1f} kg'}


@_impl(food='string')
def calorie_lookup(c: _Arguments) -> dict:
    """Energy and macros for the portion; per-100 g values depend on the food alone (4/9/4 kcal per gram)."""
    grams = _in_range('grams', c.opt('grams', 'number', 100), 1, 5000)
    food = _Arguments({'food': c['food']}, {})
    protein, fat, carbs = food.real(0.2, 30, 1), food.real(0.1, 30, 1), food.real(0.0, 75, 1)
    return {'portion_g': grams, 'calories': round((4 * protein + 9 * fat + 4 * carbs) * grams / 100),
            'protein_g': round(protein * grams / 100, 1), 'fat_g': round(fat * grams / 100, 1),
            'carbs_g': round(carbs * grams / 100, 1)}


# -- email / messaging
@_impl(to='string', subject='string')
def send_email(c: _Arguments) -> dict:
    """The sent message's id."""
    to = c['to']  # name@domain.tld, checked without a backtracking pattern
    if not re.fullmatch(r'[^@\s]+@[^@\s]+', to) or '.' not in to.partition('@')[2][1:-1]:
        raise ValueError(f'argument "to" must be an email address, got {c["to"]!r}')
    c.opt('body', 'string', None)
    priority = 'high' if c.opt('high_priority', 'boolean', False) else 'normal'
    return {'message_id': f'MSG-{c.token(10).upper()}', 'status': 'sent', 'priority': priority}


@_impl(contact='string', content='string')
def send_message(c: _Arguments) -> dict:
    """The sent message's id and channel."""
    channel = c.opt('channel', 'string', 'sms', ['sms', 'wechat', 'dingtalk'])
    return {'message_id': f'IM-{c.token(10).upper()}', 'status': 'delivered', 'sent_via': channel}
