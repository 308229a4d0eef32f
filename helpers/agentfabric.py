"""The AgentFabric prompt format: the one place that knows what RolePlay sends to the model.

modelscope-agent 0.7.2's ``RolePlay`` (the engine behind AgentFabric) talks to an OpenAI-style chat
model without native function calling. Every request it makes is built from the pieces below:

* a **system prompt**: a tool section (one line per tool, written the way ``BaseTool`` describes
  a tool, then the list of tool names and the call format) followed by an instruction section;
* the **user message**: a prefix ``(你正在扮演…。你可以使用工具：[…])`` glued to the user's query;
* after a tool call, a **continuation** appended to that same last user message: the model's own
  output, then ``\\nObservation: <result>…</result>\\nAnswer:``;
* the **stop words** ``Observation:`` and ``Observation:\\n``.

Data conversion, synthetic data, training targets, notebooks and evaluation all render prompts
through this module, and ``tests/test_prompt_parity.py`` checks it byte for byte against requests
captured from the real ``RolePlay``. The evaluation case format (:class:`EvalCase`) lives here too,
because a case is exactly the input of one rendering.
"""
from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from .jsonl import (JsonlError, lone_surrogate, read_jsonl, unique_keys,  # noqa: F401  (write_jsonl: notebooks)
                    write_jsonl)

Lang = Literal['zh', 'en']
LANGS: tuple[str, ...] = ('zh', 'en')

# -- the text RolePlay 0.7.2 assembles (modelscope_agent.agents.role_play and
#    modelscope_agent.llm.utils.function_call_with_raw_prompt); any edit breaks parity.
_TOOL_SECTION = {
    'zh': ('\n# 工具\n\n## 你拥有如下工具：\n\n{tool_descs}\n\n'
           '## 当你需要调用工具时，请在你的回复中穿插如下的工具调用命令，可以根据需求调用零次或多次：\n\n'
           '工具调用\nAction: 工具的名称，必须是[{tool_names}]之一\nAction Input: 工具的输入\n'
           'Observation: <result>工具返回的结果</result>\n'
           'Answer: 根据Observation总结本次工具调用返回的结果。如果结果中出现url，请严格遵循Observation中url的格式进行展示。\n\n'),
    'en': ('\n# Tools\n\n## You have the following tools:\n\n{tool_descs}\n\n'
           '## When you need to call a tool, please intersperse the following tool command in your reply. '
           'You can call zero or more times according to your needs:\n\n'
           'Tool Invocation\nAction: The name of the tool, must be one of [{tool_names}]\nAction Input: Tool input\n'
           'Observation: <result>Tool returns result</result>\n'
           'Answer: Summarize the results of this tool call based on Observation.\n\n'),
}
# A tool's line is Chinese or English by its own description, not by the conversation language.
_TOOL_LINE = {
    'zh': '{name}: {name} API。{description} 输入参数: {parameters} Format the arguments as a JSON object.',
    'en': '{name}: {name} API. {description} Parameters: {parameters} Format the arguments as a JSON object.',
}
_INSTRUCTION_SECTION = {
    'zh': '\n# 指令\n\n{role_prompt}\n\n请注意：你具有图像和视频的展示能力，也具有运行代码的能力，不要在回复中说你做不到。\n',
    'en': ('\n#Instructions\n\n{role_prompt}\n\nNote: you have the ability to display images and videos, '
           "as well as the ability to run code. Don't say you can't do it.\n"),
}
_ROLE_PREFIX = {'zh': '你正在扮演{role_name}', 'en': 'You are playing as {role_name}'}
_TOOL_PREFIX = {'zh': '。你可以使用工具：[{tool_names}]', 'en': '. you can use tools: [{tool_names}]'}
_ROLE_CONFIG = {  # RolePlay._parse_role_config_{zh,en}
    'zh': ('你扮演AI-Agent，', '你的名字是{}。', '\n你具有下列具体功能：', '\n下面你将开始扮演'),
    'en': ('You are playing as an AI-Agent, ', 'Your name is {}.', '\nYou have the following specific functions:',
           '\nNow you will start playing as'),
}
OBSERVATION_TEMPLATE = '\nObservation: <result>{observation}</result>\nAnswer:'
STOP_WORDS: tuple[str, ...] = ('Observation:', 'Observation:\n')
# RolePlay cuts the observation it feeds back to str(obs)[:int(max_length / 2 - 12)]: the OpenAI LLM's
# max_length is 6000 and the empty template counts 12 Qwen tokens (checked against the library in tests).
OBSERVATION_CHAR_LIMIT = int(6000 / 2 - 12)
# RolePlay's own parser (detect_multi_tool): the first match is the call it executes.
ACTION_PATTERN = re.compile(r'Action: (.+)\nAction Input: (.+)')
_CJK = re.compile(r'[\u4e00-\u9fff]+')
_JSON_TEXT = json.JSONEncoder(ensure_ascii=False).encode  # json.dumps(…, ensure_ascii=False), built once


