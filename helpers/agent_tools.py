"""Agent tools: offline tools registered with modelscope-agent, and running the real RolePlay loop.

modelscope-agent finds tools by name in its ``TOOL_REGISTRY``. Its built-in ones need the network
and API keys (``amap_weather`` downloads a city table and needs ``AMAP_TOKEN``), so this module
registers our own ``BaseTool`` subclasses under the names a case or the tool catalog uses: the
model sees exactly the description a real tool would produce, and the call runs locally.
:func:`run_roleplay` drives one ``RolePlay`` conversation turn and returns its transcript. An evaluation case
(:func:`case_turn`) runs with offline tools of its own: the tool it expects returns the case's recorded
observation, and any other tool answers with an error (the case holds no result for it).

Every completion of a turn goes through a :class:`ServerGuard` (the requests themselves are RolePlay's,
unchanged): a reply longer than :data:`MAX_REPLY_CHARS` is cut there (and counted in ``TurnRecord.n_cut``);
a lone surrogate in a reply (no Unicode: RolePlay could not even send it back in the next request) is escaped
as the six characters ``\\udXXX`` (:func:`helpers.jsonl.storable`); and a failed completion (an HTTP error,
a body that is not a completion, no choices, no text) raises :class:`CompletionFailed` at once, instead of
modelscope-agent's 3 × 3 retries of the OpenAI client's 3 attempts with a traceback each. After
:data:`FAILURES_IN_A_ROW` failed completions in a row the guard fails every further request immediately
(:attr:`ServerGuard.failing` says why), so an evaluation stops within seconds.
"""
from __future__ import annotations

import contextlib
import io
import os
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

from .agentfabric import EvalCase, Instruction, Tool, ToolCall
from .environment import cache_dir, quiet_modelscope_agent
from .jsonl import storable

_MSA: dict[str, Any] = {}
_REGISTRY_LOCK = threading.Lock()  # tool classes are registered by name in a global registry
_STDOUT_LOCK = threading.Lock()
_IMPORT_LOCK = threading.Lock()


def modelscope_agent():
    """Import modelscope-agent quietly and offline; returns its ``RolePlay``, ``BaseTool``, ``TOOL_REGISTRY``…

    The import unpacks NLTK data into ``./tmp/nltk_data`` of the working directory, so it runs from
    the cache directory; analytics and log files are switched off, and info logs (which echo whole
    prompts) are hidden unless ``LOG_LEVEL`` says otherwise. Call it from the main thread before
    starting worker threads: its first call briefly captures ``sys.stdout``, which all threads share.
    """
    with _IMPORT_LOCK:  # redirect_stdout swaps sys.stdout for every thread: one importer at a time
        if _MSA:
            return _MSA
        quiet_modelscope_agent()
        work = cache_dir() / 'modelscope_agent'
        work.mkdir(parents=True, exist_ok=True)
        with contextlib.chdir(work), contextlib.redirect_stdout(io.StringIO()):
            from modelscope_agent.agents.role_play import RolePlay
            from modelscope_agent.callbacks import BaseCallback
            from modelscope_agent.tools.base import TOOL_REGISTRY, BaseTool
        _MSA.update(RolePlay=RolePlay, BaseTool=BaseTool, TOOL_REGISTRY=TOOL_REGISTRY, BaseCallback=BaseCallback)
        return _MSA


class ToolRefused(RuntimeError):
    """An offline tool that has no result to give for this call (its message says why); RolePlay answers the model
    with its own failure observation, ``Tool api <name> failed to call. Args: … Details: <message>``."""


def register_tool(tool: Tool, run: Callable[[dict], Any], calls: list[ToolCall] | None = None) -> str:
    """Register ``tool`` with modelscope-agent under its name; ``run(args)`` computes the result.

    Arguments go through ``BaseTool._verify_args`` like any real tool (json5, required parameters),
    so a malformed call fails the way it would in AgentFabric. Every call is appended to ``calls``: the text
    RolePlay passed, the arguments the tool read (None when it refused them) and the result (``error: …`` when
    the tool refused the call or its arguments).
    """
    msa = modelscope_agent()
    log = calls if calls is not None else []

    def call(self, params: str, **kwargs):
        try:
            args = self._verify_args(params)
        except Exception as e:  # RolePlay shows the model its "failed to call" observation; the record says why
            log.append(ToolCall(self.name, None, params, f'error: the arguments were rejected ({e})'))
            raise
        try:
            result = str(run(args if isinstance(args, dict) else {'input': args}))
        except ToolRefused as e:  # RolePlay turns it into its own "Tool api … failed to call" observation
            log.append(ToolCall(self.name, args if isinstance(args, dict) else None, params, f'error: {e}'))
            raise
        log.append(ToolCall(self.name, args if isinstance(args, dict) else None, params, result))
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
class TurnRecord:
    """What RolePlay did in one live turn: what it yielded, each LLM call's output, the tool calls it ran.
    (A turn of a conversation as data is a :class:`helpers.agentfabric.ConversationTurn`.)"""
    chunks: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)  # one text per LLM call, as the server returned it
    calls: list[ToolCall] = field(default_factory=list)
    n_cut: int = 0  # outputs cut at MAX_REPLY_CHARS

    @property
    def text(self) -> str:
        """The whole reply as AgentFabric shows it (outputs and observations)."""
        return ''.join(self.chunks)

    @property
    def answer(self) -> str:
        """The final answer: the last LLM output (the first one when no tool ran)."""
        return self.outputs[-1].strip() if self.outputs else ''


