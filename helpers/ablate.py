"""Recipe ablations: one change to a recipe per arm, each measured on the same held-out cases.

An :class:`Arm` changes the data plan (:class:`~helpers.synth.DataPlan` or its
:class:`~helpers.synth.SynthConfig`) and/or the training config (:class:`~helpers.training.TrainConfig`) of the
profile's recipe; the arms of :data:`ARMS` all start from the recipe the ablation was run against
(:data:`BEFORE_DATA`, :data:`BEFORE_TRAIN`), so their records stay true when the profile's recipe changes.
:func:`run_arm` generates the arm's training data, trains, merges, serves the merged model with the profile's
backend and runs the **same test cases** (those of a reference run) through RolePlay: the cases never change
between arms, so two arms' metrics compare directly (95% Wilson intervals). A finished arm is not repeated (its
``result.json``); predictions are cached like notebook 05's; :func:`from_run` takes an arm from a finished run.
An arm with a ``curve`` also evaluates the checkpoints it keeps every ``curve`` steps: what more training buys,
from one training (:func:`curve_markdown`).

``python -m helpers ablate --cases runs/<run>/data/test_cases.jsonl --arms decision-4,sessions`` runs arms and
prints the table of every finished arm; ``--list`` names the arms; ``--readme`` saves them to
``results/ablation.json`` and regenerates the table of ``docs/ablations.md`` from it. Each arm trains as long as
the profile's main model (minutes on the cpu profile): run them on an otherwise idle machine.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from .jsonl import write_json


@dataclass(frozen=True)
class Arm:
    """One recipe: the profile's, with ``data`` (DataPlan or SynthConfig fields, and ``seed``: the draw of
    :func:`~helpers.synth.write_splits`, 0 unless given) and ``train`` (TrainConfig fields) changed.
    ``curve``: keep a checkpoint every ``curve`` optimizer steps and evaluate each one too (a learning curve
    within one training); 0: only the trained model."""
    name: str
    why: str
    data: dict = field(default_factory=dict)
    train: dict = field(default_factory=dict)
    curve: int = 0


# The cpu recipe these arms were measured against (run 20261122-053615-cpu): each arm below is it with one
# change, whatever the profile's recipe has become since (so LoRA and its learning rate are spelled out).
# Today's recipe is ``fast-120-full-lr2-opt1-end4``.
BEFORE_DATA = {'p_no_call': 0.25, 'p_session': 0.5, 'session_turns': (3, 5), 'p_option_train': None}
BEFORE_TRAIN = {'tuner': 'lora', 'learning_rate': 1e-3, 'decision_weight': 1.0, 'arg_end_weight': 1.0,
                'lora_dropout': 0.05, 'lora_dtype': 'float32', 'attn_impl': 'eager'}
SESSIONS = {**BEFORE_DATA, 'p_session': 0.9, 'session_turns': (4, 6), 'p_no_call': 0.3}
DECISION = {**BEFORE_TRAIN, 'decision_weight': 4.0}
# The faster training of `make bench` (LoRA weights in bf16, no LoRA dropout, SDPA): 1.55x the tokens/s there
FAST = {**DECISION, 'lora_dropout': 0.0, 'lora_dtype': 'auto', 'attn_impl': None}
SESSIONS_120 = {**SESSIONS, 'n_train': 120}
OPT1 = {**SESSIONS_120, 'p_option_train': 0.1}  # option clauses on one training call turn in ten
FULL_LR2 = {**FAST, 'tuner': 'full', 'learning_rate': 2e-4}  # every weight trained, float32 under bf16 autocast
END4 = {**FULL_LR2, 'arg_end_weight': 4.0}  # today's recipe


def _arm(name: str, why: str, data: dict | None = None, train: dict | None = None, curve: int = 0) -> Arm:
    return Arm(name, why, {**BEFORE_DATA, **(data or {})}, {**BEFORE_TRAIN, **(train or {})}, curve)


ARMS: dict[str, Arm] = {a.name: a for a in [
    Arm('recipe', "the profile's recipe as it is today (or taken from a finished run with --reference)"),
    _arm('before', 'the cpu recipe before these ablations: half the conversations sessions of 3-5 queries, '
                   '25% no-call, no decision weight'),
    _arm('decision-4', 'before, with the first word of every output (call or answer) weighing 4 in the loss',
         train=DECISION),
    _arm('balanced', 'before, with 40% no-call conversations and every answer sample kept',
         data={'p_no_call': 0.4, 'answer_share': 1.0}),
    _arm('sessions', 'before, with nine in ten conversations sessions of 4-6 queries and 30% no-call (more '
                     'decisions per token)', data=SESSIONS),
    _arm('react-loss', "before, with ms-swift's built-in --loss_scale react instead of ours: whole calls weigh 2, "
                       'and the answers after Answer: in session history are not trained', train={'loss_scale': 'react'}),
    _arm('masked-30', 'before, with function masking: 30% of conversations with unfamiliar tool and parameter names',
         data={'p_masked': 0.3}),
    _arm('decision-sessions', 'decision-4 and sessions together (the recipe from f623094 until fast-120)',
         data=SESSIONS, train=DECISION),
    _arm('rank-64', 'decision-sessions with LoRA rank 64 (alpha 128): four times the adapter capacity',
         data=SESSIONS, train={**DECISION, 'lora_rank': 64, 'lora_alpha': 128}),
    _arm('decision-sessions-2ep', 'decision-sessions trained for two epochs (twice the time)',
         data=SESSIONS, train={**DECISION, 'num_train_epochs': 2}),
    _arm('fast', 'decision-sessions trained faster: LoRA weights in bf16, no LoRA dropout, SDPA attention',
         data=SESSIONS, train=FAST),
    _arm('fast-120', 'fast, with the time it saves spent on 120 training conversations instead of 80',
         data=SESSIONS_120, train=FAST),
    _arm('fast-120-nocall', 'fast-120 with 45% of queries needing no tool instead of 30% (fewer false calls?)',
         data={**SESSIONS_120, 'p_no_call': 0.45}, train=FAST),
    _arm('fast-120-lr2', 'fast-120 with twice the learning rate (2e-3): more learnt per step of a short run?',
         data=SESSIONS_120, train={**FAST, 'learning_rate': 2e-3}),
    _arm('fast-120-args4', 'fast-120 with the tool name and arguments weighing 4 instead of 2 (arguments exact?)',
         data=SESSIONS_120, train={**FAST, 'args_weight': 4.0}),
    _arm('fast-120-full', 'fast-120 as a full fine-tune (all 135M weights, float32 under bf16 autocast), '
                          'learning rate 1e-4: does the model learn more per step than through a rank-16 adapter?',
         data=SESSIONS_120, train={**FAST, 'tuner': 'full', 'learning_rate': 1e-4}),
    _arm('fast-120-full-lr05', 'fast-120-full with half its learning rate (5e-5): fewer repeated calls?',
         data=SESSIONS_120, train={**FAST, 'tuner': 'full', 'learning_rate': 5e-5}),
    _arm('fast-120-full-lr2', 'fast-120-full with twice its learning rate (2e-4): fewer repeated calls?',
         data=SESSIONS_120, train=FULL_LR2),
    _arm('fast-120-full-lr4', 'fast-120-full at four times its learning rate (4e-4): past the lowest validation loss?',
         data=SESSIONS_120, train={**FAST, 'tuner': 'full', 'learning_rate': 4e-4}),
    _arm('fast-120-full-lr2-opt1', 'fast-120-full-lr2 with an option clause on 10% of its training call turns '
         'instead of 30% (fewer optional parameters nobody asked for?)',
         data=OPT1, train=FULL_LR2),
    _arm('fast-120-full-lr2-opt2', 'fast-120-full-lr2 with an option clause on 20% of its training call turns: '
         'between 30% (optional parameters nobody asked for) and 10% (stated ones left out)',
         data={**SESSIONS_120, 'p_option_train': 0.2}, train=FULL_LR2),
    _arm('fast-150-full-lr2-opt1-freeze40', 'fast-120-full-lr2-opt1 with its lowest 40% of weights frozen '
         '(embeddings and 7 of 30 layers: a step costs ~20% less) and 150 conversations instead of 120',
         data={**OPT1, 'n_train': 150}, train={**FULL_LR2, 'freeze_ratio': 0.4}),
    _arm('fast-120-full-lr2-opt1-end4', 'fast-120-full-lr2-opt1 with the "," or "}" after each argument value '
         'weighing 4 in the loss (the token that adds an optional parameter or ends the call)',
         data=OPT1, train=END4),
    _arm('fast-150-full-lr2-opt1-end4-freeze40', 'fast-120-full-lr2-opt1-end4 with its lowest 40% of weights frozen '
         'and 150 conversations instead of 120 (the change of fast-150-full-lr2-opt1-freeze40 on the new recipe)',
         data={**OPT1, 'n_train': 150}, train={**END4, 'freeze_ratio': 0.4}),
    _arm('fast-120-full-lr2-end4', 'fast-120-full-lr2-opt1-end4 with option clauses on 30% of its training call '
         'turns again: with the argument-end weight, does the model read the query for them?',
         data=SESSIONS_120, train=END4),
    _arm('fast-120-full-lr3-opt1-end4', 'fast-120-full-lr2-opt1-end4 at a learning rate of 3e-4: the decisions '
         'of 4e-4 (fast-120-full-lr4) with the argument-end weight against its invalid Action Inputs?',
         data=OPT1, train={**END4, 'learning_rate': 3e-4}),
    _arm('fast-120-full-lr3-opt1-end4-seed1', 'fast-120-full-lr3-opt1-end4 with training seed 1: are its fewer '
         'false calls and loops more than the spread of one training?', data=OPT1,
         train={**END4, 'learning_rate': 3e-4, 'seed': 1}),
    _arm('fast-120-full-lr2-opt1-end4-seed1', 'fast-120-full-lr2-opt1-end4 with training seed 1 instead of 42 (the '
         'same data in another order): how far two trainings of one recipe differ, the noise every arm carries',
         data=OPT1, train={**END4, 'seed': 1}),
    _arm('fast-120-full-lr2-opt1-end4-seed2', 'fast-120-full-lr2-opt1-end4 with training seed 2: a third '
         'training of the recipe on the same data, for the spread', data=OPT1, train={**END4, 'seed': 2}),
    _arm('fast-120-full-lr2-opt1-end4-decision8', 'fast-120-full-lr2-opt1-end4 with the first token of each '
         'reply weighing 8 instead of 4: the fewer false calls and loops of a higher learning rate, without its cost '
         'to the arguments?', data=OPT1, train={**END4, 'decision_weight': 8.0}),
    _arm('fast-120-full-lr2-opt1-end4-data1', 'fast-120-full-lr2-opt1-end4 trained on other conversations drawn '
         'from the same plan (data seed 1 instead of 0): the noise of the data draw',
         data={**OPT1, 'seed': 1}, train=END4),
    _arm('fast-360-full-lr2-opt1-end4-curve', 'fast-120-full-lr2-opt1-end4 on three times the conversations (360, '
         '245 steps), a checkpoint evaluated every 85 steps: does accuracy still grow past the '
         "20-minute budget's 85 steps, or is the 135M model the limit?",
         data={**OPT1, 'n_train': 360}, train=END4, curve=85),
    _arm('fast-360-full-lr2-opt1-end4-curve-seed1', 'fast-360-full-lr2-opt1-end4-curve with training seed 1: '
         'does its curve hold in a second training?', data={**OPT1, 'n_train': 360}, train={**END4, 'seed': 1},
         curve=85),
    _arm('fast-120-bs1', 'fast-120 with one sample per optimizer step (164 steps of 1 instead of 82 of 2)',
         data=SESSIONS_120, train={**FAST, 'global_batch_size': 1}),
]}


def plan_for(arm: Arm, profile: str):
    """The profile's data plan with the arm's changes (unknown names raise; ``seed`` is not a plan field)."""
    from .synth import PROFILE_DATA, DataPlan, SynthConfig
    plan = PROFILE_DATA[profile]
    plan_fields, config_fields = set(DataPlan.__dataclass_fields__) - {'config'}, set(SynthConfig.__dataclass_fields__)
    unknown = set(arm.data) - plan_fields - config_fields - {'seed'}
    if unknown:
        raise ValueError(f'arm {arm.name}: unknown data options {sorted(unknown)}; choose among '
                         f'{sorted(plan_fields | config_fields | {"seed"})}')
    config = replace(plan.config, **{k: v for k, v in arm.data.items() if k in config_fields})
    return replace(plan, config=config, **{k: v for k, v in arm.data.items() if k in plan_fields})


def run_arm(arm: Arm, cases_path: str | Path, out_dir: str | Path, profile: str = 'cpu', backend: str = '',
            precision: str = 'auto', log=print) -> dict:
    """Train and evaluate one arm under ``out_dir/<arm>``; returns (and writes) its ``result.json``."""
    from . import environment as env, evaluation, models, serving, training
    from .agentfabric import load_cases
    from .synth import write_splits
    out = Path(out_dir) / arm.name
    done = out / 'result.json'
    if done.exists():
        return json.loads(done.read_text())
    cases = load_cases(cases_path)
    started, commit = time.time(), env.repo_commit()  # the code the arm trains with (the loss scale is code)
    plan = plan_for(arm, profile)
    data = write_splits(out / 'data', plan, seed=arm.data.get('seed', 0))
    spec = models.get_spec(models.PROFILE_MODEL[profile])
    cfg = training.preset(profile, precision=precision, **{
        'model': str(models.prepare_model(models.PROFILE_MODEL[profile])), 'model_type': spec.model_type,
        'template': spec.template, 'train_file': str(out / 'data' / 'train.jsonl'),
        'val_file': str(out / 'data' / 'val.jsonl'), 'output_dir': str(out / 'train'), **arm.train})
    n_train = data['train']['samples']
    if arm.curve:  # every checkpoint kept: one per `curve` steps and the last
        cfg.save_steps = cfg.eval_steps = arm.curve
        cfg.save_total_limit = -(-n_train // cfg.global_batch_size // arm.curve) + 1
    log(f'[{arm.name}] {arm.why}: {n_train} samples, training ({cfg.precision})')
    trained = training.run_training(cfg, out / 'train' / 'train.log', n_train=n_train)
    hw = env.detect_hardware()

    def evaluate(checkpoint: str | Path, eval_dir: Path) -> dict:
        merged = serving.merge_lora(checkpoint, out / 'merge.log')
        server = serving.ServerSpec(str(merged), served_name=f'ablate-{arm.name}',
                                    backend=serving.choose_backend(backend, hw.cuda, profile),
                                    precision=env.resolve_precision(precision, hw.cuda), model_type=cfg.model_type,
                                    template=cfg.template)
        metrics = evaluation.evaluate_model(server, cases, eval_dir, progress=False, log=log)
        return {'metrics': metrics, **breakdowns(cases, eval_dir / 'predictions.jsonl')}

    log(f'[{arm.name}] trained in {trained.wall_seconds / 60:.1f} min; evaluating {len(cases)} cases')
    final = evaluate(trained.best_checkpoint, out / 'eval')
    history = training.read_log_history(cfg.output_dir)
    steps = training.steps_done(history)
    losses = [r['loss'] for r in history if 'loss' in r]
    curve = []
    for ckpt in (training.checkpoints(cfg.output_dir) if arm.curve else []):
        step = int(ckpt.name.split('-')[-1])
        log(f'[{arm.name}] evaluating the checkpoint of step {step}')
        best = ckpt.resolve() == Path(trained.best_checkpoint).resolve()
        point = final if best else evaluate(ckpt, out / 'eval' / ckpt.name)
        curve.append({'step': step, 'train_minutes': round(trained.wall_seconds * step / steps / 60, 1),
                      'eval_loss': next((r['eval_loss'] for r in history if 'eval_loss' in r
                                         and r.get('global_step/max_steps', '').startswith(f'{step}/')), None),
                      **point})
    result = {'arm': asdict(arm), 'commit': commit, 'cases': str(cases_path), 'n_cases': len(cases),
              'data': data['train'],
              'train': {'steps': steps, 'wall_seconds': round(trained.wall_seconds, 1),
                        'final_loss': losses[-1] if losses else None, 'config': asdict(cfg)},
              **final, **({'curve': curve} if curve else {}), 'wall_seconds': round(time.time() - started, 1)}
    return _record(out_dir, arm.name, result)


def from_run(run_dir: str | Path, out_dir: str | Path, name: str = 'recipe', why: str = '') -> dict:
    """A finished ``make run`` as the arm ``name`` (``out_dir/<name>/result.json``): its fine-tuned model's
    evaluation on its own test cases, so a recipe that already ran need not be trained again."""
    from .agentfabric import load_cases
    from .report import load_run_file
    run = Path(run_dir)
    summary, data, metrics, environment = (load_run_file(run, name, required=True) for name in (
        'run_summary.json', 'data/data_summary.json', 'eval/finetuned/metrics.json', 'environment.json'))
    cases_path = run / 'data' / 'test_cases.jsonl'
    cases = load_cases(cases_path)
    groups = breakdowns(cases, run / 'eval' / 'finetuned' / 'predictions.jsonl')
    arm = ARMS.get(name, Arm(name, why or 'a finished run'))
    result = {'arm': asdict(replace(arm, why=f'{arm.why} (taken from the run {run.name})')),
              'commit': environment.get('commit'), 'cases': str(cases_path), 'n_cases': len(cases),
              'data': data['train'],
              'train': {'steps': summary['steps'], 'wall_seconds': summary['wall_seconds'],
                        'final_loss': summary.get('final_train_loss'), 'config': summary['config']},
              'metrics': metrics, **groups, 'run': str(run)}
    return _record(out_dir, name, result)


def _record(out_dir: str | Path, name: str, result: dict) -> dict:
    """Write an arm's ``result.json`` and return it as any later reader sees it (tuples become lists)."""
    path = Path(out_dir) / name / 'result.json'
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, result)
    return json.loads(path.read_text())


