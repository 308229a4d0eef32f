"""Training: build the ``swift sft`` command from a preset, run it with live progress, summarise the run.

Presets are named hyper-parameter sets. ``original-guide`` is the recipe of the AgentFabric guide, field by
field (Qwen-7B-Chat, LoRA r=8 α=32 dropout 0.05 on all linear layers, lr 5e-5 with a linear schedule,
2 epochs, max_length 1500, batch 2 with an effective batch of 64, ms_bench mixed in at 2:1, 3,000
self-cognition samples); ``tiny``, ``cpu`` and ``gpu`` are tuned for their profiles. :class:`TrainConfig` turns one into the exact command (and environment for several
GPUs or nodes), which the notebook prints so it can be copied to a shell. :func:`run_training` streams
the log to disk and to a progress bar, resumes from the last checkpoint, and fails with the log tail.
"""
from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

from .environment import child_env, repo_root

PLUGIN = Path(__file__).resolve().with_name('swift_plugin.py')
REWARDS = Path(__file__).resolve().with_name('swift_rewards.py')  # GRPO's reward: the judge
SELF_COGNITION = 'swift/self-cognition'  # ms-swift's self-cognition dataset on ModelScope


class TrainingError(RuntimeError):
    """Training failed: the reason and the tail of its log."""


STAGES = ('sft', 'dpo', 'grpo')