# Text that must not reach a prompt where the model would read it as structure (:func:`injection`): a chat-template
# token (the tokenizer turns it into a special token: <|im_end|>, <|endoftext|>, [INST], </s> …), or the markers
# RolePlay's own format gives meaning to: the call and observation lines and the section headers rendered above.
TEMPLATE_TOKEN = re.compile(r'<\|[A-Za-z0-9_.\-]{1,40}\|>|\[/?INST\]|<</?SYS>>|</?s>')
PROMPT_MARKERS: tuple[str, ...] = ('Action:', 'Action Input:', 'Observation:', '<result>', '</result>')
PROMPT_HEADERS: tuple[str, ...] = tuple(dict.fromkeys(  # a header counts at the start of a line only
    re.split(r'[，,]', line)[0] for template in (*_TOOL_SECTION.values(), *_INSTRUCTION_SECTION.values())
    for line in template.split('\n') if line.startswith('#')))


def injection(text: str, markers: bool = True) -> str | None:
    """What in ``text`` could pass for prompt structure: the first chat-template token, or (with ``markers``) a
    prompt marker or section header (:data:`PROMPT_MARKERS`, :data:`PROMPT_HEADERS`); None when there is none."""
    token = TEMPLATE_TOKEN.search(text)
    if token:
        return f'the chat-template token {token.group()!r}'
    if markers:
        found = next((m for m in PROMPT_MARKERS if m in text), None) or next(
            (h for h in PROMPT_HEADERS if text.startswith(h) or '\n' + h in text), None)
        if found:
            return f'the prompt marker {found!r}'
    return None


class CaseError(ValueError):
    """A tool, instruction or evaluation case that does not follow the format."""


class DuplicateIdError(CaseError):
    """An id used twice in a file of cases or predictions, which are matched by id."""


def has_chinese(text: Any) -> bool:
    """modelscope-agent's test for Chinese text (CJK unified ideographs in ``str(text)``)."""
    return bool(_CJK.search(f'{text}'))


@dataclass
class ToolParam:
    """One parameter in modelscope-agent's tool style."""
    name: str
    description: str = ''
    type: str | list[str] = 'string'  # a JSON schema type (a list of them is allowed too)
    required: bool = False
    enum: list | None = None
    # The value an optional parameter takes when left out (None: none declared). Kept in the case format
    # for scoring; never shown to the model: RolePlay's schema has no defaults.
    default: Any = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> 'ToolParam':
        if not isinstance(d, Mapping) or not isinstance(d.get('name'), str) or not d['name']:
            raise CaseError(f'a tool parameter needs a non-empty "name": {_short(d)}')
        schema = d.get('schema') or {}
        if not isinstance(schema, Mapping):
            raise CaseError(f'parameter {d["name"]!r}: "schema" must be an object such as {{"type": "string"}}, '
                            f'got {type(schema).__name__}')
        ptype = d.get('type') or schema.get('type') or 'string'
        if not (isinstance(ptype, str) or isinstance(ptype, list) and all(isinstance(t, str) for t in ptype)):
            raise CaseError(f'parameter {d["name"]!r}: "type" must be a JSON type such as "string", '
                            f'got {_short(ptype)}')
        enum = d.get('enum') or None
        if enum is not None and not isinstance(enum, list):
            raise CaseError(f'parameter {d["name"]!r}: "enum" must be a list of values, got {type(enum).__name__}')
        return cls(name=d['name'], description=_text(d.get('description')), type=ptype,
                   required=_truthy(d.get('required', False)), enum=enum,
                   default=d.get('default', schema.get('default')))

    def to_dict(self) -> dict:
        d = {'name': self.name, 'type': self.type, 'description': self.description, 'required': self.required}
        if self.enum:
            d['enum'] = list(self.enum)
        if self.default is not None:
            d['default'] = self.default
        return d


