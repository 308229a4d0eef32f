"""Training: command building and presets, the two-process CPU path, resume after a kill, clear failures."""
import json
import os
import re
import shlex
import signal
import threading
import time
from pathlib import Path

import pytest

from helpers.models import MODELS, prepare_model
from helpers.synth import PROFILE_DATA, write_splits
from helpers.training import PRESETS, TrainingError, last_checkpoint, preset, read_log_history, run_training


# The training command of the AgentFabric tool-calling best-practice guide (ModelScope, English edition, section
# "Fine-tuning Process", 8×A100), as published for ms-swift 1.x's llm_sft.py; the launcher (nohup torchrun
# --nproc_per_node --master_port 29500) is left out. The Chinese edition of the guide differs in three values
# (max_length 2048, weight_decay 0.01, accumulation 1/nproc_per_node); the series follows the English one.
GUIDE_COMMAND = """
    --model_id_or_path qwen/Qwen-7B-Chat --model_revision master --sft_type lora --tuner_backend swift
    --dtype AUTO --output_dir output --dataset ms-agent-for-agentfabric-default ms-agent-for-agentfabric-addition
    --train_dataset_mix_ratio 2.0 --train_dataset_sample -1 --num_train_epochs 2 --max_length 1500
    --check_dataset_strategy warning --lora_rank 8 --lora_alpha 32 --lora_dropout_p 0.05 --lora_target_modules ALL
    --self_cognition_sample 3000 --model_name 卡卡罗特 --model_author 陶白白 --gradient_checkpointing true
    --batch_size 2 --weight_decay 0.1 --learning_rate 5e-5 --gradient_accumulation_steps $(expr 32 / $nproc_per_node)
    --max_grad_norm 0.5 --warmup_ratio 0.03 --eval_steps 100 --save_steps 100 --save_total_limit 2 --logging_steps 10
"""
# guide flag -> (TrainConfig field, the guide's value in TrainConfig terms)
GUIDE_TO_PRESET = {
    'sft_type': ('tuner', str), 'lora_rank': ('lora_rank', int), 'lora_alpha': ('lora_alpha', int),
    'lora_dropout_p': ('lora_dropout', float), 'lora_target_modules': ('target_modules', {'ALL': 'all-linear'}.get),
    'learning_rate': ('learning_rate', float), 'num_train_epochs': ('num_train_epochs', float),
    'max_length': ('max_length', int), 'batch_size': ('batch_size', int), 'weight_decay': ('weight_decay', float),
    'max_grad_norm': ('max_grad_norm', float), 'warmup_ratio': ('warmup_ratio', float),
    'eval_steps': ('eval_steps', int), 'save_steps': ('save_steps', int), 'save_total_limit': ('save_total_limit', int),
    'logging_steps': ('logging_steps', int), 'gradient_checkpointing': ('gradient_checkpointing', {'true': True}.get),
    'train_dataset_mix_ratio': ('general_mix_ratio', float), 'self_cognition_sample': ('self_cognition', int),
    'model_name': ('model_name', str), 'model_author': ('model_author', str),
    'dtype': ('precision', {'AUTO': 'auto'}.__getitem__),  # AUTO: bf16 where supported, which ms-swift 4 decides on a GPU
}
NOT_IN_THE_PRESET = {
    'model_id_or_path': 'the model is chosen apart from the preset: models.MODELS["qwen-7b-chat"], checked below',
    'model_revision': "'master' is ModelScope's default revision",
    'tuner_backend': "ms-swift 1.x's own LoRA; ms-swift 4 applies the same LoRA through peft",
    'output_dir': 'set per run', 'dataset': "the guide's converted ms_agent data; the series trains on its own",
    'train_dataset_sample': '-1 = every sample, as the series does', 'check_dataset_strategy': 'gone in ms-swift 3',
    'gradient_accumulation_steps': 'derived from the effective batch, checked below for 1-8 GPUs',
}
# What the guide leaves to ms-swift 1.7's defaults (swift/llm/utils/argument.py at v1.7.3, March 2024).
SWIFT_17_DEFAULTS = {'lr_scheduler': 'linear', 'general_dataset': 'iic/ms_bench',  # train_dataset_mix_ds ms-bench
                     'loss_scale': 'default', 'seed': 42}