DOC = Path('docs') / 'ablations.md'  # where the generated ablation table lives (relative to the repository)
README_BEGIN = ('<!-- ablation:begin — generated by `python -m helpers ablate --readme` from results/ablation.json; '
                'do not edit -->')
README_END = '<!-- ablation:end -->'


PREFERENCE_BEGIN = ('<!-- preference-ablation:begin — generated by `python -m helpers ablate --readme` from '
                    'results/ablation-preference.json; do not edit -->')
PREFERENCE_END = '<!-- preference-ablation:end -->'
START = 'sft'  # the row preference arms are compared with: the fine-tuned model they start from


def is_preference(result: dict) -> bool:
    return result['arm'].get('stage') in ('preference', 'start')


def record_for(results: list[dict]) -> tuple[Path, str, str]:
    """Where ``--readme`` saves these arms: (record, begin marker, end marker) — training arms in
    ``results/ablation.json``, preference arms (and their starting model) in ``results/ablation-preference.json``,
    each with its own table in ``docs/ablations.md``. The two kinds run on different cases: never one record."""
    kinds = {is_preference(r) for r in results}
    if len(kinds) != 1:
        raise ValueError('these arms mix training arms and preference arms: save each kind from its own --out folder')
    return (PREFERENCE_RECORD, PREFERENCE_BEGIN, PREFERENCE_END) if kinds.pop() else (RECORD, README_BEGIN, README_END)