def _strings(value: Any) -> tuple[str, ...] | None:
    """A list of strings as a tuple; None for anything else."""
    return tuple(value) if type(value) is list and all(type(v) is str for v in value) else None


_TOOL_LINES: dict[tuple, str] = {}  # Tool.describe's lines by Tool._line_key (conversions repeat tools)


def _short(value: Any, limit: int = 80) -> str:
    """``repr(value)`` cut to ``limit`` characters, for error messages about arbitrary input."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + '…'


def _text(value: Any) -> str:
    """A description as text: null (or absent) is no description, not the word "None"."""
    return '' if value is None else str(value)


def _truthy(value: Any) -> bool:
    """``required`` arrives as a bool or, in ms_agent data, as the strings "True"/"False"."""
    if isinstance(value, str):
        return value.strip().lower() in ('true', '1', 'yes')
    return bool(value)


@dataclass
class Tool:
    """A tool as RolePlay describes it to the model."""
    name: str
    description: str
    parameters: list[ToolParam] = field(default_factory=list)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> 'Tool':
        if not isinstance(d, Mapping):
            raise CaseError(f'a tool must be an object, got {type(d).__name__}')
        if 'function' in d and isinstance(d['function'], Mapping):  # OpenAI style {"type": "function", ...}
            return cls.from_openai(d['function'])
        name = d.get('name')
        if not isinstance(name, str) or not re.fullmatch(r'[^\s,\[\]]+', name):
            raise CaseError(f'a tool needs a "name" without spaces, commas or brackets: {name!r}')
        params = d.get('parameters', [])
        if isinstance(params, Mapping):  # a JSON schema
            return cls.from_openai(d)
        if not isinstance(params, list):
            raise CaseError(f'tool {name}: "parameters" must be a list or a JSON schema')
        return cls(name=name, description=_text(d.get('description')),
                   parameters=[ToolParam.from_dict(p) for p in params])

    @classmethod
    def from_openai(cls, fn: Mapping[str, Any]) -> 'Tool':
        """A tool from ``{"name", "description", "parameters": <JSON schema of an object>}``."""
        name = fn.get('name')
        schema = fn.get('parameters') or {}
        properties = (schema.get('properties') or {}) if isinstance(schema, Mapping) else None
        if not isinstance(properties, Mapping):
            raise CaseError(f'tool {name}: "parameters" must be a JSON schema whose "properties" is an object')
        required = schema.get('required') or []
        if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
            raise CaseError(f'tool {name}: "required" must be a list of parameter names, got {_short(required)}')
        params = []
        for k, v in properties.items():
            if not isinstance(v, Mapping):
                raise CaseError(f'tool {name}: property {k!r} must be an object such as {{"type": "string"}}')
            params.append(ToolParam.from_dict({**v, 'name': k, 'required': k in required}).to_dict())
        return cls.from_dict({'name': name, 'description': fn.get('description'), 'parameters': params})

    def to_dict(self) -> dict:
        return {'name': self.name, 'description': self.description,
                'parameters': [p.to_dict() for p in self.parameters]}

    def schema(self) -> dict:
        """The JSON schema RolePlay shows the model (``BaseTool._build_function``)."""
        properties: dict[str, dict] = {}
        for p in self.parameters:
            prop: dict[str, Any] = {'type': p.type, 'description': p.description}
            if p.enum not in (None, '', []):
                prop['enum'] = p.enum
            properties[p.name] = prop
        return {'type': 'object', 'properties': properties,
                'required': [p.name for p in self.parameters if p.required]}

    def describe(self) -> str:
        """The tool's line in the system prompt (``BaseTool._parser_function``)."""
        key = self._line_key()
        line = _TOOL_LINES.get(key) if key else None
        if line is None:
            template = _TOOL_LINE['zh' if has_chinese(self.description) else 'en']
            line = template.format(name=self.name, description=self.description, parameters=_JSON_TEXT(self.schema()))
            if key and len(line) <= 4096:  # bounded: at most 4,096 lines of up to 4,096 characters
                if len(_TOOL_LINES) >= 4096:
                    _TOOL_LINES.clear()
                _TOOL_LINES[key] = line
        return line

    def _line_key(self) -> tuple | None:
        """Everything the tool's line depends on, when it is all plain strings (lists of them for a type or an
        enum) and booleans, so that equal keys mean equal lines; None otherwise (that line is not kept)."""
        if type(self.name) is not str or type(self.description) is not str:
            return None
        key: list = [self.name, self.description]
        for p in self.parameters:
            ptype = p.type if type(p.type) is str else _strings(p.type)
            enum = None if p.enum is None else _strings(p.enum)  # () for [], which the schema leaves out
            if ptype is None or enum is None and p.enum is not None or type(p.name) is not str \
                    or type(p.description) is not str:
                return None
            key.append((p.name, p.description, ptype, bool(p.required), enum or None))
        return tuple(key)


