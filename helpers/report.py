"""Report: one page per run (``report.html`` with embedded images, and ``report.md``), built only from
the files the notebooks wrote into the run directory — environment, data, the exact training command,
curves, before/after metrics, per-tool results, transcripts of successes and failures, wall times — and the
generated parts of the documentation, from the committed run summaries (``results/<name>-run.json``): each
summary's results section in ``docs/results.md``, and in ``README.md`` the headline result of
``results/cpu-run.json`` and the "how long on your machine" box (every summary by profile and precision).

Run files are checked before they are trusted (:func:`load_run_file`): each must be JSON of the shape its
writer gives it (:data:`RUN_FILES`), or :class:`RunFileError` names the file and what is wrong. The report
of a partial run says which sections were not run; a run summary (:func:`results_summary`), and so the
README, is made only from a complete run: every file present, no notebook recorded as failed or missing in
``timings.json``, and a summary is checked again (:func:`load_summary`) before the README is regenerated.
"""
from __future__ import annotations

import base64
import csv
import html
import json
from pathlib import Path
from typing import Any

from .evaluation import METRICS, compare, format_rate, metric_cell
from .jsonl import JsonlError, atomic_write, read_json


class RunFileError(ValueError):
    """A run file (or run summary) that is missing, not JSON, or not of its shape: the message names it."""


# -- Shapes: a type (or tuple of types) to be an instance of; {key: shape} an object with those keys ("?key":
#    optional, "*": every other key); [shape] a list of such items; PAIR a [k, n] count; ANY anything.
ANY, PAIR = object, 'pair'
NUMBER = (int, float)
ARM = {'n_cases': int, 'n_with_call': int, 'n_without_call': int, 'counts': {'*': PAIR},
       **{f'?{key}': (*NUMBER, type(None)) for key in METRICS}, '*': ANY}
RUN_FILES: dict[str, Any] = {
    'environment.json': {'profile': str, 'model': str, '?reason': str, '?commit': (str, type(None)),
                         'hardware': {'cpu_count': (int, type(None)), 'memory_gib': NUMBER, 'gpus': [str], '*': ANY},
                         '?versions': {'*': (str, type(None))}, '*': ANY},
    'data/data_summary.json': {'train': {'conversations': int, '*': ANY}, '?plan': {'?why': (list, str), '*': ANY}, '*': ANY},
    'run_summary.json': {'steps': int, 'wall_seconds': NUMBER, 'train_samples': int, '?shell': str,
                         'config': {'tuner': str, 'learning_rate': NUMBER, '?lora_rank': (int, type(None)), '*': ANY},
                         '*': ANY},
    'serve/model.json': {'*': ANY},
    'roleplay/gallery.json': [{'*': ANY}],
    'eval/metrics.json': {'baseline': str, 'models': {'*': ARM}, '?per_language': {'*': {'*': ARM}},
                          '?argument_errors': {'*': {'*': int}}, '?conclusion': str, '*': ANY},
    'timings.json': {'*': {'seconds': NUMBER, 'status': str, '*': ANY}},
    'eval/finetuned/metrics.json': ARM,
    'plan.json': {'precision': str, 'settings': {'*': int}, '?estimate': {'*': NUMBER}, '*': ANY},
}
RESULT = {'arm': {'name': str, '*': ANY}, 'cases': str, 'n_cases': int, 'metrics': ARM, '*': ANY}  # an ablation arm
SUMMARY = {'note': str, 'profile': str, 'model': str, '?commit': (str, type(None)), 'command': str, 'machine': str,
           '?precision': str,
           'data': {'?train_samples': (int, type(None)), '?train_conversations': (int, type(None)), '*': ANY},
           'training': {'?steps': (int, type(None)), '?lora_rank': (int, type(None)), 'tuner': str,
                        'learning_rate': NUMBER, '?wall_seconds': (*NUMBER, type(None)), '*': ANY},
           'timings': {'*': NUMBER}, 'baseline': (str, type(None)), 'arms': {'*': ARM},
           '?per_language': {'*': {'*': ARM}}, '?argument_errors': {'*': {'*': int}}, '*': ANY}


def _kind(shape: Any) -> str:
    if shape is PAIR:
        return 'a [k, n] count'
    if isinstance(shape, dict):
        return 'an object'
    if isinstance(shape, list):
        return 'a list'
    names = {str: 'a string', int: 'a whole number', float: 'a number', type(None): 'null', bool: 'true or false'}
    kinds = shape if isinstance(shape, tuple) else (shape,)
    if set(kinds) >= {int, float}:
        kinds = tuple(k for k in kinds if k is not int)
    return ' or '.join(names.get(k, k.__name__) for k in kinds)