@dataclass
class TrainConfig:
    """Everything ``swift sft`` (or, for a preference stage, ``swift rlhf``) is told; defaults are the cpu
    profile's."""
    stage: str = 'sft'  # sft: `swift sft`; dpo | grpo: `swift rlhf --rlhf_type <stage>` from a fine-tuned model (06)
    model: str = ''
    model_type: str | None = None
    template: str | None = None
    train_file: str = ''
    val_file: str | None = None
    output_dir: str = ''
    tuner: str = 'lora'  # lora | full
    lora_rank: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    target_modules: str = 'all-linear'
    learning_rate: float = 3e-4
    num_train_epochs: float = 1.0
    max_steps: int = -1
    max_length: int = 1024
    batch_size: int = 1
    global_batch_size: int = 2  # effective batch: kept constant when the number of processes changes
    warmup_ratio: float = 0.05
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    lr_scheduler: str = 'cosine'
    eval_steps: int = 50
    save_steps: int = 50
    save_total_limit: int = 2
    logging_steps: int = 5
    seed: int = 42
    loss_scale: str = 'agentfabric'  # ours (see swift_plugin.py) or any ms-swift loss scale, e.g. 'default'
    args_weight: float = 2.0  # --loss_scale agentfabric: weight of the tool name and the argument JSON
    decision_weight: float = 1.0  # --loss_scale agentfabric: weight of each output's first token (call or answer)
    arg_end_weight: float = 1.0  # --loss_scale agentfabric: weight of the ',' or '}' after each argument value
    gradient_checkpointing: bool = False
    precision: str = 'auto'  # bf16 | fp32 | auto (GPU: ms-swift decides from the model and the GPU); see preset()
    attn_impl: str | None = None  # None: the model's default (sdpa, the fastest measured on CPU too)
    # LoRA weights' dtype: 'auto' = the weights' precision on a CPU (peft's fp32 adapters cost a bf16 <-> fp32
    # copy of every adapter's input and output: about 40% of a step), peft's fp32 on a GPU; or float32 | bfloat16
    lora_dtype: str = 'auto'
    # Weights the optimizer updates, with bf16: 'auto' = bf16 for LoRA (the adapters are small, the base frozen),
    # float32 for a full fine-tune (AdamW's steps of ~lr are below half a bf16 step of most weights and round
    # away); float32 means bf16 autocast over float32 weights
    master_weights: str = 'auto'
    # A full fine-tune: the share of the weights, from the embeddings up, that stay frozen (ms-swift's
    # --freeze_parameters_ratio: whole tensors in the model's order while their sum stays within the share).
    # Backpropagation stops at the lowest trained layer, so a step costs less.
    freeze_ratio: float = 0.0
    general_dataset: str | None = None  # e.g. 'iic/ms_bench' (only when the hub is reachable)
    general_mix_ratio: float = 0.0  # general samples per training sample
    self_cognition: int = 0  # samples of swift/self-cognition (who the model says it is), needs the hub
    model_name: str | None = None  # self-cognition: the name the model gives itself
    model_author: str | None = None  # self-cognition: its author
    deepspeed: str | None = None  # None | 'zero2' | 'zero3'
    nproc_per_node: int = 1
    nnodes: int = 1
    node_rank: int = 0
    master_addr: str = '127.0.0.1'
    master_port: int = 29500
    cuda_visible_devices: str | None = None
    use_cpu: bool = False
    keep_steps: tuple[int, ...] = ()  # also keep the model as it was after these steps, in <output_dir>/step-<N>
    beta: float = 0.1  # dpo, grpo: how far the trained model may move from the reference (0: no reference model)
    rpo_alpha: float | None = None  # dpo: weight of an SFT loss on the chosen reply, added to the DPO loss
    num_generations: int = 4  # grpo: replies sampled per prompt (a group, whose rewards are compared)
    max_completion_length: int = 96  # grpo: new tokens per sampled reply
    temperature: float = 0.9  # grpo: sampling temperature of the replies
    extra_args: list[str] = field(default_factory=list)

    def __post_init__(self):
        if self.stage not in STAGES:
            raise ValueError(f'stage {self.stage!r}: choose one of {", ".join(STAGES)}')
        if self.lora_dtype not in ('auto', 'float32', 'bfloat16', 'float16'):
            raise ValueError(f'lora_dtype {self.lora_dtype!r}: choose auto, float32, bfloat16 or float16')
        if self.master_weights not in ('auto', 'float32', 'bfloat16'):
            raise ValueError(f'master_weights {self.master_weights!r}: choose auto, float32 or bfloat16')
        if not 0 <= self.freeze_ratio < 1 or (self.freeze_ratio and self.tuner != 'full'):
            raise ValueError(f'freeze_ratio {self.freeze_ratio!r}: a share from 0 up to (not including) 1, for '
                             "tuner='full' only (LoRA freezes every original weight already)")

    @property
    def lora_weights_dtype(self) -> str:
        """The dtype the LoRA weights train in ('auto' left by preset(): peft's own fp32)."""
        return 'float32' if self.lora_dtype == 'auto' else self.lora_dtype

    @property
    def bf16_weights_dtype(self) -> str:
        """The dtype of the weights when training in bf16 ('auto' resolved by the tuner)."""
        if self.master_weights != 'auto':
            return self.master_weights
        return 'float32' if self.tuner == 'full' else 'bfloat16'

    @property
    def trained_weights(self) -> str:
        """What the optimizer updates and in which dtype, in words (notebook 02 prints it)."""
        if self.tuner == 'lora':
            return (f'LoRA r={self.lora_rank} alpha={self.lora_alpha} on {self.target_modules}, adapters in '
                    f'{self.lora_weights_dtype}, dropout {self.lora_dropout}')
        frozen = f', the lowest {self.freeze_ratio:.0%} of them frozen' if self.freeze_ratio else ''
        if self.precision == 'bf16':
            dtype = self.bf16_weights_dtype + (' under bf16 autocast' if self.bf16_weights_dtype == 'float32' else '')
        else:
            dtype = 'float32' if self.precision == 'fp32' else "the dtype ms-swift picks for the GPU"
        return f'every weight ({self.tuner} fine-tune) in {dtype}{frozen}'

    def disk_needed(self, n_params: int) -> int:
        """Bytes of disk the ``save_total_limit`` checkpoints may fill, plus 1 GiB of slack. A full fine-tune's
        checkpoint holds float32 weights and AdamW's two float32 moments (12 bytes a parameter); a LoRA
        checkpoint, an adapter of a few MB (bounded here by 2 bytes a parameter)."""
        return (12 if self.tuner == 'full' else 2) * n_params * self.save_total_limit + 2**30

    @property
    def world_size(self) -> int:
        return self.nproc_per_node * self.nnodes

    @property
    def gradient_accumulation_steps(self) -> int:
        per_step = self.batch_size * self.world_size
        if self.global_batch_size % per_step:
            raise ValueError(f'global_batch_size {self.global_batch_size} is not a multiple of batch_size × '
                             f'processes = {self.batch_size} × {self.world_size}')
        return max(1, self.global_batch_size // per_step)

    def effective_batch(self) -> str:
        return (f'{self.batch_size} per device × {self.gradient_accumulation_steps} accumulation × '
                f'{self.world_size} processes = {self.batch_size * self.gradient_accumulation_steps * self.world_size}')

    def datasets(self, n_train: int | None = None) -> list[str]:
        ds = [self.train_file]
        if self.general_dataset and self.general_mix_ratio > 0 and n_train:
            ds.append(f'{self.general_dataset}#{int(n_train * self.general_mix_ratio)}')
        if self.self_cognition > 0:
            ds.append(f'{SELF_COGNITION}#{self.self_cognition}')
        return ds

    def drop_hub_data(self) -> list[str]:
        """Leave out the datasets that only ModelScope serves (offline); returns what was left out."""
        dropped = [d.split('#')[0] for d in self.datasets(n_train=1)[1:]]
        self.general_dataset, self.general_mix_ratio, self.self_cognition = None, 0.0, 0
        return dropped

    def args(self, n_train: int | None = None, resume_from: str | None = None) -> list[str]:
        a = ['--model', self.model]
        if self.model_type:
            a += ['--model_type', self.model_type]
        if self.template:
            a += ['--template', self.template]
        a += ['--dataset', *self.datasets(n_train)]
        if self.val_file:
            a += ['--val_dataset', self.val_file, '--split_dataset_ratio', '0']
        else:
            a += ['--split_dataset_ratio', '0']
        a += ['--tuner_type', self.tuner]
        if self.freeze_ratio:
            a += ['--freeze_parameters_ratio', str(self.freeze_ratio)]
        if self.tuner == 'lora':
            a += ['--lora_rank', str(self.lora_rank), '--lora_alpha', str(self.lora_alpha),
                  '--lora_dropout', str(self.lora_dropout), '--target_modules', self.target_modules]
        a += ['--learning_rate', str(self.learning_rate), '--num_train_epochs', str(self.num_train_epochs),
              '--max_steps', str(self.max_steps), '--max_length', str(self.max_length),
              '--truncation_strategy', 'delete',
              '--per_device_train_batch_size', str(self.batch_size), '--per_device_eval_batch_size', str(self.batch_size),
              '--gradient_accumulation_steps', str(self.gradient_accumulation_steps),
              '--warmup_ratio', str(self.warmup_ratio), '--weight_decay', str(self.weight_decay),
              '--max_grad_norm', str(self.max_grad_norm), '--lr_scheduler_type', self.lr_scheduler,
              '--eval_steps', str(self.eval_steps), '--save_steps', str(self.save_steps),
              '--save_total_limit', str(self.save_total_limit), '--logging_steps', str(self.logging_steps),
              '--seed', str(self.seed), '--data_seed', str(self.seed),
              '--gradient_checkpointing', str(self.gradient_checkpointing).lower(),
              '--loss_scale', self.loss_scale,
              '--external_plugins', str(PLUGIN), *([str(REWARDS)] if self.stage == 'grpo' else []),
              '--callbacks', 'aft_rank_checksum',
              *(['aft_keep_steps'] if self.keep_steps else []),
              '--output_dir', self.output_dir, '--add_version', 'false', '--check_model', 'false',
              '--dataloader_num_workers', '0', '--report_to', 'none', '--save_only_model', 'false']
        if self.precision == 'bf16' and self.bf16_weights_dtype == 'float32':  # bf16 autocast, float32 weights
            a += ['--torch_dtype', 'float32', '--bf16', 'true', '--fp16', 'false']
        elif self.precision == 'bf16':  # bf16 weights and autocast (ms-swift sets bf16=True for this dtype)
            a += ['--torch_dtype', 'bfloat16']
        elif self.precision == 'fp32':  # ms-swift would switch fp16 on for float32 weights: say no explicitly
            a += ['--torch_dtype', 'float32', '--fp16', 'false', '--bf16', 'false']
        if self.attn_impl:
            a += ['--attn_impl', self.attn_impl]
        if self.tuner == 'lora' and self.lora_dtype != 'auto':
            a += ['--lora_dtype', self.lora_dtype]
        if self.self_cognition > 0:
            for flag, value in (('--model_name', self.model_name), ('--model_author', self.model_author)):
                a += [flag, value] if value else []
        if self.deepspeed:
            a += ['--deepspeed', self.deepspeed]
        if self.use_cpu:  # needed for bf16 on a CPU; gloo only for several processes
            a += ['--use_cpu', 'true'] + (['--ddp_backend', 'gloo'] if self.world_size > 1 else [])
        if self.stage == 'dpo':
            a += ['--beta', str(self.beta)] + (['--rpo_alpha', str(self.rpo_alpha)] if self.rpo_alpha else [])
        if self.stage == 'grpo':  # rewards from our judge; rollouts by transformers in the training process
            a += ['--beta', str(self.beta), '--reward_funcs', 'aft_judge', '--num_generations', str(self.num_generations),
                  '--max_completion_length', str(self.max_completion_length), '--temperature', str(self.temperature)]
        if resume_from:
            a += ['--resume_from_checkpoint', resume_from]
        return a + list(self.extra_args)

    @property
    def subcommand(self) -> list[str]:
        """``sft``, or ``rlhf --rlhf_type <stage>``."""
        return ['sft'] if self.stage == 'sft' else ['rlhf', '--rlhf_type', self.stage]

    def env(self) -> dict[str, str]:
        """Launcher variables: ms-swift starts torchrun itself when NPROC_PER_NODE is set."""
        e = {}
        if self.world_size > 1:
            e['NPROC_PER_NODE'] = str(self.nproc_per_node)
            e['MASTER_PORT'] = str(self.master_port)
        if self.nnodes > 1:
            e.update(NNODES=str(self.nnodes), NODE_RANK=str(self.node_rank), MASTER_ADDR=self.master_addr)
        if self.cuda_visible_devices is not None:
            e['CUDA_VISIBLE_DEVICES'] = self.cuda_visible_devices
        e.update(self.loss_weights())
        if self.keep_steps:
            e['AFT_KEEP_STEPS'] = ','.join(map(str, self.keep_steps))
        return e

    def loss_weights(self) -> dict[str, str]:
        """The variables swift_plugin.py reads its weights from, in every training process (none for
        ms-swift's own loss scales)."""
        if self.loss_scale != 'agentfabric':
            return {}
        return dict(AFT_ARGS_WEIGHT=str(self.args_weight), AFT_DECISION_WEIGHT=str(self.decision_weight),
                    AFT_ARG_END_WEIGHT=str(self.arg_end_weight))

    def command(self, n_train: int | None = None, resume_from: str | None = None) -> list[str]:
        return [swift_executable(), *self.subcommand, *self.args(n_train, resume_from)]

    def shell(self, n_train: int | None = None) -> str:
        """The command as a copyable shell snippet (environment first, one option per line)."""
        env = ' '.join(f'{k}={shlex.quote(v)}' for k, v in self.env().items())
        args = self.args(n_train)
        lines, i = [], 0
        while i < len(args):
            j = i + 1
            while j < len(args) and not args[j].startswith('--'):
                j += 1
            lines.append(' '.join(shlex.quote(x) for x in args[i:j]))
            i = j
        head = (env + ' ' if env else '') + 'swift ' + ' '.join(self.subcommand)
        return ' \\\n    '.join([head, *lines])


def swift_executable() -> str:
    """The ``swift`` CLI of the running Python environment."""
    local = Path(sys.executable).with_name('swift')
    return str(local) if local.exists() else (shutil.which('swift') or 'swift')


PRESETS: dict[str, dict] = {
    # The recipe of the AgentFabric guide, flag by flag (tests/test_training.py holds its command):
    # accumulation 32/GPUs with batch 2 = an effective batch of 64; ms-swift 1.7's defaults where it sets
    # nothing (linear schedule, ms_bench as the mix-in data, plain loss).
    'original-guide': dict(tuner='lora', lora_rank=8, lora_alpha=32, lora_dropout=0.05, target_modules='all-linear',
                           learning_rate=5e-5, lr_scheduler='linear', num_train_epochs=2, max_length=1500,
                           batch_size=2, global_batch_size=64, warmup_ratio=0.03, weight_decay=0.1,
                           max_grad_norm=0.5, eval_steps=100, save_steps=100, save_total_limit=2, logging_steps=10,
                           general_dataset='iic/ms_bench', general_mix_ratio=2.0, self_cognition=3000,
                           model_name='卡卡罗特', model_author='陶白白', gradient_checkpointing=True,
                           loss_scale='default'),
    # Random weights cannot learn through LoRA: train them fully, briefly, to exercise every step.
    'tiny': dict(tuner='full', learning_rate=1e-3, num_train_epochs=1, max_steps=12, max_length=2048, batch_size=1,
                 global_batch_size=2, eval_steps=6, save_steps=6, logging_steps=2, warmup_ratio=0.0),
    # SmolLM2-135M on 2 CPU cores: a full fine-tune (a step costs 15-35 % more than a rank-16 LoRA step, and from
    # the same steps it learned more: lower validation loss, more right tools in Chinese, the guide's call exact), its
    # weights in float32 under bf16 autocast (`master_weights`), lr 2e-4, batch 1 without gradient
    # checkpointing, one epoch, the first token of each reply weighted 4 (fewer call loops), and the ',' or '}'
    # after each argument value weighted 4 (the token that adds an optional parameter or ends the call: fewer
    # invalid Action Inputs in four trainings of four; its gain in exact arguments was within the spread between
    # trainings). The LoRA fields apply to `tuner='lora'`
    # overrides (no dropout: its random masks took a quarter of a bf16 step). Each choice measured:
    # `python -m helpers ablate`, `make bench`.
    'cpu': dict(tuner='full', learning_rate=2e-4, lora_rank=16, lora_alpha=32, lora_dropout=0.0,
                num_train_epochs=1, max_length=2048, batch_size=1, global_batch_size=2, warmup_ratio=0.05,
                eval_steps=45, save_steps=45, logging_steps=5, decision_weight=4.0, arg_end_weight=4.0),
    # Qwen2.5-7B-Instruct on one or more GPUs.
    'gpu': dict(tuner='lora', lora_rank=16, lora_alpha=32, lora_dropout=0.05, learning_rate=1e-4,
                num_train_epochs=2, max_length=2048, batch_size=2, global_batch_size=32, warmup_ratio=0.03,
                eval_steps=100, save_steps=100, logging_steps=10, gradient_checkpointing=True,
                general_dataset='iic/ms_bench', general_mix_ratio=0.5),
    # Preference stage (notebook 06, `swift rlhf --rlhf_type dpo`) from the model notebook 02 fine-tuned: only the
    # last reply of a pair trains (ms-swift's last_round), the reference model is the starting one.
    'tiny-dpo': dict(stage='dpo', tuner='full', learning_rate=1e-4, num_train_epochs=1, max_steps=4, max_length=2048,
                     batch_size=1, global_batch_size=2, warmup_ratio=0.0, eval_steps=2, save_steps=2, logging_steps=1,
                     loss_scale='last_round'),
    'cpu-dpo': dict(stage='dpo', tuner='full', learning_rate=2e-5, beta=0.1, rpo_alpha=1.0, num_train_epochs=1,
                    max_length=2048, batch_size=1, global_batch_size=4, warmup_ratio=0.1, eval_steps=1000,
                    save_steps=1000, save_total_limit=1, logging_steps=1, loss_scale='last_round'),
    # GRPO, the reinforcement-learning alternative (an ablation arm): groups of 4 replies per training turn, reward 1
    # for what the judge calls right (aft_judge, helpers/swift_rewards.py), no reference model (beta 0).
    'tiny-grpo': dict(stage='grpo', tuner='full', learning_rate=1e-4, beta=0.0, max_steps=2, max_length=2048,
                      batch_size=2, global_batch_size=2, num_generations=2, max_completion_length=16, warmup_ratio=0.0,
                      eval_steps=1000, save_steps=1000, logging_steps=1, loss_scale='default'),
    'cpu-grpo': dict(stage='grpo', tuner='full', learning_rate=1e-5, beta=0.0, max_length=2048, batch_size=4,
                     global_batch_size=4, num_generations=4, max_completion_length=96, temperature=0.9,
                     warmup_ratio=0.0, eval_steps=1000, save_steps=1000, save_total_limit=1, logging_steps=1,
                     loss_scale='default'),
    'gpu-dpo': dict(stage='dpo', tuner='lora', lora_rank=16, lora_alpha=32, lora_dropout=0.05, learning_rate=5e-6,
                    beta=0.1, rpo_alpha=1.0, num_train_epochs=1, max_length=2048, batch_size=1, global_batch_size=16,
                    warmup_ratio=0.1, eval_steps=50, save_steps=50, logging_steps=5, gradient_checkpointing=True,
                    loss_scale='last_round'),
}


def preset(name: str, cuda: bool | None = None, **overrides) -> TrainConfig:
    """A preset with ``overrides``, its precision resolved for this machine (``cuda``: None detects it).

    Without a GPU, training says ``--use_cpu true`` (ms-swift refuses bf16 on a CPU otherwise), trains in
    bf16 where the CPU has bf16 matrix instructions, and then keeps the LoRA weights in bf16 too
    (``lora_dtype`` 'auto'; ``make bench`` compares the settings).
    """
    from .environment import detect_hardware, resolve_precision
    if name not in PRESETS:
        raise ValueError(f'unknown preset {name!r}: choose one of {", ".join(PRESETS)}')
    unknown = set(overrides) - set(TrainConfig.__dataclass_fields__)
    if unknown:
        raise ValueError(f'unknown training options {sorted(unknown)}')
    cfg = TrainConfig(**{**PRESETS[name], **overrides})
    cuda = detect_hardware().cuda if cuda is None else cuda
    cfg.precision = resolve_precision(cfg.precision, cuda)
    if not cuda:
        cfg.use_cpu = True
        if cfg.precision == 'bf16' and cfg.lora_dtype == 'auto':
            cfg.lora_dtype = 'bfloat16'
    return cfg


def parameter_count(model_dir: str | Path) -> int:
    """Parameters of a model folder, from its safetensors headers (shapes only, no weights read); a folder
    without safetensors counts as 2 bytes a parameter of its size."""
    import math
    import struct
    files = list(Path(model_dir).glob('*.safetensors'))
    if not files:
        from .environment import folder_size
        return folder_size(model_dir) // 2
    n = 0
    for f in files:
        with open(f, 'rb') as fh:
            header = json.loads(fh.read(struct.unpack('<Q', fh.read(8))[0]))
        n += sum(math.prod(t['shape']) for k, t in header.items() if k != '__metadata__')
    return n


def checkpoints(output_dir: str | Path) -> list[Path]:
    """The complete checkpoints (those with a trainer_state.json) in ``output_dir``, oldest first."""
    ckpts = [p for p in Path(output_dir).glob('checkpoint-*')
             if p.name.split('-')[-1].isdigit() and (p / 'trainer_state.json').exists()]
    return sorted(ckpts, key=lambda p: int(p.name.split('-')[-1]))


def last_checkpoint(output_dir: str | Path) -> Path | None:
    """The newest complete checkpoint in ``output_dir``."""
    ckpts = checkpoints(output_dir)
    return ckpts[-1] if ckpts else None


class _NewRows:
    """Rows ms-swift appends to ``logging.jsonl`` (one per logging or evaluation step), read as they come:
    each call returns the complete lines written since the last one."""

    def __init__(self, path: Path):
        self.path = path
        self.offset = path.stat().st_size if path.exists() else 0  # a resumed run: only what comes next
        self.partial = ''

    def __call__(self) -> list[dict]:
        try:
            with open(self.path, encoding='utf-8') as f:
                f.seek(self.offset)
                text = f.read()
                self.offset = f.tell()
        except FileNotFoundError:
            return []
        *lines, self.partial = (self.partial + text).split('\n')
        rows = []
        for line in lines:
            try:
                rows.append(json.loads(line))
            except ValueError:
                continue
        return rows


@dataclass
class TrainResult:
    output_dir: str
    command: str
    wall_seconds: float
    exit_code: int
    last_checkpoint: str | None
    best_checkpoint: str | None
    peak_rss_gib: float
    log: str
    resumed_from: str | None = None
    skipped: bool = False


def _tree_rss(pid: int) -> int:
    import psutil
    try:
        p = psutil.Process(pid)
        return sum(c.memory_info().rss for c in [p, *p.children(recursive=True)])
    except psutil.Error:
        return 0


def log_tail(path: str | Path, n: int = 40) -> str:
    try:
        lines = Path(path).read_text(errors='replace').splitlines()
    except OSError:
        return '(no log)'
    return '\n'.join(lines[-n:])


def run_training(cfg: TrainConfig, log_path: str | Path, n_train: int | None = None, resume: bool = True,
                 force: bool = False, on_progress: Callable[[int, int, float | None], None] | None = None
                 ) -> TrainResult:
    """Run ``swift sft``; its console output goes to ``log_path`` line by line (it survives a lost kernel).

    A finished run (``train_done.json`` in the output dir) is not repeated unless ``force``; an
    interrupted one resumes from its last checkpoint. ``on_progress(step, max_steps, loss)`` is called
    for every row ms-swift appends to ``logging.jsonl`` (the last training loss so far, None before the
    first). A non-zero exit raises :class:`TrainingError` with the reason and the log tail.
    """
    out = Path(cfg.output_dir)
    done = out / 'train_done.json'
    if done.exists() and not force:
        return replace(TrainResult(**json.loads(done.read_text())), skipped=True)
    if force and out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    resume_from = str(last_checkpoint(out)) if resume and last_checkpoint(out) else None
    cmd = cfg.command(n_train, resume_from)
    env = child_env(**cfg.env(), TQDM_MININTERVAL='5')
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    start = time.time()
    peak = [0]
    with open(log_path, 'a', encoding='utf-8') as log:
        log.write(f'$ {shlex.join(cmd)}\n')
        log.flush()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                                env=env, cwd=str(repo_root()), start_new_session=True)
        stop = threading.Event()

        def watch():
            while not stop.wait(1.0):
                peak[0] = max(peak[0], _tree_rss(proc.pid))

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        new_rows, loss = _NewRows(out / 'logging.jsonl'), None

        def progress():
            nonlocal loss
            for row in new_rows():
                step, _, total = str(row.get('global_step/max_steps', '')).partition('/')
                loss = float(row['loss']) if 'loss' in row else loss
                if on_progress and step.isdigit() and total.isdigit():
                    on_progress(int(step), int(total), loss)
        try:
            for line in proc.stdout:  # ms-swift prints a line whenever it appends a row to logging.jsonl
                log.write(line)
                log.flush()
                progress()
            code = proc.wait()
            progress()
        except BaseException:  # KeyboardInterrupt in a notebook: stop the whole process group
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
            raise
        finally:
            stop.set()
            watcher.join(timeout=2)
    wall = time.time() - start
    if code != 0:
        raise TrainingError(f'swift {" ".join(cfg.subcommand)} exited with code {code} after {wall:.0f} s. Log: {log_path}\n'
                            f'--- last lines ---\n{log_tail(log_path)}')
    last = last_checkpoint(out)
    best = None
    if last:
        state = json.loads((last / 'trainer_state.json').read_text())
        best = state.get('best_model_checkpoint') or str(last)
    result = TrainResult(output_dir=str(out), command=shlex.join(cmd), wall_seconds=round(wall, 1), exit_code=code,
                         last_checkpoint=str(last) if last else None, best_checkpoint=best,
                         peak_rss_gib=round(peak[0] / 2**30, 2), log=str(log_path), resumed_from=resume_from)
    done.write_text(json.dumps(asdict(result), indent=2))
    return result