def _guide_flags():
    text = re.sub(r'\$\(expr (\d+) / \$nproc_per_node\)', r'\1/nproc', GUIDE_COMMAND)
    flags, key = {}, None
    for token in shlex.split(text):
        if token.startswith('--'):
            key = token[2:]
            flags[key] = []
        else:
            flags[key].append(token)
    return flags


def test_original_guide_preset_matches_the_guide_field_by_field():
    flags = _guide_flags()
    assert set(flags) == set(GUIDE_TO_PRESET) | set(NOT_IN_THE_PRESET)  # every flag of the guide is accounted for
    cfg = preset('original-guide', cuda=True)  # the guide trains on GPUs
    for flag, (field_name, convert) in GUIDE_TO_PRESET.items():
        assert getattr(cfg, field_name) == convert(flags[flag][0]), flag
    for field_name, value in SWIFT_17_DEFAULTS.items():
        assert getattr(cfg, field_name) == value, field_name
    assert flags['gradient_accumulation_steps'] == ['32/nproc']
    for gpus in (1, 2, 4, 8):
        assert preset('original-guide', nproc_per_node=gpus).gradient_accumulation_steps == 32 // gpus
    assert MODELS['qwen-7b-chat'].model_id == flags['model_id_or_path'][0]
    assert cfg.datasets(100)[1:] == ['iic/ms_bench#200', 'swift/self-cognition#3000']


@pytest.mark.parametrize('gpus, accum', [(1, 32), (2, 16), (4, 8), (8, 4)])
def test_effective_batch_is_constant_across_gpu_counts(gpus, accum):
    cfg = preset('original-guide', nproc_per_node=gpus)
    assert cfg.gradient_accumulation_steps == accum
    assert cfg.batch_size * cfg.gradient_accumulation_steps * cfg.world_size == 64
    args = cfg.args()
    assert args[args.index('--gradient_accumulation_steps') + 1] == str(accum)


def test_multi_node_and_deepspeed_options():
    cfg = preset('gpu', nproc_per_node=8, nnodes=2, node_rank=1, master_addr='10.0.0.1', master_port=29501,
                 deepspeed='zero3', cuda_visible_devices='0,1,2,3,4,5,6,7')
    env = cfg.env()
    assert env['NPROC_PER_NODE'] == '8' and env['NNODES'] == '2' and env['NODE_RANK'] == '1'
    assert env['MASTER_ADDR'] == '10.0.0.1' and env['MASTER_PORT'] == '29501'
    assert '--deepspeed' in cfg.args() and 'zero3' in cfg.args()
    shell = cfg.shell()
    assert shell.startswith('NPROC_PER_NODE=8 ') and '--tuner_type lora' in shell
    with pytest.raises(ValueError, match='multiple'):
        _ = preset('gpu', nproc_per_node=3).gradient_accumulation_steps
    with pytest.raises(ValueError, match='unknown preset'):
        preset('huge')
    with pytest.raises(ValueError, match='unknown training options'):
        preset('cpu', learning_rte=1)


def test_hub_data_only_when_asked_for_and_droppable_offline():
    cfg = preset('original-guide', train_file='t.jsonl')
    assert cfg.datasets(100) == ['t.jsonl', 'iic/ms_bench#200', 'swift/self-cognition#3000']
    args = cfg.args(100)
    assert args[args.index('--model_name'):][:4] == ['--model_name', '卡卡罗特', '--model_author', '陶白白']
    assert cfg.drop_hub_data() == ['iic/ms_bench', 'swift/self-cognition']
    assert cfg.datasets(100) == ['t.jsonl'] and '--model_name' not in cfg.args(100)
    assert preset('cpu', train_file='t.jsonl').drop_hub_data() == []


@pytest.fixture(scope='module')
def tiny_data(tmp_path_factory):
    out = tmp_path_factory.mktemp('data')
    write_splits(out, PROFILE_DATA['tiny'], seed=1)
    return out


def _tiny(tmp_path, data, **kw):
    return preset('tiny', model=str(prepare_model('tiny-qwen2')), model_type='qwen2', template='qwen2_5',
                  train_file=str(data / 'train.jsonl'), output_dir=str(tmp_path / 'out'), **kw)