def shape_problem(value: Any, shape: Any, where: str = '') -> str | None:
    """What makes ``value`` (parsed JSON) not of ``shape``, naming where; None when it fits."""
    at = f' at {where}' if where else ''
    if shape is ANY:
        return None
    if shape is PAIR:
        ok = isinstance(value, list) and len(value) == 2 and all(type(v) is int and v >= 0 for v in value) \
            and value[0] <= value[1]
        return None if ok else f'expected {_kind(shape)}{at}, got {_short(value)}'
    if isinstance(shape, dict):
        if not isinstance(value, dict):
            return f'expected {_kind(shape)}{at}, got {_short(value)}'
        for key, sub in shape.items():
            if key == '*' or key.startswith('?') and key[1:] not in value:
                continue
            name = key.lstrip('?')
            if name not in value:
                return f'"{name}" is missing{at}'
            problem = shape_problem(value[name], sub, f'{where}.{name}' if where else name)
            if problem:
                return problem
        rest = shape.get('*')
        for key, item in value.items():
            if key not in shape and f'?{key}' not in shape:
                if rest is None:
                    return f'unexpected key "{key}"{at}'
                problem = shape_problem(item, rest, f'{where}.{key}' if where else key)
                if problem:
                    return problem
        return None
    if isinstance(shape, list):
        if not isinstance(value, list):
            return f'expected {_kind(shape)}{at}, got {_short(value)}'
        return next(filter(None, (shape_problem(v, shape[0], f'{where}[{i}]') for i, v in enumerate(value))), None)
    kinds = shape if isinstance(shape, tuple) else (shape,)
    if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
        return f'expected {_kind(shape)}{at}, got {_short(value)}'
    return None