def read_log_history(output_dir: str | Path) -> list[dict]:
    """ms-swift's ``logging.jsonl``: one dict per logging/eval step (numbers as floats)."""
    path = Path(output_dir) / 'logging.jsonl'
    rows = []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except ValueError:
                continue
    return rows


def steps_done(history: list[dict]) -> int:
    """Optimizer steps a run finished, from its :func:`read_log_history` (the last row, not the last logged loss)."""
    progress = [r['global_step/max_steps'] for r in history if 'global_step/max_steps' in r]
    return int(str(progress[-1]).split('/')[0]) if progress else 0


def run_summary(cfg: TrainConfig, result: TrainResult, n_train_samples: int, mean_tokens: float) -> dict:
    """Command, wall time, throughput, peak memory, final losses: the ``run_summary.json`` of a run."""
    history = read_log_history(result.output_dir)
    train = [r for r in history if 'loss' in r]
    evals = [r for r in history if 'eval_loss' in r]
    final = next((r for r in reversed(history) if 'train_runtime' in r), {})
    steps = steps_done(history)
    samples_seen = steps * cfg.batch_size * cfg.gradient_accumulation_steps * cfg.world_size
    runtime = float(final.get('train_runtime') or result.wall_seconds or 1)
    gpu_mem = [float(str(r.get('memory(GiB)', 0)).rstrip('GiB') or 0) for r in train]
    return {
        'command': result.command, 'shell': cfg.shell(n_train_samples), 'effective_batch': cfg.effective_batch(),
        'wall_seconds': result.wall_seconds, 'train_runtime_seconds': runtime, 'steps': steps,
        'train_samples': n_train_samples, 'samples_seen': samples_seen,
        'tokens_per_second': round(samples_seen * mean_tokens / runtime, 1) if runtime else None,
        'seconds_per_step': round(runtime / steps, 2) if steps else None,
        'peak_rss_gib': result.peak_rss_gib, 'peak_gpu_memory_gib': max(gpu_mem) if gpu_mem else None,
        'final_train_loss': train[-1]['loss'] if train else None,
        'final_token_acc': train[-1].get('token_acc') if train else None,
        'final_eval_loss': evals[-1]['eval_loss'] if evals else None,
        'final_eval_token_acc': evals[-1].get('eval_token_acc') if evals else None,
        'last_checkpoint': result.last_checkpoint, 'best_checkpoint': result.best_checkpoint,
        'resumed_from': result.resumed_from, 'config': asdict(cfg),
    }