def test_two_cpu_processes_end_with_identical_weights(tmp_path, tiny_data):
    cfg = _tiny(tmp_path, tiny_data, max_steps=4, nproc_per_node=2, use_cpu=True, global_batch_size=4,
                save_steps=100, eval_steps=100, master_port=29000 + os.getpid() % 1000)
    run_training(cfg, tmp_path / 'train.log')
    ranks = [json.loads((tmp_path / 'out' / 'rank_checksums' / f'rank{r}.json').read_text()) for r in (0, 1)]
    assert [r['world_size'] for r in ranks] == [2, 2] and ranks[0]['global_step'] == 4
    assert ranks[0]['sha256_begin'] != ranks[0]['sha256_end']  # the weights did change
    assert ranks[0]['sha256_end'] == ranks[1]['sha256_end']  # and every rank holds the same ones


def test_killed_run_resumes_from_its_last_checkpoint(tmp_path, tiny_data):
    cfg = _tiny(tmp_path, tiny_data, max_steps=6, save_steps=2, eval_steps=100, keep_steps=(3,))
    out = tmp_path / 'out'

    def kill_after_first_checkpoint():
        deadline = time.time() + 300
        while time.time() < deadline and not (out / 'checkpoint-2' / 'trainer_state.json').exists():
            time.sleep(0.2)
        for pid in os.popen(f"pgrep -f 'output_dir {out}'").read().split():
            os.kill(int(pid), signal.SIGKILL)

    killer = threading.Thread(target=kill_after_first_checkpoint)
    killer.start()
    with pytest.raises(TrainingError, match='exited with code'):
        run_training(cfg, tmp_path / 'train.log')
    killer.join()
    assert last_checkpoint(out) is not None and not (out / 'train_done.json').exists()
    seen = []
    result = run_training(cfg, tmp_path / 'train.log', on_progress=lambda *a: seen.append(a))
    assert result.resumed_from and Path(result.resumed_from).name in ('checkpoint-2', 'checkpoint-4')
    # progress comes from the rows ms-swift appended to logging.jsonl in this run: steps after the resume point
    assert seen and seen[-1][:2] == (6, 6) and all(s > int(result.resumed_from.split('-')[-1]) for s, _, _ in seen)
    assert any(loss is not None for _, _, loss in seen)
    assert result.last_checkpoint.endswith('checkpoint-6')
    assert any('loss' in r for r in read_log_history(out))
    again = run_training(cfg, tmp_path / 'train.log')  # finished: not repeated
    assert again.skipped and again.last_checkpoint == result.last_checkpoint
    # keep_steps: the model after step 3 (not a save step) stays, without the optimizer, whatever the rotation did
    kept = out / 'step-3'
    assert (kept / 'config.json').exists() and list(kept.glob('*.safetensors')) and not (kept / 'optimizer.pt').exists()
    assert json.loads((kept / 'trainer_state.json').read_text())['global_step'] == 3


def test_progress_reads_only_complete_new_rows_of_logging_jsonl(tmp_path):
    from helpers.training import _NewRows
    path = tmp_path / 'logging.jsonl'
    path.write_text('{"loss": 9.0, "global_step/max_steps": "1/4"}\n')  # before this run (resumed): not replayed
    rows = _NewRows(path)
    assert rows() == []
    with open(path, 'a') as f:
        f.write('{"loss": 2.5, "global_step/max_steps": "2/4"}\n{"eval_loss": 3.0, "global_st')
    assert rows() == [{'loss': 2.5, 'global_step/max_steps': '2/4'}]  # the half-written row waits
    with open(path, 'a') as f:
        f.write('ep/max_steps": "2/4"}\n')
    assert rows() == [{'eval_loss': 3.0, 'global_step/max_steps': '2/4'}]
    assert _NewRows(tmp_path / 'missing.jsonl')() == []


def test_a_failed_run_ends_with_the_reason_and_log_tail(tmp_path, tiny_data):
    cfg = _tiny(tmp_path, tiny_data, max_steps=2)
    cfg.model = str(tmp_path / 'no-such-model')
    with pytest.raises(TrainingError) as err:
        run_training(cfg, tmp_path / 'train.log')
    assert 'last lines' in str(err.value) and str(tmp_path / 'train.log') in str(err.value)