def _short(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 40 else text[:40] + '…'


def _arms_problem(arms: dict, where: str) -> str | None:
    """An arm whose rate has no [k, n] count to compare it by (every rate a table or a comparison shows)."""
    for name, arm in arms.items():
        for key, metric in METRICS.items():
            if metric.proportion and arm.get(key) is not None and key not in arm['counts']:
                return f'{where}.{name}: "{key}" has no count in "counts"'
    return None


def checked_file(path: Path, shape: Any, what: str) -> Any:
    """The JSON document at ``path``, of ``shape``; :class:`RunFileError` naming it, and ``what`` to do, otherwise."""
    try:
        value = read_json(path)
    except JsonlError as e:
        raise RunFileError(f'{e}; {what}') from None
    except OSError as e:
        raise RunFileError(f'{path}: cannot be read ({e.strerror or e}); {what}') from None
    problem = shape_problem(value, shape)
    if problem:
        raise RunFileError(f'{path}: not a {path.name} as the notebooks write it ({problem}); {what}')
    return value


def load_run_file(run: str | Path, name: str, required: bool = False) -> Any:
    """Run file ``name`` (a key of :data:`RUN_FILES`) of ``run``, checked; None when it is absent and not
    ``required``. :class:`RunFileError` names the file when it is missing (and required), not JSON, or of
    another shape."""
    path = Path(run) / name
    if not path.exists():
        if required:
            raise RunFileError(f'{path} is missing: the run is not complete; finish it (make run) or give a '
                               'finished run')
        return None
    value = checked_file(path, RUN_FILES[name], 'rerun the notebook that writes it, or give another run')
    if name == 'eval/metrics.json':
        problem = _arms_problem(value['models'], 'models')
        if problem:
            raise RunFileError(f'{path}: {problem}; rerun notebook 05')
        if not value['models']:
            raise RunFileError(f'{path}: "models" is empty: the evaluation has no arm; rerun notebook 05')
        if value['baseline'] not in value['models']:
            raise RunFileError(f'{path}: the baseline {value["baseline"]!r} is not among its arms '
                               f'{sorted(value["models"])}; rerun notebook 05')
    if name == 'timings.json':
        bad = [k for k, v in value.items() if v['status'] not in ('ok', 'failed', 'skipped') or v['seconds'] < 0]
        if bad:
            raise RunFileError(f'{path}: the entry of {bad[0]} is no timing (status ok, failed or skipped and '
                               'seconds ≥ 0); rerun the pipeline')
    return value


def load_summary(path: str | Path) -> dict:
    """A run summary (``results/<profile>-run.json``), checked: :class:`RunFileError` names it when it is
    missing, not JSON or of another shape (an arm without ``n_cases``, timings that are not numbers …)."""
    path = Path(path)
    if not path.is_file():
        raise RunFileError(f'{path}: no such run summary; write one with python -m helpers results --run-dir RUN')
    again = 'write it again with python -m helpers results --run-dir RUN'
    summary = checked_file(path, SUMMARY, again)
    problem = 'the "arms" object is empty' if not summary['arms'] else _arms_problem(summary['arms'], 'arms')
    if problem:
        raise RunFileError(f'{path}: {problem}; {again}')
    return summary


def _transcripts(run: Path, n: int = 3) -> tuple[list[dict], list[dict]]:
    """A few successes and failures of the fine-tuned model, with what was asked and what came back."""
    from .agentfabric import load_cases
    from .evaluation import load_predictions, score, verdict
    cases_path, preds_path = run / 'data' / 'test_cases.jsonl', run / 'eval' / 'finetuned' / 'predictions.jsonl'
    if not (cases_path.exists() and preds_path.exists()):
        return [], []
    try:
        cases = load_cases(cases_path)
        preds = load_predictions(preds_path)
    except ValueError as e:  # names the file and line
        raise RunFileError(str(e)) from None
    _, scores = score(cases, preds)
    by_id = {c.id: c for c in cases}
    rows = []
    for s in scores:
        p = preds.get(s.id, {})
        rows.append({'query': by_id[s.id].query, 'output': p.get('output', ''), 'answer': p.get('answer', ''),
                     'verdict': verdict(by_id[s.id].expected_call, p.get('output', ''), p.get('error'))})
    ok = [r for r, s in zip(rows, scores) if s.kind == 'ok'][:n]
    seen, bad = set(), []
    for r, s in zip(rows, scores):
        if s.kind != 'ok' and s.kind not in seen:
            seen.add(s.kind)
            bad.append(r)
    return ok, bad


def collect(run: str | Path, complete: bool = False) -> dict:
    """Every run file of ``run``, checked (:func:`load_run_file`); an absent one is None unless ``complete``
    asks for a finished run (then all but the gallery and the timings, which a run by hand lacks, and the plan,
    which runs before plans existed lack, must be there)."""
    run = Path(run)
    keys = {'environment': 'environment.json', 'data': 'data/data_summary.json', 'training': 'run_summary.json',
            'serving': 'serve/model.json', 'gallery': 'roleplay/gallery.json', 'evaluation': 'eval/metrics.json',
            'timings': 'timings.json', 'plan': 'plan.json'}
    info = {key: load_run_file(run, name, complete and key not in ('gallery', 'timings', 'plan'))
            for key, name in keys.items()}
    if complete and info['timings'] is not None:
        from .pipeline import notebooks
        timings = info['timings']
        missing = [nb.name for nb in notebooks() if timings.get(nb.name, {}).get('status') not in ('ok', 'skipped')]
        if missing:
            raise RunFileError(f'{run / "timings.json"}: {missing[0]} has '
                               f'{"failed" if missing[0] in timings else "no time"}: the run is not complete; '
                               f'finish it (python -m helpers pipeline --from {missing[0][:2]})')
    return {'run': str(run), **info}


def _table(headers: list[str], rows: list[list]) -> tuple[str, str]:
    """(html, markdown) of a table."""
    h = '<table><tr>' + ''.join(f'<th>{html.escape(str(x))}</th>' for x in headers) + '</tr>' + ''.join(
        '<tr>' + ''.join(f'<td>{html.escape(str(x))}</td>' for x in r) + '</tr>' for r in rows) + '</table>'
    md = '| ' + ' | '.join(map(str, headers)) + ' |\n|' + '---|' * len(headers) + '\n' + ''.join(
        '| ' + ' | '.join(str(x).replace('|', '\\|').replace('\n', '⏎') for x in r) + ' |\n' for r in rows)
    return h, md


SMOOTHED_LAST = 5  # logged training losses averaged for the one reported: a single logged value is one batch


def training_rows(summary: dict, train_dir: str | Path) -> list[list]:
    """The run summary's figures for a table (the report's, notebook 02's): the training loss as the mean of the
    last logged values (:func:`helpers.narrate.smoothed`), not the last noisy one; counts stay whole numbers."""
    from .narrate import smoothed
    from .training import read_log_history
    loss = smoothed(read_log_history(train_dir), 'loss', SMOOTHED_LAST)
    rows = [[k, summary.get(k)] for k in ('effective_batch', 'wall_seconds', 'steps', 'samples_seen',
                                           'tokens_per_second', 'seconds_per_step', 'peak_rss_gib',
                                           'peak_gpu_memory_gib')]
    rows.append([f'train loss (mean of the last {SMOOTHED_LAST} logged)',
                 loss if loss is not None else summary.get('final_train_loss')])
    rows += [[k, summary.get(k)] for k in ('final_eval_loss', 'final_eval_token_acc', 'best_checkpoint')]
    return rows


def build_report(run: str | Path) -> tuple[Path, Path]:
    """Write ``report.html`` and ``report.md`` into ``run``; sections whose files are missing say so, and a
    run file that is not of its shape is refused (:class:`RunFileError`, naming it) before anything is written."""
    run = Path(run)
    if not run.is_dir():
        raise RunFileError(f'{run}: no such run directory')
    info = collect(run)
    parts_html, parts_md = [], []

    def section(title: str, html_body: str, md_body: str) -> None:
        parts_html.append(f'<h2>{html.escape(title)}</h2>{html_body}')
        parts_md.append(f'## {title}\n\n{md_body}\n')

    def image(path: Path, alt: str) -> tuple[str, str]:
        if not path.exists():
            return f'<p>({html.escape(alt)}: not produced)</p>', f'({alt}: not produced)'
        data = base64.b64encode(path.read_bytes()).decode()
        return (f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}" style="max-width:100%">',
                f'![{alt}]({path.relative_to(run)})')

    env = info['environment'] or {}
    hw = env.get('hardware') or {}
    h, m = _table(['item', 'value'], [
        ['profile', env.get('profile', '–')], ['why', env.get('reason', '–')], ['model', env.get('model', '–')],
        ['CPU cores', hw.get('cpu_count', '–')], ['memory GiB', hw.get('memory_gib', '–')],
        ['GPU', ', '.join(hw.get('gpus') or []) or 'none'],
        *[[k, v or 'not installed'] for k, v in (env.get('versions') or {}).items()
          if k in ('torch', 'transformers', 'ms-swift', 'modelscope-agent', 'vllm')]])
    section('Environment', h, m)

    data = info['data'] or {}
    rows = [[s, json.dumps(data.get(s), ensure_ascii=False)] for s in ('train', 'val', 'test') if data.get(s)]
    h, m = _table(['split', 'contents'], rows) if rows else ('<p>(no data summary)</p>', '(no data summary)')
    why = (data.get('plan') or {}).get('why', '')
    why = why if isinstance(why, str) else ' '.join(map(str, why))  # a list of reasons (a string before 2026-12-04)
    section('Data', f'<p>{html.escape(why)}</p>' + h, f'{why}\n\n{m}')

    tr = info['training'] or {}
    if tr:
        h, m = _table(['figure', 'value'], training_rows(tr, run / 'train'))
        img_h, img_m = image(run / 'train' / 'curves.png', 'training curves')
        cmd = tr.get('shell', '')
        section('Training', f'<pre>{html.escape(cmd)}</pre>{h}{img_h}', f'```bash\n{cmd}\n```\n\n{m}\n{img_m}')
    else:
        section('Training', '<p>(not run)</p>', '(not run)')

    ev = info['evaluation'] or {}
    models = ev.get('models') or {}
    if models:
        h, m = _table(['metric', *models], [[d.heading, *(metric_cell(models[w], k) for w in models)]
                                            for k, d in METRICS.items()]
                      + [['cases', *(models[w].get('n_cases') for w in models)]])
        img_h, img_m = image(run / 'eval' / 'before_after.png', 'before vs after')
        base = ev.get('baseline')
        rows = [[f'{name} vs {base}', c.text(), c.verdict] for name in models if base in models and name != base
                for c in compare(models[name], models[base])]
        dh, dm = _table(['arms', 'Δ = arm − baseline [95% interval]; ↑ higher / ↓ lower is better', 'verdict'],
                        rows) if rows else ('', '')
        section('Before vs after (held-out cases, real RolePlay loop, 95% Wilson intervals)', h + img_h + dh,
                m + '\n' + img_m + '\n\n' + dm)
        if ev.get('conclusion'):
            section('Conclusion', '<pre>' + html.escape(ev['conclusion']) + '</pre>', ev['conclusion'])
        per_tool = run / 'eval' / 'per_tool.csv'
        if per_tool.exists():
            lines = list(csv.reader(per_tool.read_text(encoding='utf-8').splitlines()))  # cells hold commas
            h, m = _table(lines[0], lines[1:])
            section('Per tool', h, m)
        ok, bad = _transcripts(run)
        for title, rows in (('Transcripts: successes', ok), ('Transcripts: one failure of each kind', bad)):
            if rows:
                h, m = _table(list(rows[0]), [list(r.values()) for r in rows])
                section(title, h, m)
    else:
        section('Evaluation', '<p>(not run)</p>', '(not run)')

    gallery = info['gallery'] or []
    if gallery:
        h, m = _table(list(gallery[0]), [list(g.values()) for g in gallery])
        section('RolePlay gallery', h, m)

    timings = info['timings'] or {}
    if timings:
        expected = (info['plan'] or {}).get('estimate') or {}
        rows = [[k, f"{v['seconds']:.0f}", f"{expected[k]:.0f}" if k in expected else '–', v['status']]
                for k, v in timings.items()]
        rows.append(['total', f"{sum(v['seconds'] for v in timings.values()):.0f}",
                     f"{sum(expected.values()):.0f}" if expected else '–', ''])
        h, m = _table(['notebook', 'seconds', "expected by notebook 00's plan (seconds)", 'status'], rows)
        section('Wall time per step', h, m)

    title = f'AgentFabric tool-calling fine-tune — {run.name}'
    style = ('body{font-family:sans-serif;max-width:1100px;margin:auto;padding:1em}table{border-collapse:collapse;'
             'margin:.5em 0}td,th{border:1px solid #ccc;padding:3px 6px;font-size:12px;vertical-align:top;'
             'max-width:420px;word-wrap:break-word;white-space:pre-wrap}pre{background:#f6f8fa;padding:8px;'
             'white-space:pre-wrap}')
    html_path, md_path = run / 'report.html', run / 'report.md'
    with atomic_write(html_path) as f:
        f.write(f'<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
                f'<style>{style}</style></head><body><h1>{html.escape(title)}</h1>{"".join(parts_html)}</body></html>')
    with atomic_write(md_path) as f:
        f.write(f'# {title}\n\n' + '\n'.join(parts_md))
    return html_path, md_path