class LoopLimit(RuntimeError):
    """The agent asked the model more often than allowed in one turn (it kept calling tools)."""


MAX_REPLY_CHARS = 32_768  # of one model reply: a server that ignores max_tokens cannot make us hold more
FAILURES_IN_A_ROW = 3  # failed completions in a row after which the server counts as failing


class CompletionFailed(AssertionError):
    """One completion failed: an HTTP error, a body that is not a completion, no choices or no text. An
    AssertionError because modelscope-agent 0.7.2's ``retry`` decorator (twice around ``OpenAi.chat``) re-raises
    those at once, where it retries anything else 9 times with half-second sleeps and a logged traceback each."""


def completion_failure(error: BaseException) -> CompletionFailed | None:
    """The :class:`CompletionFailed` inside ``error``: the retry decorator wraps it in AssertionErrors."""
    seen = 0
    while error is not None and seen < 10:
        if isinstance(error, CompletionFailed):
            return error
        inner = error.args[0] if error.args and isinstance(error.args[0], BaseException) else None
        error, seen = inner or error.__cause__ or error.__context__, seen + 1
    return None


def _failure_reason(error: Exception) -> str:
    """A failed completion in a few words: its HTTP status, or what was wrong with the reply."""
    import openai
    if isinstance(error, openai.APIStatusError):
        message = ' '.join(str(getattr(error, 'message', '') or '').split())
        message = message.removeprefix(f'Error code: {error.status_code} - ')[:120]
        return f'HTTP {error.status_code}' + (f' ({message})' if message else '')
    if isinstance(error, openai.APITimeoutError):
        return 'no reply before the timeout'
    if isinstance(error, openai.APIConnectionError):
        return 'the connection failed'
    return f'a reply that is not a completion ({type(error).__name__}: {str(error)[:120]})'


class ServerGuard:
    """The completions of one run (shared by its threads): cuts long replies, and counts failures in a row."""

    def __init__(self, failures_in_a_row: int = FAILURES_IN_A_ROW, max_chars: int = MAX_REPLY_CHARS):
        self.limit, self.max_chars = failures_in_a_row, max_chars
        self.failing: str | None = None  # why the server counts as failing; None while it works
        self._in_a_row = 0
        self._lock = threading.Lock()

    def _check(self) -> None:
        if self.failing:
            raise CompletionFailed(self.failing)

    def _failed(self, error: Exception) -> CompletionFailed:
        reason = _failure_reason(error)
        with self._lock:
            self._in_a_row += 1
            if self._in_a_row >= self.limit and not self.failing:
                self.failing = f'{self._in_a_row} completions in a row failed, the last with {reason}'
        return CompletionFailed(reason)

    def _succeeded(self) -> None:
        with self._lock:
            self._in_a_row = 0

    def watch(self, llm, turn: TurnRecord) -> None:
        """Route the completions of modelscope-agent's ``llm`` (one RolePlay's) through this guard; its OpenAI
        client sends each request once (its own retries wait, and honour a server's Retry-After, for minutes)."""
        llm.client = llm.client.with_options(max_retries=0)
        no_stream, stream = llm._chat_no_stream, llm._chat_stream

        def chat_no_stream(*args, **kwargs) -> str:
            self._check()
            try:
                text = no_stream(*args, **kwargs)
                if not isinstance(text, str):
                    raise TypeError(f'the reply holds no text ({type(text).__name__})')
            except Exception as e:  # noqa: BLE001 - any failure of a completion is one failed completion
                raise self._failed(e) from None
            self._succeeded()
            if len(text) > self.max_chars:
                turn.n_cut += 1
                text = text[:self.max_chars]
            return storable(text)

        def chat_stream(*args, **kwargs) -> Iterator[str]:
            self._check()
            left = self.max_chars
            try:
                for piece in map(storable, stream(*args, **kwargs)):
                    if len(piece) > left:
                        turn.n_cut += 1
                        if left:
                            yield piece[:left]
                        break
                    left -= len(piece)
                    yield piece
            except Exception as e:  # noqa: BLE001
                raise self._failed(e) from None
            self._succeeded()

        llm._chat_no_stream, llm._chat_stream = chat_no_stream, chat_stream