Instruction = str | dict


def check_instruction(instruction: Any) -> Instruction:
    """RolePlay takes a plain string or a role config ``{"name", "description", "instruction"}``."""
    if isinstance(instruction, str):
        return instruction
    if isinstance(instruction, Mapping):
        if not isinstance(instruction.get('name'), str):
            raise CaseError('a role-config instruction needs a "name" string (RolePlay reads it)')
        extra = set(instruction) - {'name', 'description', 'instruction'}
        if extra:
            raise CaseError(f'unknown role-config keys {sorted(extra)}; use name, description, instruction')
        if not isinstance(instruction.get('description', ''), str):
            raise CaseError('a role-config "description" must be a string')
        ins = instruction.get('instruction', '')
        if not (isinstance(ins, str) or isinstance(ins, list) and all(isinstance(i, str) for i in ins)):
            raise CaseError('a role-config "instruction" must be a string or a list of strings')
        return dict(instruction)
    raise CaseError(f'instruction must be a string or an object, got {type(instruction).__name__}')


def role_prompt(instruction: Instruction, lang: Lang) -> str:
    """The text under the instruction heading: the string itself, or the role config spelled out."""
    if isinstance(instruction, str):
        return instruction
    start, name_tpl, functions, now = _ROLE_CONFIG[lang]
    name = instruction.get('name') or ''
    prompt = start
    if name:
        prompt += name_tpl.format(name)
    if instruction.get('description'):
        prompt += instruction['description']
    prompt += functions
    ins = instruction.get('instruction')
    if ins:
        prompt += ''.join(i + '；' for i in ins) if isinstance(ins, list) else ins
        if prompt[-1] == '；':
            prompt = prompt[:-1]
    return prompt + now + name


def _check_lang(lang: str) -> Lang:
    if lang not in LANGS:
        raise CaseError(f'lang must be "zh" or "en", got {lang!r}')
    return lang  # type: ignore[return-value]


def system_prompt(tools: Sequence[Tool], instruction: Instruction, lang: Lang) -> str:
    lang = _check_lang(lang)
    tool_section = _TOOL_SECTION[lang].format(tool_descs='\n\n'.join(t.describe() for t in tools),
                                              tool_names=','.join(t.name for t in tools))
    return tool_section + _INSTRUCTION_SECTION[lang].format(role_prompt=role_prompt(instruction, lang))


def query_prefix(tools: Sequence[Tool], instruction: Instruction, lang: Lang) -> str:
    lang = _check_lang(lang)
    role = _ROLE_PREFIX[lang].format(role_name=instruction['name']) if isinstance(instruction, dict) else ''
    return '(' + role + _TOOL_PREFIX[lang].format(tool_names=','.join(t.name for t in tools)) + ')'