# -- The generated parts of the documentation, from the committed run summaries (results/<name>-run.json).

README_BEGIN = '<!-- results:begin — generated by `python -m helpers results --readme` from {path}; do not edit -->'
README_END = '<!-- results:end -->'
HEADLINE_BEGIN = ('<!-- headline:begin — generated by `python -m helpers results --readme` from {path}; '
                  'do not edit -->')
HEADLINE_END = '<!-- headline:end -->'
TIMES_BEGIN = ('<!-- times:begin — generated by `python -m helpers results --readme` from the run summaries in '
               'results/; do not edit -->')
TIMES_END = '<!-- times:end -->'
NB_TIMES_BEGIN = '<!-- nbtimes:begin — generated by `python -m helpers results --readme`; do not edit -->'
NB_TIMES_END = '<!-- nbtimes:end -->'
RESULTS_DOC = Path('docs') / 'results.md'  # each summary's results section (relative to the repository)
HEADLINE_SUMMARY = Path('results') / 'cpu-run.json'  # the run whose result the README's front door shows
# The README's "how long on your machine" box: one row per (profile, precision) a run summary can fill.
MACHINES = (('tiny', None, '`tiny` (what `make test` runs)'), ('cpu', 'bf16', '`cpu`, a CPU with bf16 units'),
            ('cpu', 'fp32', '`cpu`, a CPU without them (fp32)'), ('gpu', None, '`gpu`, NVIDIA GPUs'))