def encoded_sample(row: dict, model_dir: str, model_type: str | None, template: str | None,
                   loss_scale: str = 'agentfabric', max_length: int = 4096,
                   loss_weights: dict[str, str] | None = None) -> list[tuple[str, float]]:
    """One training row encoded by ms-swift exactly as training will: (token text, loss weight) pairs.

    Weight 0 means the token is context only (prompt, observation, earlier turns); the rest is learned.
    ``loss_weights``: :meth:`TrainConfig.loss_weights` of the run (without it, the plugin's defaults).
    """
    import logging
    from unittest import mock
    from . import swift_plugin  # noqa: F401  (registers the 'agentfabric' loss scale in this process)
    from swift.model import get_processor
    from swift.template import get_template
    # keep ms-swift's loading chatter, and the deprecation notes transformers gives ms-swift, out of the notebook
    loggers = [logging.getLogger(name) for name in ('swift', 'transformers')]
    levels = [log.level for log in loggers]
    for log in loggers:
        log.setLevel(logging.ERROR)
    try:  # the loss scale reads its weights from the environment when the template creates it
        with mock.patch.dict(os.environ, loss_weights or {}):
            proc = get_processor(model_dir, model_type=model_type)
            tpl = get_template(proc, template_type=template, loss_scale=loss_scale, max_length=max_length)
            tpl.set_mode('train')
            enc = tpl.encode({'messages': row['messages']})
    finally:
        for log, level in zip(loggers, levels):
            log.setLevel(level)
    tok = getattr(proc, 'tokenizer', proc)
    weights = enc.get('loss_scale') or [1.0 if label != -100 else 0.0 for label in enc['labels']]
    groups: list[tuple[list[int], float]] = []  # decoded per group: a CJK character spans several byte tokens
    for token, label, w in zip(enc['input_ids'], enc['labels'], weights):
        w = 0.0 if label == -100 else float(w)
        if groups and groups[-1][1] == w:
            groups[-1][0].append(token)
        else:
            groups.append(([token], w))
    return [(tok.decode(ids), w) for ids, w in groups]


def trained_outside_calls(pieces: list[tuple[str, float]]) -> int:
    """Characters of an :func:`encoded_sample` that carry loss outside ``Action: … Action Input: …`` spans
    (the answers)."""
    from .swift_plugin import CALL  # what a call is, as the loss scale reads it
    text = ''.join(t for t, _ in pieces)
    trained = [w > 0 for t, w in pieces for _ in t]
    for m in CALL.finditer(text):
        trained[m.start():m.end()] = [False] * (m.end() - m.start())
    return sum(trained)