def first_turn(tools: Sequence[Tool], instruction: Instruction, query: str, lang: Lang,
               history: Sequence[Mapping[str, str]] = ()) -> list[dict]:
    """The messages of RolePlay's first LLM call for ``query`` (earlier turns in ``history``)."""
    history = list(history)
    if history and history[-1]['role'] == 'user':
        raise CaseError('history must not end with a user message (the query is the new user message)')
    if history and history[0]['role'] == 'system':
        history = history[1:]
    return ([{'role': 'system', 'content': system_prompt(tools, instruction, lang)}]
            + [dict(m) for m in history]
            + [{'role': 'user', 'content': query_prefix(tools, instruction, lang) + query}])


def observation_suffix(observation: Any) -> str:
    """What RolePlay appends after a tool ran: the observation cut to its length limit."""
    return OBSERVATION_TEMPLATE.format(observation=str(observation)[:OBSERVATION_CHAR_LIMIT])


def next_turn(messages: Sequence[Mapping[str, str]], model_output: str, observation: Any) -> list[dict]:
    """The messages of the following LLM call: output and observation appended to the last user message."""
    new = [dict(m) for m in messages]  # the messages' values are strings: copying the dicts suffices
    new[-1]['content'] += model_output + observation_suffix(observation)
    return new


def transcript(outputs: Sequence[str], observations: Sequence[Any]) -> str:
    """The reply text AgentFabric shows and keeps as the assistant message of this turn in history.

    ``outputs`` are the model's texts (one per LLM call), ``observations`` the tool results between them.
    """
    if len(outputs) != len(observations) + 1:
        raise ValueError('a turn has one more model output than tool observations')
    text = outputs[0]
    for obs, out in zip(observations, outputs[1:]):
        text += OBSERVATION_TEMPLATE.format(observation=obs) + out
    return text


def stop_words(model: str = '') -> list[str]:
    """Stop words of a RolePlay request: the model's own template stop words (by served model name,
    empty for names modelscope-agent does not know), then ``Observation:`` and ``Observation:\\n``."""
    from .agent_tools import modelscope_agent
    modelscope_agent()  # imports the library quietly, outside the working directory
    from modelscope_agent.llm.utils.llm_templates import get_model_stop_words
    return list(get_model_stop_words(model)) + list(STOP_WORDS)


MAX_ARGUMENTS_CHARS = 65_536  # an Action Input longer than this is not read (a degenerate repetition)
MAX_ARGUMENTS_DEPTH = 32  # nor one nested deeper: real arguments are a few levels deep


def _refuse_constant(name: str) -> Any:
    raise ValueError(f'{name} is not a JSON value')


def parse_arguments(text: str) -> dict:
    """The arguments of an Action Input, read strictly: exactly one JSON object, which is what the prompt
    asks for (``Format the arguments as a JSON object``) and what :func:`format_call` writes.

    ValueError, saying why, for anything else: not JSON, not an object, ``NaN`` or ``Infinity`` (not
    JSON), a key that appears twice (which value was meant?), a string holding a lone surrogate (no
    Unicode text: UTF-8 cannot encode it), more than :data:`MAX_ARGUMENTS_CHARS` characters or nesting
    deeper than :data:`MAX_ARGUMENTS_DEPTH`. Bounded in time and memory whatever the text holds.
    """
    if len(text) > MAX_ARGUMENTS_CHARS:
        raise ValueError(f'longer than {MAX_ARGUMENTS_CHARS:,} characters')
    try:
        value = json.loads(text, parse_constant=_refuse_constant, object_pairs_hook=unique_keys)
    except RecursionError:
        raise ValueError('nested too deeply') from None
    if not isinstance(value, dict):
        raise ValueError(f'a JSON {type(value).__name__}, not an object')
    where = lone_surrogate(value)
    if where:
        raise ValueError(f'{where} holds a lone surrogate, which is not Unicode text')
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_ARGUMENTS_DEPTH:
            raise ValueError(f'nested deeper than {MAX_ARGUMENTS_DEPTH} levels')
        children = item.values() if isinstance(item, dict) else item
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return value


