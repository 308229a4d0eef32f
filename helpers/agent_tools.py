"""Agent tools: offline tools registered with modelscope-agent, and running the real RolePlay loop.

modelscope-agent finds tools by name in its ``TOOL_REGISTRY``. Its built-in ones need the network
and API keys (``amap_weather`` downloads a city table and needs ``AMAP_TOKEN``), so this module
registers our own ``BaseTool`` subclasses under the names a case or the tool catalog uses: the
model sees exactly the description a real tool would produce, and the call runs locally.
:func:`run_roleplay` drives one ``RolePlay`` conversation turn and returns its transcript.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from .agentfabric import EvalCase, Instruction, Tool, parse_action
from .environment import cache_dir

_MSA: dict[str, Any] = {}


def modelscope_agent():
    """Import modelscope-agent quietly and offline; returns ``{'RolePlay', 'BaseTool', 'TOOL_REGISTRY'}``.

    The import unpacks NLTK data into ``./tmp/nltk_data`` of the working directory, so it runs from
    the cache directory; analytics and log files are switched off, and info logs (which echo whole
    prompts) are hidden unless ``LOG_LEVEL`` says otherwise.
    """
    if not _MSA:
        os.environ.setdefault('SCARF_NO_ANALYTICS', 'true')
        os.environ.setdefault('LOG_ENABLE_FILE', 'off')
        os.environ.setdefault('LOG_LEVEL', 'WARNING')
        work = cache_dir() / 'modelscope_agent'
        work.mkdir(parents=True, exist_ok=True)
        with contextlib.chdir(work), contextlib.redirect_stdout(None):
            from modelscope_agent.agents.role_play import RolePlay
            from modelscope_agent.tools.base import TOOL_REGISTRY, BaseTool
        _MSA.update(RolePlay=RolePlay, BaseTool=BaseTool, TOOL_REGISTRY=TOOL_REGISTRY)
    return _MSA


@dataclass
class CallRecord:
    name: str
    arguments: str  # raw text the agent passed
    parsed: dict | None  # what the tool understood, None when it could not parse
    result: str


def register_tool(tool: Tool, run: Callable[[dict], Any], calls: list[CallRecord] | None = None) -> str:
    """Register ``tool`` with modelscope-agent under its name; ``run(args)`` computes the result.

    Arguments go through ``BaseTool._verify_args`` like any real tool (json5, required parameters),
    so a malformed call fails the way it would in AgentFabric. Every call is appended to ``calls``.
    """
    msa = modelscope_agent()
    log = calls if calls is not None else []

    def call(self, params: str, **kwargs):
        try:
            args = self._verify_args(params)
        except Exception:
            log.append(CallRecord(self.name, params, None, ''))
            raise
        result = str(run(args if isinstance(args, dict) else {'input': args}))
        log.append(CallRecord(self.name, params, args if isinstance(args, dict) else None, result))
        return result

    cls = type(f'Offline_{tool.name}', (msa['BaseTool'],), {
        'name': tool.name, 'description': tool.description,
        'parameters': [p.to_dict() for p in tool.parameters], 'call': call})
    msa['TOOL_REGISTRY'][tool.name] = {'class': cls}
    return tool.name


def llm_config(base_url: str, model: str, stream: bool | None = None) -> dict:
    """RolePlay's LLM config for an OpenAI-compatible server without native function calling."""
    cfg = {'model_server': 'openai', 'model': model, 'api_base': base_url, 'api_key': 'EMPTY',
           'is_chat': True, 'is_function_call': False}
    if stream is not None:
        cfg['support_stream'] = stream
    return cfg


@dataclass
class Turn:
    """One RolePlay turn: every text the agent yielded, the tool calls it ran, and the final answer."""
    chunks: list[str] = field(default_factory=list)
    calls: list[CallRecord] = field(default_factory=list)

    @property
    def text(self) -> str:
        return ''.join(self.chunks)

    @property
    def answer(self) -> str:
        """The text after the last ``Answer:``, or the whole reply when no tool ran."""
        text = self.text
        return text.rsplit('\nAnswer:', 1)[1].strip() if self.calls and '\nAnswer:' in text else text.strip()


def run_roleplay(tools: Sequence[Tool], runners: dict[str, Callable[[dict], Any]], instruction: Instruction,
                 query: str, llm: dict, lang: str | None = None, history: Sequence[dict] = (),
                 on_chunk: Callable[[str], None] | None = None) -> Turn:
    """Run one user turn through the real ``RolePlay`` with offline tools; ``on_chunk`` sees the stream."""
    msa = modelscope_agent()
    turn = Turn()
    names = [register_tool(t, runners[t.name], turn.calls) for t in tools]
    bot = msa['RolePlay'](function_list=names, llm=llm, instruction=instruction)
    kwargs = {'history': [dict(m) for m in history]} if history else {}
    if lang:
        kwargs['lang'] = lang
    for chunk in bot.run(query, **kwargs):
        turn.chunks.append(chunk)
        if on_chunk:
            on_chunk(chunk)
    return turn


def run_case(case: EvalCase, llm: dict, on_chunk: Callable[[str], None] | None = None) -> Turn:
    """Run a case through RolePlay; each of its tools returns the case's observation."""
    runners = {t.name: (lambda args: case.observation) for t in case.tools}
    return run_roleplay(case.tools, runners, case.instruction, case.query, llm, case.lang, case.history, on_chunk)


def first_call(turn: Turn):
    """The call RolePlay parsed from the model's first output (None when it answered directly)."""
    return parse_action(turn.text)