def results_summary(run: str | Path, command: str) -> dict:
    """The figures of a finished run that the README cites: metrics of every arm (with counts), wall time per
    notebook, training and data figures, the commit it ran at, the command, the machine."""
    run = Path(run).resolve()  # runs/latest-cpu names the run it links to
    if not run.is_dir():
        raise RunFileError(f'{run}: no such run directory; give a finished run (runs/<run>)')
    info = collect(run, complete=True)
    env, data, tr, ev = info['environment'], info['data'], info['training'], info['evaluation']
    cfg, hw = tr['config'], env['hardware']
    keep = ('n_cases', 'n_with_call', 'n_without_call', 'counts', 'n_stopped', *METRICS)
    plan = load_run_file(run, 'plan.json') or {}
    precision = plan.get('precision') or env.get('precision') or cfg.get('precision')
    return {
        'note': f'measured run {run.name}',
        'profile': env.get('profile'), 'model': env.get('model'), 'commit': env.get('commit'), 'command': command,
        **({'precision': precision} if isinstance(precision, str) and precision != 'auto' else {}),
        'scaled': {k: [plan['reference'][k], v] for k, v in (plan.get('settings') or {}).items()
                   if isinstance(plan.get('reference'), dict) and plan['reference'].get(k) != v},
        'machine': (f"{hw['cpu']}, " if hw.get('cpu') else '') + f"{hw.get('cpu_count')} CPU cores, {hw.get('memory_gib')} GiB, "
                   f"{', '.join(hw.get('gpus') or []) or 'no GPU'}",
        'data': {'train_samples': tr.get('train_samples'),
                 'train_conversations': (data.get('train') or {}).get('conversations')},
        'training': {'steps': tr.get('steps'), 'lora_rank': cfg.get('lora_rank'), 'tuner': cfg.get('tuner'),
                     'target_modules': cfg.get('target_modules'), 'learning_rate': cfg.get('learning_rate'),
                     'wall_seconds': tr.get('wall_seconds')},
        'timings': {k: v['seconds'] for k, v in (info['timings'] or {}).items()},
        'baseline': ev.get('baseline'),
        'arms': {name: {k: m[k] for k in keep if k in m} for name, m in ev['models'].items()},
        'per_language': {name: {lang: {k: m[k] for k in keep if k in m} for lang, m in langs.items()}
                         for name, langs in (ev.get('per_language') or {}).items()},
        'argument_errors': ev.get('argument_errors') or {},
    }