@dataclass
class ToolCall:
    """One tool call: the single name for it in this series, wherever the call comes from.

    * parsed from a model output (:func:`parse_action`): ``action_input`` is the text after ``Action Input:``
      and ``arguments`` its strict reading (:func:`parse_arguments`), None when that is not a JSON object;
    * a call in a conversation (data: :class:`ConversationTurn`): ``arguments`` and the tool's ``observation``;
    * a call RolePlay ran (:class:`helpers.agent_tools.TurnRecord`): the ``action_input`` RolePlay passed,
      the ``arguments`` the tool read from it (None: it refused them) and the ``observation`` it returned.
    """
    name: str
    arguments: dict | None
    action_input: str | None = None  # the Action Input as written; None for a call made from data
    observation: str | None = None  # the tool's result; None until the tool ran

    @classmethod
    def from_action(cls, name: str, action_input: str) -> 'ToolCall':
        """A call as a model wrote it, its arguments read by :func:`parse_arguments`."""
        try:
            arguments = parse_arguments(action_input)
        except ValueError:
            arguments = None
        return cls(name, arguments, action_input)

    def to_dict(self) -> dict:
        """A call of a conversation, as conversation files store it."""
        return {'name': self.name, 'arguments': self.arguments, 'observation': self.observation}


def parse_action(text: str | None) -> ToolCall | None:
    """The call RolePlay would execute for a model output: the first match of :data:`ACTION_PATTERN`,
    found in linear time (the pattern itself backtracks quadratically over a long line of ``Action: ``).

    A match is an ``Action: `` with a non-empty rest of its line, and a next line that starts with
    ``Action Input: `` and has more after it; the two groups are those rests of line.
    """
    text = text or ''
    pos = text.find('Action: ')
    while pos != -1:
        end = text.find('\n', pos)
        if end == -1:
            return None
        following = text.find('\n', end + 1)
        second = text[end + 1:following if following != -1 else len(text)]
        if end > pos + 8 and second.startswith('Action Input: ') and len(second) > 14:
            return ToolCall.from_action(text[pos + 8:end], second[14:])
        pos = text.find('Action: ', end)  # the other Action: on this line share its next line
    return None


def format_call(name: str, arguments: Mapping[str, Any]) -> str:
    """What the model must write to call a tool: RolePlay reads one line of arguments, so one-line JSON."""
    return f'Action: {name}\nAction Input: {_JSON_TEXT(dict(arguments))}\n'


@dataclass
class EvalCase:
    """One evaluation case (one JSON line); the contract shared by the prompt CLI, data and evaluation.

    ``history`` is optional: earlier turns as AgentFabric keeps them (user query, assistant transcript);
    ``meta`` is optional too: labels used only for breakdowns.
    """
    id: str
    lang: Lang
    instruction: Instruction
    tools: list[Tool]
    query: str
    expected_call: dict | None
    observation: str
    reference_answer: str
    history: list[dict] = field(default_factory=list)
    meta: dict = field(default_factory=dict)  # optional labels (split, kind, tool, holdout …) for breakdowns

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> 'EvalCase':
        if not isinstance(d, Mapping):
            raise CaseError('a case must be a JSON object')
        missing = [k for k in ('id', 'lang', 'instruction', 'tools', 'query') if k not in d]
        if missing:
            raise CaseError(f'case is missing {missing}')
        cid = str(d['id'])
        if not isinstance(d['tools'], list):
            raise CaseError(f'case {cid}: "tools" must be a list')
        tools = [Tool.from_dict(t) for t in d['tools']]
        names = [t.name for t in tools]
        if len(set(names)) != len(names):
            raise CaseError(f'case {cid}: duplicate tool names {names}')
        call = d.get('expected_call')
        if call is not None:
            if not isinstance(call, Mapping) or not isinstance(call.get('name'), str) \
                    or not isinstance(call.get('arguments', {}), Mapping):
                raise CaseError(f'case {cid}: expected_call must be null or {{"name": str, "arguments": {{...}}}}')
            if call['name'] not in names:
                raise CaseError(f'case {cid}: expected tool {call["name"]!r} is not among its tools {names}')
            call = {'name': call['name'], 'arguments': dict(call.get('arguments', {}))}
        history = d.get('history') or []
        if not isinstance(history, list) or any(
                not isinstance(m, Mapping) or m.get('role') not in ('user', 'assistant', 'system')
                or not isinstance(m.get('content'), str) for m in history):
            raise CaseError(f'case {cid}: history must be a list of {{"role", "content"}} messages')
        if history and history[-1]['role'] == 'user':
            raise CaseError(f'case {cid}: history must not end with a user message (the query is the new one); '
                            'end it with the assistant\'s reply')
        where = lone_surrogate(d)
        if where:
            raise CaseError(f'case {cid}: {where} holds a lone surrogate, which is no Unicode text (UTF-8 cannot '
                            'encode it, so no server could receive it)')
        if not isinstance(d['query'], str) or not d['query']:
            raise CaseError(f'case {cid}: "query" must be a non-empty string')
        reference = d.get('reference_answer')
        if reference is not None and not isinstance(reference, str):
            raise CaseError(f'case {cid}: "reference_answer" must be a string or null (no reference)')
        observation = d.get('observation')
        meta = d.get('meta') or {}
        if not isinstance(meta, Mapping):
            raise CaseError(f'case {cid}: "meta" must be an object')
        return cls(id=cid, lang=_check_lang(d['lang']), instruction=check_instruction(d['instruction']),
                   tools=tools, query=d['query'], expected_call=call,
                   observation='' if observation is None else str(observation), reference_answer=reference or '',
                   history=[dict(m) for m in history], meta=dict(meta))

    def to_dict(self) -> dict:
        d = {'id': self.id, 'lang': self.lang, 'instruction': self.instruction,
             'tools': [t.to_dict() for t in self.tools], 'query': self.query,
             'expected_call': self.expected_call, 'observation': self.observation,
             'reference_answer': self.reference_answer}
        if self.history:
            d['history'] = self.history
        if self.meta:
            d['meta'] = self.meta
        return d

    def messages(self, model_output: str | None = None, observation: Any = None) -> list[dict]:
        """First-turn messages, or second-turn ones when the model output and observation are given."""
        msgs = first_turn(self.tools, self.instruction, self.query, self.lang, self.history)
        if model_output is None:
            return msgs
        return next_turn(msgs, model_output, self.observation if observation is None else observation)