def start_arm(run_dir: str | Path, out_dir: str | Path, cases_path: str | Path | None = None,
              log=print) -> dict | None:
    """The fine-tuned model of ``run_dir`` as the row its preference arms are compared with (``out_dir/sft``): its
    notebook 05 evaluation, so only when the arms run on that run's own test cases (None otherwise, said)."""
    own = Path(run_dir) / 'data' / 'test_cases.jsonl'
    if cases_path is not None and Path(cases_path).resolve() != own.resolve():
        log(f'[{START}] the arms run on {cases_path}, not on {own}: the starting model has no row to compare with '
            '(give --cases of the start run to have one)')
        return None
    done = Path(out_dir) / START / 'result.json'
    if done.exists():
        return json.loads(done.read_text())
    result = from_run(run_dir, out_dir, START, why='the fine-tuned model every preference arm starts from '
                                                   '(notebook 02)')
    result['arm']['stage'] = 'start'
    return _record(out_dir, START, result)


def readme_section(saved: dict) -> str:
    """The ablation table of ``docs/ablations.md`` for a saved ablation (``results/ablation.json``), then the
    learning curve of each arm that has one."""
    arms = saved['arms']
    n = arms[0]['n_cases'] if arms else 0
    if arms and all(is_preference(r) for r in arms):
        start = next((r for r in arms if r['arm']['name'] == START), None)
        origin = f" of the run `{Path(start['run']).name}`" if start else ''
        return (f"Every arm starts from the fine-tuned model{origin} (the row `{START}`), samples that model on the "
                f"training conversations' turns (never the test split), trains on what the judge made of the samples "
                f"and is evaluated on the same {n} held-out cases (`{saved['cases']}`) through RolePlay. "
                '`sample min`: sampling, shared by arms with the same sampling settings; `train min`: the '
                'preference training. Rates read `rate [95% Wilson interval] (k/n)`.\n\n' + markdown(arms) + '\n')
    curves = ''.join(f"\nLearning curve of `{r['arm']['name']}` (one training, its checkpoints evaluated on the same "
                     f"cases; train min pro rata):\n\n{curve_markdown(r)}\n" for r in arms if r.get('curve'))
    return (f"Every arm trained on its own generated data and was evaluated on the same {n} held-out cases "
            f"(`{saved['cases']}`), through RolePlay; `loop limit`: cases stopped after 4 model calls in one turn. "
            'Rates read `rate [95% Wilson interval] (k/n)`.\n\n' + markdown(arms) + '\n' + curves)


