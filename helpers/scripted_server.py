"""A scripted OpenAI-compatible chat server on 127.0.0.1 that records every request it gets.

It answers ``/v1/models`` and ``/v1/chat/completions`` (streamed or not) from a script instead of a
model, and keeps each request body. That makes it the capture device behind two things this series
shows: the exact requests the real ``RolePlay`` sends (notebook 01, prompt parity tests) and
evaluation runs whose model behaviour is known in advance (evaluation tests).

A script is a list of replies used in order, or a function ``request_body -> reply``. Like a real
server, a reply is cut at the first stop word the request names. A reply can also be a :class:`RawReply`,
sent as it is (status, body), to play a server that misbehaves: :data:`FAULTS` holds the usual ones (an HTTP
error, a body that is not JSON, a completion without choices or without text), and a text reply may be as
long as a server that ignores ``max_tokens`` makes it.
"""
from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Sequence


@dataclass(frozen=True)
class RawReply:
    """A reply sent as is instead of a completion (streamed or not): for servers that misbehave."""
    status: int = 200
    body: str | bytes = b''
    content_type: str = 'application/json'


FAULTS = {
    'http_500': RawReply(500, '{"error": {"message": "internal error", "type": "server_error"}}'),
    'http_503': RawReply(503, '{"error": {"message": "overloaded"}}'),
    'not_json': RawReply(200, '<html>502 Bad Gateway</html>'),
    'no_choices': RawReply(200, '{"id": "x", "object": "chat.completion", "created": 0, "model": "m", "choices": [], '
                                '"usage": {"prompt_tokens": 1, "completion_tokens": 0, "total_tokens": 1}}'),
    'no_text': RawReply(200, '{"id": "x", "object": "chat.completion", "created": 0, "model": "m", "choices": '
                             '[{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", '
                             '"content": null}}], "usage": {"prompt_tokens": 1, "completion_tokens": 0, '
                             '"total_tokens": 1}}'),
    'not_a_completion': RawReply(200, '[1, 2, 3]'),
}

Script = Sequence[str | RawReply] | Callable[[dict], str | RawReply]


def apply_stop(text: str, stop: Sequence[str] | str | None) -> str:
    """Cut ``text`` before the earliest stop word, as OpenAI-compatible servers do."""
    if isinstance(stop, str):
        stop = [stop]
    cut = len(text)
    for s in stop or ():
        i = text.find(s) if s else -1
        if i != -1:
            cut = min(cut, i)
    return text[:cut]


class ScriptedServer:
    """``with ScriptedServer(['Action: ...']) as srv: ... srv.base_url ... srv.requests``"""

    def __init__(self, script: Script = (), model: str = 'scripted-model', host: str = '127.0.0.1',
                 port: int = 0, chunk_chars: int = 3, error_status: int = 500):
        self.script = script
        self.error_status = error_status  # reply status when the script raises: 500 is retried, 400 is not
        self.model = model
        self.requests: list[dict] = []
        self._chunk = chunk_chars
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer((host, port), self._handler())
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f'http://{host}:{port}/v1'

    def chat_requests(self) -> list[dict]:
        return [r for r in self.requests if 'messages' in r]

    def reply_for(self, body: dict) -> str | RawReply:
        with self._lock:
            index = len(self.chat_requests())
            self.requests.append(body)
        if callable(self.script):
            return self.script(body)
        if index >= len(self.script):
            raise RuntimeError(f'the script has {len(self.script)} replies; request {index + 1} has none')
        return self.script[index]

    def start(self) -> 'ScriptedServer':
        self._thread = threading.Thread(target=self._httpd.serve_forever, name='scripted-openai', daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread:
            self._thread.join(timeout=5)

    def __enter__(self) -> 'ScriptedServer':
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = 'HTTP/1.1'

            def log_message(self, *args):  # keep test and notebook output clean
                pass

            def _json(self, obj: dict, status: int = 200) -> None:
                data = json.dumps(obj).encode()  # ASCII escapes: any reply, lone surrogates too, is sent
                self.send_response(status)
                self.send_header('Content-Type', 'application/json')
                self.send_header('Content-Length', str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                if self.path.rstrip('/').endswith('/models'):
                    self._json({'object': 'list', 'data': [{'id': server.model, 'object': 'model',
                                                            'owned_by': 'scripted'}]})
                else:
                    self._json({'error': {'message': f'no route {self.path}'}}, 404)

            def do_POST(self):
                length = int(self.headers.get('Content-Length') or 0)
                body = json.loads(self.rfile.read(length) or b'{}')
                if not self.path.rstrip('/').endswith('/chat/completions'):
                    self._json({'error': {'message': f'no route {self.path}'}}, 404)
                    return
                try:
                    reply = server.reply_for(body)
                except Exception as e:  # a broken script must surface as an API error, not a hang
                    self._json({'error': {'message': str(e), 'type': 'script_error'}}, server.error_status)
                    return
                if isinstance(reply, RawReply):
                    data = reply.body.encode() if isinstance(reply.body, str) else reply.body
                    self.send_response(reply.status)
                    self.send_header('Content-Type', reply.content_type)
                    self.send_header('Content-Length', str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return
                text = apply_stop(reply, body.get('stop'))
                usage = {'prompt_tokens': 0, 'completion_tokens': len(text), 'total_tokens': len(text)}
                base = {'id': f'chatcmpl-{len(server.requests)}', 'created': int(time.time()),
                        'model': body.get('model', server.model)}
                if not body.get('stream'):
                    self._json({**base, 'object': 'chat.completion', 'usage': usage, 'choices': [{
                        'index': 0, 'finish_reason': 'stop',
                        'message': {'role': 'assistant', 'content': text}}]})
                    return
                self.send_response(200)
                self.send_header('Content-Type', 'text/event-stream')
                self.send_header('Connection', 'close')
                self.end_headers()
                chunk = {**base, 'object': 'chat.completion.chunk'}
                pieces = [text[i:i + server._chunk] for i in range(0, len(text), server._chunk)]
                events = [{**chunk, 'choices': [{'index': 0, 'delta': {'role': 'assistant', 'content': ''},
                                                 'finish_reason': None}]}]
                events += [{**chunk, 'choices': [{'index': 0, 'delta': {'content': p}, 'finish_reason': None}]}
                           for p in pieces]
                events.append({**chunk, 'choices': [{'index': 0, 'delta': {}, 'finish_reason': 'stop'}]})
                if (body.get('stream_options') or {}).get('include_usage'):
                    events.append({**chunk, 'choices': [], 'usage': usage})
                for ev in events:
                    self.wfile.write(f'data: {json.dumps(ev)}\n\n'.encode())
                self.wfile.write(b'data: [DONE]\n\n')
                self.wfile.flush()
                self.close_connection = True

        return Handler