def test_loss_scale_weights_calls_and_masks_inserted_observations(monkeypatch):
    monkeypatch.setenv('AFT_ARGS_WEIGHT', '3')
    from helpers.swift_plugin import AgentFabricLossScale
    scale = AgentFabricLossScale()
    parts, weights = scale.get_loss_scale('Action: get_weather\nAction Input: {"city": "Paris"}\n')
    assert list(zip(parts, weights)) == [('Action:', 1.0), (' get_weather', 3.0), ('\nAction Input:', 1.0),
                                         (' {"city": "Paris"}', 3.0), ('\n', 1.0)]
    transcript = ('Action: get_weather\nAction Input: {"city": "Paris"}\n'
                  '\nObservation: <result>{"t": 21}\nline two</result>\nAnswer:It is 21 degrees.')
    parts, weights = scale.get_loss_scale(transcript)
    assert ''.join(parts) == transcript
    masked = [p for p, w in zip(parts, weights) if w == 0]
    assert masked == ['\nObservation: <result>{"t": 21}\nline two</result>\nAnswer:']
    assert ('It is 21 degrees.', 1.0) in list(zip(parts, weights))
    assert scale.get_loss_scale('Just an answer.') == (['Just an answer.'], [1.0])


@pytest.mark.parametrize('text, first', [('Sorry, I cannot order food.', 'Sorry'), ('不客气，有需要随时找我。', '不客气'),
                                         ('  “Runaway” is a song.', '  “Runaway'), ('It is 21 degrees.', 'It')])
def test_decision_weight_weighs_the_first_word_without_a_tokenizer(monkeypatch, text, first):
    monkeypatch.setenv('AFT_DECISION_WEIGHT', '4')
    from helpers.swift_plugin import AgentFabricLossScale
    scale = AgentFabricLossScale()
    assert scale.get_loss_scale(text) == ([first, text[len(first):]], [4.0, 1.0])
    parts, weights = scale.get_loss_scale('Action: t\nAction Input: {}\n\nObservation: <result>x</result>\nAnswer:' + text)
    assert list(zip(parts, weights))[0] == ('Action:', 4.0) and (first, 4.0) in zip(parts, weights)


@pytest.mark.parametrize('model_key', ['smollm2-135m', 'tiny-qwen2'])
def test_with_the_tokenizer_weights_go_to_the_tokens_of_the_whole_text(monkeypatch, model_key):
    """The first token of each output decides; name and arguments weigh AFT_ARGS_WEIGHT; the inserted
    observation weighs 0; and the token ids are those of the whole text."""
    monkeypatch.setenv('AFT_DECISION_WEIGHT', '4')
    monkeypatch.setenv('AFT_ARGS_WEIGHT', '3')
    from helpers.swift_plugin import AgentFabricLossScale
    from transformers import AutoTokenizer
    scale = AgentFabricLossScale()
    scale.tokenizer = tok = AutoTokenizer.from_pretrained(str(prepare_model(model_key)))
    for answer in ('Sorry, I cannot order food.', '不客气，有需要随时找我。', '  “Runaway” is a song.'):
        text = ('Action: get_weather\nAction Input: {"city": "北京 Chaoyang"}\n'
                '\nObservation: <result>{"t": 21}</result>\nAnswer:' + answer)
        groups, weights = scale.get_loss_scale(text)
        ids = [i for g in groups for i in g]
        assert ids == tok(text, add_special_tokens=False)['input_ids']
        per_token = [w for g, w in zip(groups, weights) for _ in g]
        decided = [tok.decode(i) for i, w in zip(ids, per_token) if w == 4.0]
        assert decided[0] == 'Action' and answer.strip().startswith(decided[1].strip())
        assert len(decided) == 2 or all(len(d.encode()) < 4 for d in decided[1:])  # a CJK character's bytes
        args = tok.decode([i for i, w in zip(ids, per_token) if w == 3.0])
        assert args.rstrip('\n') == ' get_weather {"city": "北京 Chaoyang"}'  # Qwen joins '"}\n\n' in one token
        assert '21' not in tok.decode([i for i, w in zip(ids, per_token) if w > 0])


@pytest.mark.parametrize('args, ends', [
    (' {"a": 1, "b": "x"}', [',', '}']),
    (' {"q": "say \\"hi\\", ok}", "n": [1, 2], "o": {"p": 1, "r": 2}}', [',', ',', '}']),  # inside strings/lists
    (' {}', ['}']), (' {"a": 1', []), (' not json, really}', []), (' {"a": 1} trailing', ['}'])])