def curve_markdown(result: dict) -> str:
    """An arm's learning curve (:attr:`Arm.curve`) as a Markdown table: one row per evaluated checkpoint."""
    from .evaluation import METRICS, metric_cell
    head = ['step', 'train min', 'val loss', 'loop limit', *[METRICS[k].label for k in HEADLINE],
            *[f"{METRICS['args_exact_acc'].label} ({lang})" for lang in ('zh', 'en')]]
    lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
    for p in result['curve']:
        loss = '-' if p['eval_loss'] is None else f"{p['eval_loss']:.3f}"
        cells = [p['step'], p['train_minutes'], loss, p['metrics'].get('n_stopped'),
                 *[metric_cell(p['metrics'], k) for k in HEADLINE],
                 *[metric_cell(p['per_language'][lang], 'args_exact_acc') if lang in p['per_language'] else '-'
                   for lang in ('zh', 'en')]]
        lines.append('| ' + ' | '.join(str(c) for c in cells) + ' |')
    return '\n'.join(lines)


def save(results: list[dict], cases_path: str | Path, path: str | Path) -> Path:
    """The finished arms as the committed record the README cites (paths relative to the checkout)."""
    from .environment import repo_root

    def rel(p):
        p = Path(p).resolve()
        return str(p.relative_to(repo_root())) if p.is_relative_to(repo_root()) else str(p)
    arms = [{**r, 'cases': rel(r['cases'])} for r in results]
    write_json(path, {'cases': rel(cases_path), 'arms': arms})
    return Path(path)