def _recorder(turn: TurnRecord):
    """A modelscope-agent callback that splits the stream into one output per LLM call."""
    class Recorder(modelscope_agent()['BaseCallback']):
        def on_llm_start(self, *args, **kwargs):
            turn.outputs.append('')

        def on_llm_new_token(self, model, chunk, *args, **kwargs):
            turn.outputs[-1] += chunk

        def on_llm_end(self, model, response, stream=True, *args, **kwargs):
            if not stream and isinstance(response, str):
                turn.outputs[-1] = response
    return Recorder()


def _without_traceback(call_tool: Callable) -> Callable:
    """RolePlay's ``_call_tool`` without the traceback it prints for a call with bad arguments: the turn's
    observation already says ``Tool api … failed to call … Details: <reason>``, and the notebook stays readable."""
    def call(tool_list, **kwargs):
        with _STDOUT_LOCK, contextlib.redirect_stdout(io.StringIO()):  # one swap of sys.stdout at a time
            return call_tool(tool_list, **kwargs)
    return call


def roleplay_turn(tools: Sequence[Tool], runners: dict[str, Callable[[dict], Any]], instruction: Instruction,
                  query: str, llm: dict, lang: str | None = None, history: Sequence[dict] = (),
                  max_llm_calls: int | None = None, guard: ServerGuard | None = None,
                  **llm_kwargs) -> tuple[TurnRecord, Iterator[str]]:
    """One user turn through the real ``RolePlay``: the :class:`TurnRecord` it fills, and the stream of chunks
    (as AgentFabric shows them) that fills it while it is consumed.

    ``llm_kwargs`` (e.g. ``max_tokens``, ``temperature``) reach every request, as keyword arguments of
    ``RolePlay.run`` do. Tools without a runner must already be registered (e.g. real ones).
    ``max_llm_calls`` stops a turn whose model keeps calling tools (:class:`LoopLimit`). Completions go through
    ``guard`` (a run shares one; a turn of its own by default): long replies cut, failures not retried.
    """
    msa = modelscope_agent()
    turn = TurnRecord()
    with _REGISTRY_LOCK:  # instances capture their own runner, so concurrent runs cannot mix tools
        names = [register_tool(t, runners[t.name], turn.calls) if t.name in runners else t.name for t in tools]
        bot = msa['RolePlay'](function_list=names, llm=llm, instruction=instruction, callbacks=[_recorder(turn)])
    bot._call_tool = _without_traceback(bot._call_tool)
    (guard or ServerGuard()).watch(bot.llm, turn)
    kwargs = dict(llm_kwargs)
    if history:
        kwargs['history'] = [dict(m) for m in history]
    if lang:
        kwargs['lang'] = lang

    def chunks() -> Iterator[str]:
        for chunk in bot.run(query, **kwargs):
            turn.chunks.append(chunk)
            yield chunk
            # RolePlay yields the observation, then asks the model again: stop here, before that request
            if max_llm_calls and len(turn.outputs) >= max_llm_calls and chunk.startswith('\nObservation:'):
                raise LoopLimit(f'stopped after {max_llm_calls} model calls in one turn')
    return turn, chunks()


def run_roleplay(tools: Sequence[Tool], runners: dict[str, Callable[[dict], Any]], instruction: Instruction,
                 query: str, llm: dict, lang: str | None = None, history: Sequence[dict] = (),
                 on_chunk: Callable[[str], None] | None = None, **llm_kwargs) -> TurnRecord:
    """Run one user turn to the end; ``on_chunk`` sees the stream."""
    turn, chunks = roleplay_turn(tools, runners, instruction, query, llm, lang, history, **llm_kwargs)
    for chunk in chunks:
        if on_chunk:
            on_chunk(chunk)
    return turn