def test_arg_end_weight_weighs_the_comma_or_brace_after_each_top_level_value(monkeypatch, args, ends):
    monkeypatch.setenv('AFT_ARGS_WEIGHT', '2')
    monkeypatch.setenv('AFT_ARG_END_WEIGHT', '5')
    from helpers.swift_plugin import AgentFabricLossScale
    parts, weights = AgentFabricLossScale().get_loss_scale(f'Action: t\nAction Input:{args}\n')
    assert ''.join(parts) == f'Action: t\nAction Input:{args}\n'
    assert [p for p, w in zip(parts, weights) if w == 5.0] == ends
    assert ''.join(p for p, w in zip(parts, weights) if w in (2.0, 5.0)) == ' t' + args  # name and arguments


def test_the_sample_view_shows_the_runs_own_loss_weights(monkeypatch):
    from helpers.models import MODELS
    from helpers.synth import Generator, SynthConfig, training_rows
    from helpers.training import encoded_sample
    monkeypatch.delenv('AFT_ARG_END_WEIGHT', raising=False)
    convs = Generator(SynthConfig(langs=('en',), p_no_call=0.0, p_multi_turn=0.0), seed=3).conversations('train', 3)
    row = next(r for r in training_rows(convs) if r['messages'][-1]['content'].startswith('Action:'))
    spec, path = MODELS['tiny-qwen2'], str(prepare_model('tiny-qwen2'))
    cfg = preset('cpu', cuda=False, args_weight=3.0, decision_weight=4.0, arg_end_weight=5.0)
    weights = {w for _, w in encoded_sample(row, path, spec.model_type, spec.template, loss_weights=cfg.loss_weights())}
    assert {3.0, 4.0, 5.0} <= weights
    assert 5.0 not in {w for _, w in encoded_sample(row, path, spec.model_type, spec.template)}  # plugin defaults
    assert 'AFT_ARG_END_WEIGHT' not in os.environ  # put back as it was


def test_loss_weights_reach_the_training_processes():
    cfg = preset('cpu', cuda=False, args_weight=3.0, decision_weight=4.0, arg_end_weight=4.0)
    assert cfg.env()['AFT_ARGS_WEIGHT'] == '3.0' and cfg.env()['AFT_DECISION_WEIGHT'] == '4.0'
    assert cfg.env()['AFT_ARG_END_WEIGHT'] == '4.0'
    assert 'AFT_DECISION_WEIGHT' not in preset('cpu', cuda=False, loss_scale='react').env()


def test_session_rows_train_the_history_through_swift(tiny_data):
    """Encoded by ms-swift itself: history calls and answers carry loss, inserted observations do not."""
    from helpers.models import MODELS
    from helpers.synth import Generator, SynthConfig, training_rows
    from helpers.training import encoded_sample
    convs = Generator(SynthConfig(langs=('en',), p_session=1.0), seed=4).conversations('train', 5)
    row = next(r for r in training_rows(convs, train_history=True) if r['meta']['turn'] >= 2
               and any('Observation: <result>' in m['content'] for m in r['messages'] if m['role'] == 'assistant'))
    spec = MODELS['tiny-qwen2']
    pieces = encoded_sample(row, str(prepare_model('tiny-qwen2')), spec.model_type, spec.template)
    trained = ''.join(t for t, w in pieces if w > 0)
    history_call = next(m['content'] for m in row['messages'][1:-1] if m['role'] == 'assistant' and 'Action:' in m['content'])
    assert history_call.split('\nObservation:')[0].strip() in trained
    assert '<result>' not in trained and row['messages'][-1]['content'].strip() in trained