def breakdowns(cases, predictions_path: str | Path) -> dict:
    """Metrics per case language and per kind of tool (seen in training or held out), from the predictions."""
    from . import evaluation
    _, scores = evaluation.score(cases, evaluation.load_predictions(predictions_path))
    return {'per_language': evaluation.per_language(cases, scores),
            'per_tool': evaluation.breakdown(cases, scores, lambda c: 'holdout' if c.meta.get('holdout') else 'seen')}


HEADLINE = ('tool_selection_acc', 'args_exact_acc', 'false_positive_rate', 'invalid_call_rate')


def table(results: list[dict]):
    """One row per arm: the headline metrics with their 95% intervals, per language too, and the cost."""
    import pandas as pd
    from .evaluation import METRICS, metric_cell
    rows = {}
    for r in results:
        row = {'commit': r.get('commit') or '-', 'steps': r['train']['steps'],
               'train min': round(r['train']['wall_seconds'] / 60, 1),
               'samples': r['data']['samples'], 'loop limit': r['metrics'].get('n_stopped')}
        if r['arm'].get('stage') == 'preference':
            row['pairs'] = r['data']['pairs']
            row['sample min'] = round(r['data']['sample_seconds'] / 60, 1)
        for key in HEADLINE:
            row[METRICS[key].label] = metric_cell(r['metrics'], key)
            for lang, m in sorted(r['per_language'].items()):
                row[f'{METRICS[key].label} ({lang})'] = metric_cell(m, key)
        for key in HEADLINE[:2]:
            row[f'{METRICS[key].label} (held-out tools)'] = metric_cell(r['per_tool']['holdout'], key)
        rows[r['arm']['name']] = row
    return pd.DataFrame(rows).T