LOOPS = 'stopped at the call limit (call loops) ↓'  # cases whose model kept calling tools after the result


def loop_cells(arms: dict) -> list[str] | None:
    """Each arm's cases stopped at the call limit, ``k/n`` with its interval; None when a summary lacks them."""
    if not all(isinstance(a.get('n_stopped'), int) for a in arms.values()):
        return None
    return [format_rate(a['n_stopped'], a['n_cases']) for a in arms.values()]


def _duration(seconds: float) -> str:
    return f'{seconds / 60:.0f} min' if seconds >= 90 else f'{seconds:.0f} s'


def readme_results(summary: dict) -> str:
    """A run summary's results section of docs/results.md (markdown), every figure from it."""
    arms, base = summary['arms'], summary.get('baseline')
    first = next(iter(arms.values()))
    tr, data = summary.get('training') or {}, summary.get('data') or {}
    method = f"LoRA (r={tr.get('lora_rank')}, {tr.get('target_modules')}, lr {tr.get('learning_rate'):g})" \
        if tr.get('tuner') == 'lora' else f"a {tr.get('tuner')} fine-tune (lr {tr.get('learning_rate'):g})"
    precision = f", {summary['precision']}" if summary.get('precision') else ''
    lines = [f"The `{summary['profile']}` run ({summary['note']}; `{summary['command']}` at commit "
             f"{summary.get('commit') or 'unknown'}, {summary['machine']}{precision}) trained {summary['model']} with "
             f"{method} on "
             f"{data.get('train_samples')} samples ({data.get('train_conversations')} generated conversations) for "
             f"{tr.get('steps')} steps in {_duration(tr.get('wall_seconds') or 0)}, then evaluated "
             f"{' and '.join(arms)} on {first['n_cases']} held-out cases ({first['n_with_call']} need a call, "
             f"{first['n_without_call']} must not call) through the real `RolePlay` loop. Rates read "
             '`rate [95% Wilson interval] (k/n)`; ↑ higher is better, ↓ lower is better.', '',
             '| metric | ' + ' | '.join(arms) + (f' | Δ vs {base} (verdict)' if base in arms else '') + ' |',
             '|---|' + '---|' * (len(arms) + (base in arms))]
    changes = {name: {c.key: c for c in compare(m, arms[base])} for name, m in arms.items()
               if base in arms and name != base}
    for key, m in METRICS.items():
        if all(arm.get(key) is None for arm in arms.values()):
            continue
        row = [m.heading, *(metric_cell(arm, key) for arm in arms.values())]
        if changes:
            row.append('; '.join(f'{c[key].delta:+.2f} ({c[key].verdict})' if c[key].delta is not None else '–'
                                 for c in changes.values()))
        lines.append('| ' + ' | '.join(row) + ' |')
    if (loops := loop_cells(arms)):
        lines.append('| ' + ' | '.join([LOOPS, *loops, *(['–'] if changes else [])]) + ' |')
    per_language = summary.get('per_language') or {}
    if per_language:
        keys = ('tool_selection_acc', 'args_exact_acc', 'false_positive_rate', 'invalid_call_rate')
        lines += ['', 'The same metrics per language of the case (the targets hold for each language):', '',
                  '| model | language | cases | ' + ' | '.join(METRICS[k].heading for k in keys)
                  + ' |', '|' + '---|' * (len(keys) + 3)]
        for name, langs in per_language.items():
            for lang, m in sorted(langs.items()):
                lines.append(f'| {name} | {lang} | {m["n_cases"]} | '
                             + ' | '.join(metric_cell(m, k) for k in keys) + ' |')
    errors = summary.get('argument_errors') or {}
    if errors:
        kinds = list(next(iter(errors.values())))
        lines += ['', 'What is wrong with the arguments of the calls that named the right tool (notebook 05; a call '
                  'can show several kinds):', '', '| | ' + ' | '.join(errors) + ' |', '|---|' + '---|' * len(errors)]
        lines += ['| ' + ' | '.join([kind, *(str(counts.get(kind, '–')) for counts in errors.values())]) + ' |'
                  for kind in kinds]
    timings = summary.get('timings') or {}
    if timings:
        lines += ['', 'Wall time per notebook of that run:', '',
                  '| ' + ' | '.join(k.split('_')[0] for k in timings) + ' | total |',
                  '|' + '---|' * (len(timings) + 1),
                  '| ' + ' | '.join(_duration(v) for v in timings.values()) + f' | {_duration(sum(timings.values()))} |']
    return '\n'.join(lines) + '\n'


