"""Playground: a small Gradio page to chat with the served model through the real RolePlay agent.

Pick tools from the catalog and a role instruction, chat, and watch the calls: each turn runs
``RolePlay`` exactly as AgentFabric does (the conversation so far is passed as its history), with
the catalog's offline tools — or the real ``amap_weather`` / ``image_gen`` when their keys are set in
the environment. The page listens on 127.0.0.1 unless told otherwise; its link goes through the notebook
platform's proxy when there is one (:func:`helpers.environment.web_link`), so a remote browser (PAI-DSW,
ModelScope, JupyterHub) can open it.
"""
from __future__ import annotations

import contextlib
import io
import json
from dataclasses import dataclass

from .agent_tools import catalog_runners, llm_config, roleplay_turn, use_real_tools
from .agentfabric import detect_lang
from .catalog import CatalogTool
from .environment import web_link
from .scripted_server import ScriptedServer
from .serving import Server, free_port

DEFAULT_TOOLS = ('amap_weather', 'image_gen')
DEFAULT_INSTRUCTION = '你扮演一个天气预报助手，你需要查询相应地区的天气，并调用给你的画图工具绘制一张城市的图。'


@dataclass
class Playground:
    app: object  # gradio.Blocks
    url: str  # the link for the browser (see helpers.environment.web_link)
    local_url: str  # the page itself, http://127.0.0.1:<port>/
    server: Server | ScriptedServer | None = None  # the model server behind the page, stopped with it

    def close(self) -> None:
        """Stop the page and the model server behind it."""
        with contextlib.redirect_stdout(io.StringIO()):  # Gradio prints "Closing server running on port: …"
            self.app.close()
        if self.server:
            self.server.stop()


def build_app(base_url: str, model: str, catalog: list[CatalogTool], max_tokens: int = 256):
    """The Gradio Blocks app (not started)."""
    import gradio as gr
    by_name = {t.name: t for t in catalog}
    llm = llm_config(base_url, model, stream=True)

    def respond(message, history, tool_names, instruction):
        history = list(history or [])
        if not message.strip():
            yield history, '', gr.update()
            return
        chosen = [by_name[n] for n in tool_names or []]
        lang = detect_lang(message, history)
        real = set(use_real_tools([t.name for t in chosen]))
        runners = {k: v for k, v in catalog_runners(chosen).items() if k not in real}
        kept = [{'role': m['role'], 'content': _text(m['content'])} for m in history]
        turn, chunks = roleplay_turn([t.as_tool(lang) for t in chosen], runners, instruction, message, llm,
                                     history=kept, max_tokens=max_tokens, temperature=0)
        history += [{'role': 'user', 'content': message}, {'role': 'assistant', 'content': ''}]
        for _ in chunks:
            history[-1]['content'] = turn.text
            yield history, '', gr.update()
        calls = [{'tool': c.name, 'arguments': c.arguments if c.arguments is not None else c.action_input,
                  'result': _maybe_json(c.observation)} for c in turn.calls]
        yield history, '', calls

    with gr.Blocks(title='AgentFabric playground') as app:
        gr.Markdown('## AgentFabric playground\nChat with the fine-tuned model through modelscope-agent\'s '
                    '`RolePlay`, the agent behind AgentFabric. Tool calls run offline unless a real tool\'s key is set.')
        with gr.Row():
            with gr.Column(scale=1):
                tools = gr.CheckboxGroup([t.name for t in catalog], value=[n for n in DEFAULT_TOOLS if n in by_name],
                                         label='Tools', elem_id='tools')
                instruction = gr.Textbox(DEFAULT_INSTRUCTION, label='Role instruction', lines=3, elem_id='instruction')
            with gr.Column(scale=2):
                chat = gr.Chatbot(label='Conversation', elem_id='chat', height=420)
                box = gr.Textbox(label='Message', placeholder='朝阳区天气怎样？', elem_id='message')
                send = gr.Button('Send', elem_id='send', variant='primary')
                calls = gr.JSON(label='Tool calls of the last turn', elem_id='calls')
        for trigger in (send.click, box.submit):
            trigger(respond, [box, chat, tools, instruction], [chat, box, calls])
    return app


def _text(content) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # gradio may hand back content as a list of parts
        return ''.join(p.get('text', '') if isinstance(p, dict) else str(p) for p in content)
    return str(content)


def _maybe_json(text: str):
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return text


def launch(base_url: str, model: str, catalog: list[CatalogTool], host: str = '127.0.0.1', port: int | None = None,
           max_tokens: int = 256, server: Server | ScriptedServer | None = None) -> Playground:
    """Start the page without blocking; ``.close()`` stops it, and ``server`` (the model server behind
    ``base_url``) with it."""
    port = port or free_port(host)
    link = web_link(port, host)
    app = build_app(base_url, model, catalog, max_tokens)
    app.queue()
    _, local_url, _ = app.launch(server_name=host, server_port=port, prevent_thread_lock=True, quiet=True,
                                 share=False, show_error=True, root_path=link.root_path,
                                 inline=False)  # no iframe of 127.0.0.1: a remote browser cannot load it
    return Playground(app, link.url, local_url, server)