def run(names: list[str], cases_path: str | Path, out_dir: str | Path, profile: str = 'cpu', backend: str = '',
        precision: str = 'auto', start_run: str | Path | None = None) -> list[dict]:
    """Run the named arms (training arms, and preference arms from ``start_run``'s fine-tuned model)."""
    unknown = [n for n in names if n not in ARMS and n not in PREFERENCE_ARMS]
    if unknown:
        raise ValueError(f'unknown arms {unknown}: choose among {", ".join([*ARMS, *PREFERENCE_ARMS])}')
    if not Path(cases_path).exists():
        raise FileNotFoundError(f'{cases_path} does not exist: give the test_cases.jsonl of a run '
                                '(runs/<run>/data/test_cases.jsonl, written by notebook 01)')
    preference = [n for n in names if n in PREFERENCE_ARMS]
    if preference:
        if not start_run:
            raise ValueError(f'{preference[0]} is a preference arm: give the run it starts from (start_run)')
        start_arm(start_run, out_dir, cases_path)
    for n in names:
        if n in PREFERENCE_ARMS:
            run_preference_arm(PREFERENCE_ARMS[n], start_run, cases_path, out_dir, profile, backend)
        else:
            run_arm(ARMS[n], cases_path, out_dir, profile, backend, precision)
    return collect(out_dir, cases_path)


def collect(out_dir: str | Path, cases_path: str | Path) -> list[dict]:
    """Every finished arm under ``out_dir`` measured on ``cases_path`` (earlier invocations included), in
    :data:`ARMS` order, also written to ``out_dir/ablation.json``."""
    from .report import RESULT, checked_file
    order = {name: i for i, name in enumerate([*ARMS, START, *PREFERENCE_ARMS])}
    results = [checked_file(p, RESULT, 'remove that arm\'s folder to run it again')
               for p in sorted(Path(out_dir).glob('*/result.json'))]
    results = sorted((r for r in results if Path(r['cases']).resolve() == Path(cases_path).resolve()),
                     key=lambda r: order.get(r['arm']['name'], len(order)))
    write_json(Path(out_dir) / 'ablation.json', {'cases': str(cases_path), 'arms': results})
    return results


def markdown(results: list[dict]) -> str:
    """The headline columns of :func:`table` as a Markdown table (README, closing notes)."""
    from .evaluation import METRICS
    frame = table(results)
    cols = ['commit', 'steps', 'pairs', 'sample min', 'train min', 'loop limit', *[METRICS[k].label for k in HEADLINE],
            *[f'{METRICS[k].label} ({lang})' for k in HEADLINE[:3] for lang in ('zh', 'en')],
            *[f'{METRICS[k].label} (held-out tools)' for k in HEADLINE[:2]]]
    frame = frame[[c for c in cols if c in frame.columns]].fillna('-')
    lines = ['| arm | what changed | ' + ' | '.join(frame.columns) + ' |', '|' + '---|' * (len(frame.columns) + 2)]
    why = {r['arm']['name']: r['arm']['why'] for r in results}
    for name, row in frame.iterrows():
        lines.append(f'| {name} | {why[name]} | ' + ' | '.join(str(v) for v in row) + ' |')
    return '\n'.join(lines)


RECORD = Path(__file__).resolve().parent.parent / 'results' / 'ablation.json'
PREFERENCE_RECORD = RECORD.with_name('ablation-preference.json')


def learning_curves(path: str | Path = RECORD) -> list[dict]:
    """Every evaluated checkpoint of the committed learning-curve arms (``Arm.curve``), one row each: training,
    step, training minutes, validation loss, loop limit and the headline rates as ``k/n``."""
    from .jsonl import read_json
    from .evaluation import METRICS
    rows = []
    for i, r in enumerate(a for a in read_json(path)['arms'] if a.get('curve')):
        for p in r['curve']:
            row = {'training': f'training {i + 1} (seed {r["arm"].get("train", {}).get("seed", 42)})', 'step': p['step'],
                   'train min': p['train_minutes'], 'val loss': p['eval_loss'],
                   'loop limit': p['metrics'].get('n_stopped')}
            for k in HEADLINE:
                got, n = p['metrics']['counts'][k]
                row[METRICS[k].heading] = f'{got}/{n}'
            rows.append(row)
    return rows


# -- The preference stage (notebook 06): arms that start from a finished run's fine-tuned model. ----------------