def case_runners(case: EvalCase) -> dict[str, Callable[[dict], Any]]:
    """The offline tools of an evaluation case: the tool the case expects returns the case's recorded observation;
    any other tool it offers answers with an error (:class:`ToolRefused`) — the case recorded no result for it, and
    handing the model the expected tool's result under another tool's name would look like a real answer."""
    expected = (case.expected_call or {}).get('name')

    def recorded(args: dict) -> str:
        return case.observation

    def refuse(name: str) -> Callable[[dict], Any]:
        def run(args: dict):
            raise ToolRefused(f'this question needs no tool, so the offline evaluation has no result for {name}'
                              if expected is None else f'{name} is not the tool this case expects ({expected}): the '
                              'offline evaluation has no result for it')
        return run
    return {t.name: recorded if t.name == expected else refuse(t.name) for t in case.tools}


def case_turn(case: EvalCase, llm: dict, max_llm_calls: int | None = None, guard: ServerGuard | None = None,
              **llm_kwargs) -> tuple[TurnRecord, Iterator[str]]:
    """A case as a RolePlay turn with its offline tools (:func:`case_runners`): the expected tool returns the
    case's observation, another tool an error."""
    return roleplay_turn(case.tools, case_runners(case), case.instruction, case.query, llm, case.lang, case.history,
                         max_llm_calls, guard, **llm_kwargs)


def run_case(case: EvalCase, llm: dict, on_chunk: Callable[[str], None] | None = None,
             **llm_kwargs) -> TurnRecord:
    """Run a case through RolePlay to the end; ``on_chunk`` sees the stream."""
    turn, chunks = case_turn(case, llm, **llm_kwargs)
    for chunk in chunks:
        if on_chunk:
            on_chunk(chunk)
    return turn


def catalog_runners(tools) -> dict[str, Callable[[dict], str]]:
    """Offline runners for catalog tools: each returns the tool's deterministic result as JSON text."""
    return {t.name: t.observation for t in tools}


REAL_TOOLS = {  # name: (key variable, module, class, host the tool calls)
    'amap_weather': ('AMAP_TOKEN', 'modelscope_agent.tools.amap_weather', 'AMAPWeather', 'https://restapi.amap.com'),
    'image_gen': ('DASHSCOPE_API_KEY', 'modelscope_agent.tools.dashscope_tools.image_generation', 'TextToImageTool',
                  'https://dashscope.aliyuncs.com'),
}


def use_real_tools(names: Sequence[str], log: Callable[[str], None] = print) -> list[str]:
    """Register modelscope-agent's real tools for ``names`` whose key is set and whose service answers.

    Returns the names now served by real tools; the others keep the offline catalog tool (said in one
    line, without the key). Keys are read by the tools from the environment and never pass through
    this series' code, outputs or logs.
    """
    import importlib
    from .environment import hub_reachable
    registry = modelscope_agent()['TOOL_REGISTRY']
    real = []
    for name in names:
        if name not in REAL_TOOLS or not os.environ.get(REAL_TOOLS[name][0]):
            continue
        key_var, module, cls_name, host = REAL_TOOLS[name]
        try:
            if not hub_reachable(host):
                raise ConnectionError(f'{host} is not reachable')
            cls = getattr(importlib.import_module(module), cls_name)
            cls({})  # amap_weather downloads its city table here: fail now rather than inside the agent
        except Exception as e:
            log(f'{name}: {key_var} is set but the real tool is unavailable ({type(e).__name__}); '
                'using the offline catalog tool')
            continue
        registry[name] = {'class': cls}
        real.append(name)
    return real


# The original guide's own check (notebooks 04 and 06): a weather-assistant role asked for Chaoyang's weather.
GUIDE_TEST = {'instruction': '你扮演一个天气预报助手，你需要查询相应地区的天气，并调用给你的画图工具绘制一张城市的图。',
              'query': '朝阳区天气怎样？', 'expected': {'name': 'amap_weather', 'arguments': {'location': '朝阳区'}}}


def guide_turn(llm: dict, real: Sequence[str] = (), on_chunk: Callable[[str], None] | None = None,
               **llm_kwargs) -> TurnRecord:
    """The guide's question through RolePlay with the catalog's ``amap_weather`` (the real tool when its name is
    in ``real``: see :func:`use_real_tools`), greedy."""
    from .catalog import load_catalog
    weather = next(t for t in load_catalog() if t.name == 'amap_weather')
    runners = {} if 'amap_weather' in real else catalog_runners([weather])
    return run_roleplay([weather.as_tool('zh')], runners, GUIDE_TEST['instruction'], GUIDE_TEST['query'], llm,
                        lang='zh', on_chunk=on_chunk, temperature=0, **llm_kwargs)