def load_cases(path, allow_duplicates: bool = False) -> list[EvalCase]:
    """Read a JSONL file of cases; a bad line, or an id used twice (unless ``allow_duplicates``), raises
    :class:`CaseError` naming the file and line."""
    cases: list[EvalCase] = []
    lines: dict[str, int] = {}
    try:
        for n, obj in read_jsonl(path):
            try:
                case = EvalCase.from_dict(obj)
            except (ValueError, KeyError, TypeError, RecursionError) as e:
                raise CaseError(f'{path}:{n}: {e}; fix or remove that case') from None
            if case.id in lines and not allow_duplicates:
                raise DuplicateIdError(f'{path}:{n}: case id {case.id!r} repeats line {lines[case.id]}; '
                                       'give every case its own id')
            lines.setdefault(case.id, n)
            cases.append(case)
    except JsonlError as e:
        raise CaseError(str(e)) from None
    return cases


def detect_lang(query: str, history: Sequence[Mapping[str, str]] = ()) -> Lang:
    """The language AgentFabric runs a turn in: Chinese as soon as the query or the kept history
    (which starts with the first turn's system prompt) contains Chinese characters."""
    return 'zh' if has_chinese(query) or has_chinese([m.get('content', '') for m in history]) else 'en'


@dataclass
class ConversationTurn:
    """One user turn of a conversation (data): the query, the tool calls made in order, and the final answer.
    (What RolePlay did in a live turn is a :class:`helpers.agent_tools.TurnRecord`.)"""
    query: str
    calls: list[ToolCall]
    answer: str


@dataclass
class Conversation:
    """An AgentFabric conversation, from converted ms_agent data or from the generator.

    ``lang`` None means: decide per turn as AgentFabric does (:func:`detect_lang`).
    """
    id: str
    instruction: Instruction
    tools: list[Tool]
    turns: list[ConversationTurn]
    lang: Lang | None = None
    meta: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {'id': self.id, 'lang': self.lang, 'instruction': self.instruction,
                'tools': [t.to_dict() for t in self.tools],
                'turns': [{'query': t.query, 'calls': [c.to_dict() for c in t.calls], 'answer': t.answer}
                          for t in self.turns], 'meta': self.meta}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> 'Conversation':
        return cls(id=str(d['id']), instruction=check_instruction(d['instruction']),
                   tools=[Tool.from_dict(t) for t in d['tools']],
                   turns=[ConversationTurn(t['query'], [ToolCall(c['name'], c['arguments'],
                                                                 observation=c['observation'])
                                                        for c in t.get('calls', [])], t['answer'])
                          for t in d['turns']],
                   lang=d.get('lang'), meta=dict(d.get('meta') or {}))