@dataclass(frozen=True)
class PreferenceArm:
    """One preference recipe, from a finished run's fine-tuned model: notebook 06's defaults with ``sample``
    (training turns, replies per turn, temperature, loops), ``pairs`` (source, per_prompt, per_kind) and
    ``train`` (fields of the ``<profile>-dpo`` preset) changed."""
    name: str
    why: str
    sample: dict = field(default_factory=dict)
    pairs: dict = field(default_factory=dict)
    train: dict = field(default_factory=dict)


PREFERENCE_ARMS = {a.name: a for a in [
    PreferenceArm('dpo', "notebook 06's recipe until the ablation below: 120 training turns (no-call turns at their "
                         'share of the data), 4 replies each (the first greedy), on-policy pairs, at most 2 per turn, '
                         'DPO beta 0.1 with rpo_alpha 1, lr 2e-5, 12 steps of 4 pairs'),
    PreferenceArm('dpo-seed1', 'the recipe trained in another order (training seed 1): the spread of one training',
                  train={'seed': 1}),
    PreferenceArm('dpo-36steps', 'three times the DPO steps (36)', train={'max_steps': 36}),
    PreferenceArm('dpo-beta03', 'beta 0.3: the trained model kept closer to the fine-tuned one', train={'beta': 0.3}),
    PreferenceArm('dpo-rpo0', 'no SFT term on the chosen reply (rpo_alpha 0)', train={'rpo_alpha': None}),
    PreferenceArm('dpo-lr5', 'learning rate 5e-5', train={'learning_rate': 5e-5}),
    PreferenceArm('dpo-perkind8', 'at most 8 pairs of each failure kind (balanced kinds)', pairs={'per_kind': 8}),
    PreferenceArm('dpo-nocall50', 'half the sampled turns need no call (instead of their share of about a quarter): '
                                  'more pairs against calling tools on questions that need none; notebook 06\'s '
                                  'recipe since this ablation',
                  sample={'no_call_share': 0.5}),
    PreferenceArm('dpo-nocall50-seed1', 'dpo-nocall50 trained in another order (training seed 1)',
                  sample={'no_call_share': 0.5}, train={'seed': 1}),
    PreferenceArm('dpo-2samples', 'two replies per turn instead of four (cheaper sampling)',
                  sample={'samples_per_turn': 2}),
    PreferenceArm('dpo-perturbed', 'pairs made by breaking the expected reply by rule instead of the model\'s own '
                                   'mistakes (one per turn)', pairs={'source': 'perturbed'}),
    PreferenceArm('dpo-nocall50-both', 'dpo-nocall50, and a turn the model got right in every sample gets a pair '
                                       'too: the right reply against the same reply broken by rule (one value or '
                                       'parameter changed, as in dpo-perturbed)',
                  sample={'no_call_share': 0.5}, pairs={'source': 'both'}),
    PreferenceArm('dpo-nocall50-36steps', 'dpo-nocall50 trained three times as long (36 steps)',
                  sample={'no_call_share': 0.5}, train={'max_steps': 36}),
    PreferenceArm('dpo-lora', 'a rank-16 LoRA adapter instead of every weight (lr 5e-5)',
                  train={'tuner': 'lora', 'learning_rate': 5e-5, 'lora_dropout': 0.0}),
    PreferenceArm('grpo', 'GRPO instead of DPO: groups of 4 replies per training turn sampled by the trainer, reward 1 '
                          'for what the judge calls right (a right call, or no call where none is needed), no '
                          'reference model; as many steps as fit the wall time of the DPO arm',
                  train={'stage': 'grpo', 'max_steps': 12}),
]}


def _turns(run: Path, sample: dict) -> list:
    """The training turns the ``sample`` settings pick from the run's training conversations."""
    from . import preference
    return preference.pick_turns(preference.training_turns(
        preference.load_conversations(run / 'data' / 'train_conversations.jsonl')), sample['turns'], seed=0,
        no_call_share=sample.get('no_call_share'))


def _rollouts(run: Path, sample: dict, out_dir: Path, backend: str, log) -> tuple[list, list, float, Path]:
    """The sampled turns and rollouts of ``sample`` settings from the run's fine-tuned model: sampled once and kept
    under ``out_dir/_rollouts`` for every arm that shares the settings. Returns (turns, rollouts, seconds, path)."""
    import hashlib
    from . import evaluation, preference, serving
    key = hashlib.sha256(json.dumps([str(run.resolve()), sample], sort_keys=True).encode()).hexdigest()[:16]
    path = out_dir / '_rollouts' / f'{key}.jsonl'
    turns = _turns(run, sample)
    if path.exists():
        meta = json.loads(path.with_suffix('.json').read_text())
        return turns, preference.read_rollouts(path), meta['seconds'], path
    spec = serving.run_model_spec(run, 'finetuned', backend)
    start = time.time()
    with serving.Server(spec, path.with_suffix('.server.log')) as srv:
        rollouts = preference.sample_rollouts(turns, srv.base_url, spec.served_name, n=sample['samples_per_turn'],
                                              temperature=sample['temperature'], loops=sample['loops'],
                                              max_tokens=evaluation.reply_budget(turns, spec.model_dir, log=log),
                                              server_log=srv.log_path, log=log)
    seconds = round(time.time() - start, 1)
    preference.write_rollouts(path, rollouts)
    write_json(path.with_suffix('.json'), {'sample': sample, 'run': str(run), 'seconds': seconds})
    return turns, rollouts, seconds, path