def _rel(path: Path) -> Path:
    from .environment import repo_root
    path = Path(path)
    return path.resolve().relative_to(repo_root()) if path.resolve().is_relative_to(repo_root()) else path


def summaries(folder: str | Path | None = None) -> dict[Path, dict]:
    """Every committed run summary (``results/*-run.json``), checked (:func:`load_summary`), by path."""
    from .environment import repo_root
    folder = Path(folder or repo_root() / 'results')
    return {path: load_summary(path) for path in sorted(folder.glob('*-run.json'))}


def _notebooks(timings: dict) -> str:
    names = [k.split('_')[0] for k in timings]
    return f'notebook {names[0]}' if len(names) == 1 else f'notebooks {names[0]}-{names[-1]}'


KNOB_SHORT = {'sft_steps': 'training steps', 'ms_agent_steps': 'ms_agent-format steps', 'early_arm': 'equal-steps arm',
              'eval_cases': 'cases', 'sample_turns': 'sampled turns', 'samples_per_turn': 'replies a turn',
              'dpo_steps': 'preference steps'}  # helpers.budget.KNOBS in a few words, for the README's time box


def _measured_on(found: dict[Path, dict]) -> list[tuple[str, tuple[Path, dict] | None]]:
    """Per kind of machine (:data:`MACHINES`): its label and the first run summary with timings measured on it."""
    return [(label, next(((p, s) for p, s in found.items() if s['profile'] == profile and s.get('timings')
                          and (precision is None or s.get('precision') == precision)), None))
            for profile, precision, label in MACHINES]


def time_box(found: dict[Path, dict]) -> str:
    """The README's "how long on your machine" box: one row per kind of machine (:data:`MACHINES`), the total
    wall time of the run summary measured on it (which notebooks, which run), or "not measured yet"."""
    lines = ['| your machine | `make run` took | measured in |', '|---|---|---|']
    for label, match in _measured_on(found):
        if not match:
            lines.append(f'| {label} | not measured yet | no committed run summary |')
            continue
        path, summary = match
        t = summary['timings']
        scaled = summary.get('scaled') or {}
        cut = (' (recipe scaled to the budget: ' + ', '.join(f'{KNOB_SHORT.get(k, k)} {a} → {b}' for k, (a, b)
                                                              in scaled.items()) + ')') if scaled else ''
        forced = (' — fp32 forced (`AFT_PRECISION=fp32`) on a CPU that has bf16 units: a CPU without them may be '
                  'slower' if summary.get('precision') == 'fp32' and 'bf16' in summary['machine'] else '')
        lines.append(f"| {label} | {_duration(sum(t.values()))} for {_notebooks(t)}{cut} | `{_rel(path)}`: "
                     f"{summary['note']}, commit {summary.get('commit') or 'unknown'}, {summary['machine']}{forced} |")
    return '\n'.join(lines) + '\n'


def notebook_times(found: dict[Path, dict], notebook: str) -> str:
    """The line a notebook's introduction shows: its measured wall time on each kind of machine with a committed
    run summary that ran it (the summary named), the others as not measured yet."""
    parts = [f"{label}: {_duration(match[1]['timings'][notebook])} (`{_rel(match[0])}`)" if match and
             notebook in match[1]['timings'] else f'{label}: not measured yet' for label, match in _measured_on(found)]
    return '**Measured run time** of this notebook — ' + '; '.join(parts) + '.\n'