@pytest.mark.parametrize('model_key', ['smollm2-135m', 'tiny-qwen2'])
def test_our_loss_scale_never_changes_the_tokens(monkeypatch, model_key):
    """Encoded by ms-swift: every weight setting gives the token ids of ms-swift's plain loss (the end-of-turn
    token included: cut into pieces it would be trained as letters), and the last one ends the turn."""
    import helpers.swift_plugin  # noqa: F401  registers 'agentfabric'
    from helpers.models import MODELS
    from helpers.synth import Generator, SynthConfig, training_rows
    from swift.model import get_processor
    from swift.template import get_template
    spec, path = MODELS[model_key], str(prepare_model(model_key))
    proc = get_processor(path, model_type=spec.model_type)
    convs = Generator(SynthConfig(langs=('en', 'zh'), p_session=1.0, p_no_call=0.3), seed=5).conversations('train', 4)
    rows = training_rows(convs, train_history=True)
    assert {r['messages'][-1]['content'].startswith('Action:') for r in rows} == {True, False}

    def ids(loss_scale, row):
        tpl = get_template(proc, template_type=spec.template, loss_scale=loss_scale, max_length=8192)
        tpl.set_mode('train')
        return tpl.encode({'messages': row['messages']})['input_ids']
    for weight in ('1', '4'):
        monkeypatch.setenv('AFT_DECISION_WEIGHT', weight)
        monkeypatch.setenv('AFT_ARGS_WEIGHT', '2')
        monkeypatch.setenv('AFT_ARG_END_WEIGHT', weight)
        for row in rows:
            ours = ids('agentfabric', row)
            assert ours == ids('default', row), (weight, row['meta'])
            end = proc.convert_tokens_to_ids(proc.eos_token)
            assert end in ours[-2:]


def test_trained_outside_calls_counts_the_answers_only():
    from helpers.training import trained_outside_calls
    pieces = [('<|im_start|>user\nq<|im_end|>\n', 0.0), ('Action', 4.0), (':', 1.0), (' get', 2.0),
              ('\nAction Input:', 1.0), (' {"a": 1}', 2.0), ('\n', 1.0),
              ('\nObservation: <result>x</result>\nAnswer:', 0.0), ('It', 4.0), (' is 21.', 1.0)]
    assert trained_outside_calls(pieces) == len('\n') + len('It is 21.')
    assert trained_outside_calls([('Sure.', 0.0)]) == 0


def test_parameter_count_reads_safetensors_headers_and_disk_needed_follows_the_tuner():
    import torch
    from helpers.models import prepare_model
    from helpers.training import parameter_count
    from transformers import AutoModelForCausalLM
    model = prepare_model('tiny-qwen2')
    n = sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(str(model), dtype=torch.float32).parameters())
    assert parameter_count(model) == n
    full, lora = preset('cpu', cuda=False), preset('cpu', cuda=False, tuner='lora')
    assert full.disk_needed(10**8) == 12 * 10**8 * full.save_total_limit + 2**30  # weights + AdamW's two moments
    assert lora.disk_needed(10**8) - 2**30 < (full.disk_needed(10**8) - 2**30) / 5
    assert 'float32 under bf16 autocast' in preset('cpu', cuda=False, precision='bf16').trained_weights
    assert preset('cpu', cuda=False, precision='bf16', tuner='lora').trained_weights.startswith('LoRA r=16')


def test_freeze_ratio_keeps_the_lowest_weights_and_trains_the_rest(tmp_path, tiny_data):
    from safetensors.torch import load_file
    with pytest.raises(ValueError, match='freeze_ratio'):
        preset('cpu', cuda=False, tuner='lora', freeze_ratio=0.4)
    with pytest.raises(ValueError, match='freeze_ratio'):
        preset('cpu', cuda=False, freeze_ratio=1.0)
    # the tiny model's embeddings are 98.5% of its weights: 0.993 freezes them, layer 0 and layer 1's q_proj
    cfg = _tiny(tmp_path, tiny_data, max_steps=2, save_steps=2, eval_steps=100, freeze_ratio=0.993)
    assert 'lowest 99% of them frozen' in cfg.trained_weights
    run_training(cfg, tmp_path / 'train.log')
    base = load_file(str(prepare_model('tiny-qwen2') / 'model.safetensors'))
    tuned = load_file(str(last_checkpoint(tmp_path / 'out') / 'model.safetensors'))
    layers = sorted({int(k.split('.')[2]) for k in base if k.startswith('model.layers.')})
    same = {k for k in base if k in tuned and base[k].equal(tuned[k].to(base[k].dtype))}
    assert 'model.embed_tokens.weight' in same and f'model.layers.{layers[0]}.mlp.up_proj.weight' in same
    assert f'model.layers.{layers[-1]}.mlp.up_proj.weight' not in same  # the top layers did train