def run_preference_arm(arm: PreferenceArm, run_dir: str | Path, cases_path: str | Path, out_dir: str | Path,
                       profile: str = 'cpu', backend: str = '', log=print) -> dict:
    """Sample, pair, train and evaluate one preference arm from ``run_dir``'s fine-tuned model, under
    ``out_dir/<arm>``; returns (and writes) its ``result.json`` (the same record as a training arm's)."""
    from dataclasses import replace as _replace
    from . import budget, environment as env, evaluation, preference, serving, training
    from .agentfabric import load_cases
    run, out = Path(run_dir), Path(out_dir) / arm.name
    done = out / 'result.json'
    if done.exists():
        return json.loads(done.read_text())
    started, commit = time.time(), env.repo_commit()
    knobs = budget.scale(budget.KNOBS[profile], 1.0)
    sample = {'turns': knobs['sample_turns'], 'samples_per_turn': knobs['samples_per_turn'], 'temperature': 0.8,
              'loops': False, **arm.sample}
    pairs_opt = {'source': 'on-policy', 'per_prompt': 2, 'per_kind': None, **arm.pairs}
    stage = arm.train.get('stage', 'dpo')
    if stage == 'grpo' or pairs_opt['source'] == 'perturbed':  # no sampled replies needed: only the turns
        turns, rollouts, sample_seconds = _turns(run, sample), [], 0.0
    else:
        turns, rollouts, sample_seconds, _ = _rollouts(run, sample, Path(out_dir), backend, log)
    if stage == 'grpo':  # the trainer samples and the judge rewards: no pairs
        pairs = []
        (out / 'pairs').mkdir(parents=True, exist_ok=True)
        paths = {'train': out / 'pairs' / 'grpo_train.jsonl', 'val': out / 'pairs' / 'grpo_val.jsonl'}
        from .jsonl import write_jsonl
        write_jsonl(paths['train'], preference.grpo_rows(turns))
        write_jsonl(paths['val'], [])
    else:
        pairs = preference.make_pairs(pairs_opt['source'], turns, rollouts, pairs_opt['per_prompt'],
                                      pairs_opt['per_kind'])
        paths = preference.write_pairs(out / 'pairs', pairs)
    spec = serving.run_model_spec(run, 'finetuned', backend)
    name = f'{profile}-{stage}'
    n_train = sum(1 for _ in open(paths['train'], encoding='utf-8'))
    train = {'max_steps': knobs['dpo_steps'] or -1, **{k: v for k, v in arm.train.items() if k != 'stage'}}
    cfg = training.preset(name, **{'model': spec.model_dir, 'model_type': spec.model_type, 'template': spec.template,
                                   'train_file': str(paths['train']),
                                   'val_file': str(paths['val']) if paths['val'].stat().st_size else None,
                                   'output_dir': str(out / 'train'), **train})
    log(f'[{arm.name}] {arm.why}: {len(pairs)} pairs, {n_train} rows to train on, {stage} ({cfg.precision})')
    trained = training.run_training(cfg, out / 'train' / 'train.log')
    cases = load_cases(cases_path)
    model = serving.merge_lora(trained.last_checkpoint, out / 'merge.log')
    served = _replace(spec, model_dir=str(model), served_name=f'ablate-{arm.name}')
    log(f'[{arm.name}] trained in {trained.wall_seconds / 60:.1f} min; evaluating {len(cases)} cases')
    metrics = evaluation.evaluate_model(served, cases, out / 'eval', progress=False, log=log)
    history = training.read_log_history(cfg.output_dir)
    losses = [r['loss'] for r in history if 'loss' in r and 'eval_loss' not in r]
    result = {'arm': {**asdict(arm), 'stage': 'preference'}, 'commit': commit, 'cases': str(cases_path),
              'n_cases': len(cases), 'start': str(run),
              'data': {'samples': n_train, 'pairs': len(pairs), 'pair_counts': preference.pair_counts(pairs),
                       'turns': len(turns), 'sample': sample, 'sample_seconds': sample_seconds},
              'train': {'steps': training.steps_done(history), 'wall_seconds': round(trained.wall_seconds, 1),
                        'final_loss': sum(losses[-5:]) / len(losses[-5:]) if losses else None, 'config': asdict(cfg),
                        'reading': preference.training_reading(history)},
              'metrics': metrics, **breakdowns(cases, out / 'eval' / 'predictions.jsonl'),
              'wall_seconds': round(time.time() - started, 1)}
    return _record(out_dir, arm.name, result)