def update_notebooks(found: dict[Path, dict], root: Path) -> list[Path]:
    """Write :func:`notebook_times` between the ``nbtimes`` markers of each notebook's introduction (the first
    markdown cell holding them); returns the notebooks that changed, written atomically."""
    from .environment import write_text_atomic
    changed = []
    for nb in sorted((root / 'notebooks').glob('[0-9][0-9]_*.ipynb')):
        data = json.loads(nb.read_text(encoding='utf-8'))
        cell = next((c for c in data['cells'] if c['cell_type'] == 'markdown'
                     and NB_TIMES_BEGIN in ''.join(c['source'])), None)
        if cell is None:
            raise ValueError(f'{nb}: no {NB_TIMES_BEGIN!r} line in its introduction; add it with {NB_TIMES_END!r}')
        text = ''.join(cell['source'])
        start = text.index(NB_TIMES_BEGIN) + len(NB_TIMES_BEGIN) + 1
        stop = text.index(NB_TIMES_END, start)
        new = text[:start] + notebook_times(found, nb.name) + text[stop:]
        if new != text:
            cell['source'] = new.splitlines(keepends=True)
            write_text_atomic(nb, json.dumps(data, indent=1, ensure_ascii=False) + '\n')
            changed.append(nb)
    return changed


def headline(summary: dict, path: Path) -> str:
    """The README's headline: the committed run's headline metrics, every arm side by side."""
    arms = summary['arms']
    keys = ('tool_selection_acc', 'args_exact_acc', 'false_positive_rate', 'invalid_call_rate')
    first = next(iter(arms.values()))
    lines = [f"The committed `{summary['profile']}` run (`{_rel(path)}`: {summary['note']}, commit "
             f"{summary.get('commit') or 'unknown'}, {summary['machine']}, {summary['model']}) on "
             f"{first['n_cases']} held-out cases through the real `RolePlay` loop; each cell reads "
             '`rate [95% interval] (k/n)`:', '',
             '| | ' + ' | '.join(arms) + ' |', '|---|' + '---|' * len(arms)]
    lines += [f'| {METRICS[k].heading} | ' + ' | '.join(metric_cell(a, k) for a in arms.values())
              + ' |' for k in keys if any(a.get(k) is not None for a in arms.values())]
    if (loops := loop_cells(arms)):
        lines.append(f'| {LOOPS} | ' + ' | '.join(loops) + ' |')
    return '\n'.join(lines) + '\n'


def update_docs(summary_path: str | Path, root: str | Path | None = None) -> list[Path]:
    """Regenerate, from the committed run summaries, the results section of ``summary_path`` in
    ``docs/results.md`` (added when it has none), the README's headline (from ``results/cpu-run.json``), its
    time box and the measured times in every notebook's introduction (every summary); returns the files that
    changed. Every summary is checked before any file is
    touched."""
    from .environment import repo_root
    root = Path(root or repo_root())
    summary_path = Path(summary_path)
    summary = load_summary(summary_path)
    found = summaries(root / 'results')
    head = root / HEADLINE_SUMMARY
    changed = []
    rel = _rel(summary_path)
    if replace_section(root / RESULTS_DOC, README_BEGIN.format(path=rel), README_END, readme_results(summary),
                       key=str(rel), title=f'The run of `{rel}`'):
        changed.append(root / RESULTS_DOC)
    readme = root / 'README.md'
    parts = [(TIMES_BEGIN, TIMES_END, time_box(found))]
    if head in found:
        parts.append((HEADLINE_BEGIN.format(path=_rel(head)), HEADLINE_END, headline(found[head], head)))
    if any([replace_section(readme, begin, end, body) for begin, end, body in parts]):
        changed.append(readme)
    return changed + update_notebooks(found, root)


def replace_section(doc: str | Path, begin: str, end: str, body: str, key: str = '', title: str = '') -> bool:
    """Put ``body`` between the document's ``begin`` line (matched by its marker, ``<!-- name:begin``, and — when
    given — ``key`` on the same line) and ``end``; True when the text changed. With ``title``, a document without
    that section gets it appended under a heading of that title; without, a missing section is a ValueError.
    Written atomically, and only when it changed."""
    import re
    from .environment import write_text_atomic
    doc = Path(doc)
    text = doc.read_text(encoding='utf-8') if doc.exists() else ''
    marker = begin[:begin.index(':begin') + len(':begin')]  # '<!-- results:begin', without what follows
    line = re.compile(re.escape(marker) + r'[^\n]*' + (re.escape(key) if key else '') + r'[^\n]*\n')
    found = line.search(text)
    stop = text.find(end, found.end()) if found else -1
    if found and stop >= 0:
        new = text[:found.start()] + begin + '\n' + body + text[stop:]
    elif title:
        new = text.rstrip('\n') + ('\n\n' if text.strip() else '') + f'## {title}\n\n{begin}\n{body}{end}\n'
    else:
        raise ValueError(f'{doc} has no section {marker} … {end}')
    if new != text:
        write_text_atomic(doc, new)
    return new != text