@dataclass
class Sample:
    """One LLM call of RolePlay as a training sample: the exact request messages and the target reply."""
    messages: list[dict]
    target: str
    kind: str  # 'call' (writes Action/Action Input), 'answer' (after an observation), 'direct' (no tool)
    meta: dict = field(default_factory=dict)

    def to_messages(self, train_history: bool = False) -> dict:
        """ms-swift ``messages`` format; earlier assistant turns carry ``"loss": false`` unless
        ``train_history`` (then a loss scale must mask the observations inside them)."""
        msgs = [dict(m, loss=False) if m['role'] == 'assistant' and not train_history else dict(m)
                for m in self.messages]
        return {'messages': msgs + [{'role': 'assistant', 'content': self.target}]}

    def to_conversations(self, sample_id: str) -> dict:
        """The ``conversations`` layout of ms_agent / ms_agent_for_agentfabric (from/value)."""
        turns = [{'from': m['role'], 'value': m['content']} for m in self.messages]
        return {'id': sample_id, 'conversations': turns + [{'from': 'assistant', 'value': self.target}]}


def render(conv: Conversation) -> list[Sample]:
    """Every request RolePlay makes in this conversation, each paired with the reply the model must give.

    A call's target is ``format_call`` (one-line JSON, then the model ends its turn: the text RolePlay
    sees is the same as when it stops at ``Observation:``); after an observation the target is the answer.
    Later turns carry the earlier ones as AgentFabric keeps them (query, full transcript).
    """
    samples: list[Sample] = []
    history: list[dict] = []
    first_system = None
    for k, turn in enumerate(conv.turns):
        kept = ([{'role': 'system', 'content': first_system}] if first_system else []) + history
        lang = conv.lang or detect_lang(turn.query, kept)
        msgs = first_turn(conv.tools, conv.instruction, turn.query, lang, history)
        first_system = first_system or msgs[0]['content']
        outputs = []
        base = {'conversation': conv.id, 'turn': k, 'lang': lang, 'n_tools': len(conv.tools), **conv.meta}
        for call in turn.calls:
            out = format_call(call.name, call.arguments)
            samples.append(Sample(msgs, out, 'call', {**base, 'tool': call.name}))
            msgs = next_turn(msgs, out, call.observation)
            outputs.append(out)
        kind = 'answer' if turn.calls else 'direct'
        samples.append(Sample(msgs, turn.answer, kind, {**base, 'tool': turn.calls[-1].name if turn.calls else None}))
        history += [{'role': 'user', 'content': turn.query},
                    {'role': 'assistant', 'content': transcript(outputs + [turn.answer],
                                                                [c.observation for c in turn.calls])}]
    return samples


def to_case(conv: Conversation) -> EvalCase:
    """The last turn of a conversation as an evaluation case; earlier turns become its history."""
    *done, last = conv.turns
    history: list[dict] = []
    for t in done:
        outputs = [format_call(c.name, c.arguments) for c in t.calls] + [t.answer]
        history += [{'role': 'user', 'content': t.query},
                    {'role': 'assistant', 'content': transcript(outputs, [c.observation for c in t.calls])}]
    call = last.calls[0] if last.calls else None
    first_system = system_prompt(conv.tools, conv.instruction, conv.lang or detect_lang(conv.turns[0].query))
    lang = conv.lang or detect_lang(last.query, ([{'role': 'system', 'content': first_system}] if done else [])
                                    + history)
    return EvalCase(id=conv.id, lang=lang, instruction=conv.instruction, tools=conv.tools, query=last.query,
                    expected_call={'name': call.name, 'arguments': call.arguments} if call else None,
                    observation=call.observation if call else '', reference_answer=last.answer,
                    history=history, meta=dict(conv.meta))
