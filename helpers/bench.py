"""Benchmarks: speed figures printed side by side (``make bench``, ``python -m helpers bench [part …]``).

* ``convert`` — records/s converting 30,000 generated raw ms_agent records with ``helpers convert``, side by
  side with the original guide's published conversion script on the same file (taken from the guide's
  seed document at bench time: ``../shared/seeds`` next to the repository, or ``$HELPERS_GUIDE_SEEDS``);
* ``train`` — training throughput of the ``cpu`` preset and of the original guide's preset (its
  hyper-parameters on the same small model, data and machine): tokens/s, s/sample, s/step, peak memory;
* ``serve`` — merge time, then for each CPU backend installed: time to the first healthy response and
  request latency p50/p95 over 50 requests with the AgentFabric prompt;
* ``eval`` — evaluation throughput (cases/s) through the real RolePlay loop;
* ``pipeline`` — wall time of the whole ``tiny`` pipeline.

Nothing here asserts a target: the figures are printed, and written to ``runs/bench/bench.json``.
"""
from __future__ import annotations

import ast
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from .environment import repo_root
from .jsonl import read_jsonl, write_json, write_jsonl

PARTS = ('convert', 'train', 'serve', 'eval', 'pipeline')


def _print_table(title: str, rows: list[dict]) -> None:
    print(f'\n== {title}')
    if not rows:
        return
    cols = list(dict.fromkeys(k for r in rows for k in r))
    widths = {c: max(len(c), *(len(str(r.get(c, ''))) for r in rows)) for c in cols}
    print('  '.join(c.ljust(widths[c]) for c in cols))
    for r in rows:
        print('  '.join(str(r.get(c, '')).ljust(widths[c]) for c in cols), flush=True)


GUIDE_SEEDS_ENV = 'HELPERS_GUIDE_SEEDS'  # the seed document holding the guide's conversion script, or its folder
_PYTHON_BLOCK = re.compile(r'^```python[^\S\n]*\n(.*?)^```', re.M | re.S)


@dataclass
class GuideScript:
    """The guide's published ms_agent → AgentFabric conversion script, as its seed document prints it."""
    code: str
    source: Path
    input_path: str  # the file it reads and the one it writes, relative to its working folder
    output_path: str


def _open_paths(code: str) -> dict[str, str]:
    """``{mode: path}`` of the ``open(path, 'r'|'w')`` calls whose path is a literal or a module-level name."""
    tree = ast.parse(code)
    names = {t.id: n.value.value for n in tree.body if isinstance(n, ast.Assign) and isinstance(n.value, ast.Constant)
             and isinstance(n.value.value, str) for t in n.targets if isinstance(t, ast.Name)}
    paths = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == 'open' \
                and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant):
            arg = node.args[0]
            path = arg.value if isinstance(arg, ast.Constant) else names.get(getattr(arg, 'id', None))
            if isinstance(path, str):
                paths.setdefault(str(node.args[1].value)[:1], path)
    return paths


def find_guide_script(seeds: str | Path | None = None) -> GuideScript | None:
    """The first ```python block of a seed document that defines ``_process_system`` and opens one file to
    read and one to write; None when there is none (the seed documents are not part of this repository)."""
    where = Path(seeds or os.environ.get(GUIDE_SEEDS_ENV) or repo_root().parent / 'shared' / 'seeds')
    docs = sorted(p for p in where.iterdir() if p.is_file()) if where.is_dir() else [where] if where.is_file() else []
    for doc in docs:
        for block in _PYTHON_BLOCK.finditer(doc.read_text(encoding='utf-8', errors='replace')):
            code = block.group(1)
            if 'def _process_system(' not in code:
                continue
            try:
                paths = _open_paths(code)
            except SyntaxError:
                continue
            if 'r' in paths and 'w' in paths:
                return GuideScript(code, doc, paths['r'], paths['w'])
    return None


def run_guide_script(script: GuideScript, raw: Path, work: Path) -> tuple[float, int]:
    """Run the script on a copy of ``raw`` in a fresh folder: ``(seconds, lines written)``."""
    folder = Path(tempfile.mkdtemp(dir=work, prefix='guide-'))
    try:
        source = folder / script.input_path
        source.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(raw, source)
        (folder / 'guide_convert.py').write_text(script.code, encoding='utf-8')
        t = time.perf_counter()
        done = subprocess.run([sys.executable, 'guide_convert.py'], cwd=folder, capture_output=True, text=True,
                              timeout=1800)
        secs = time.perf_counter() - t
        if done.returncode:
            last = (done.stderr.strip().splitlines() or ['no message'])[-1]
            raise RuntimeError(f"the guide's script failed ({done.returncode}): {last}")
        with open(folder / script.output_path, 'rb') as f:
            return secs, sum(1 for _ in f)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _run_convert(raw: Path, work: Path, fmt: str) -> tuple[float, dict]:
    """``helpers convert`` as a user runs it (a fresh process): ``(seconds, report summary)``."""
    report = work / f'report-{fmt}.json'
    t = time.perf_counter()
    subprocess.run([sys.executable, '-m', 'helpers', 'convert', '--input', str(raw), '--output',
                    str(work / f'out-{fmt}.jsonl'), '--to', fmt, '--report', str(report)],
                   cwd=repo_root(), check=True, capture_output=True, timeout=1800)
    secs = time.perf_counter() - t
    return secs, json.loads(report.read_text(encoding='utf-8'))


def bench_convert(work: Path, n: int = 30000, runs: int = 3) -> list[dict]:
    """Median of ``runs`` runs of each converter, taken in turn so that both see the same machine load."""
    from .convert import to_ms_agent
    from .synth import Generator
    raw = work / 'raw.jsonl'
    t = time.time()
    write_jsonl(raw, (to_ms_agent(conv) for conv in Generator(seed=11).conversations('train', n)))
    made = time.time() - t
    script = find_guide_script()
    times: dict[str, list[float]] = {'messages': [], 'agentfabric': [], 'guide': []}
    reports, guide_lines, guide_error = {}, 0, None
    for _ in range(runs):
        if script and not guide_error:
            try:
                secs, guide_lines = run_guide_script(script, raw, work)
                times['guide'].append(secs)
            except (RuntimeError, OSError, subprocess.TimeoutExpired) as e:
                guide_error = str(e)
        for fmt in ('messages', 'agentfabric'):
            secs, reports[fmt] = _run_convert(raw, work, fmt)
            times[fmt].append(secs)
    guide_rate = n / statistics.median(times['guide']) if times['guide'] else None
    rows = []
    for fmt in ('messages', 'agentfabric'):
        rate = reports[fmt]['read'] / statistics.median(times[fmt])
        rows.append({'converter': f'helpers convert --to {fmt}', 'records': reports[fmt]['read'],
                     'rejected': reports[fmt]['rejected'], 'samples': reports[fmt]['samples_written'],
                     'seconds': round(statistics.median(times[fmt]), 2), 'records/s': round(rate),
                     'vs guide': round(rate / guide_rate, 2) if guide_rate else '',
                     'note': f'median of {runs}; input generated in {made:.1f} s'})
    if guide_rate:
        rows.append({'converter': "the guide's script", 'records': n, 'samples': guide_lines,
                     'seconds': round(statistics.median(times['guide']), 2), 'records/s': round(guide_rate),
                     'vs guide': 1.0, 'note': f'median of {runs}; code block of {script.source.name}, run as is'})
    else:
        where = os.environ.get(GUIDE_SEEDS_ENV) or repo_root().parent / 'shared' / 'seeds'
        reason = guide_error or (f'no seed document with its conversion script in {where} '
                                 f'(set {GUIDE_SEEDS_ENV} to the document or its folder)')
        rows.append({'converter': "the guide's script", 'note': f'not run: {reason}'})
    return rows


def bench_train(work: Path, steps: int = 6) -> list[dict]:
    """Both presets on SmolLM2-135M and the cpu profile's data; the guide's accumulation of 32 is run as
    single micro-steps and its optimizer step time extrapolated (it is far too slow for a CPU)."""
    from .models import MODELS, prepare_model
    from .synth import PROFILE_DATA, token_lengths, write_splits
    from .training import preset, run_summary, run_training
    from transformers import AutoTokenizer
    data = work / 'data'
    write_splits(data, PROFILE_DATA['cpu'], seed=0)
    spec = MODELS['smollm2-135m']
    model = str(prepare_model(spec.key))
    rows_all = [row for _, row in read_jsonl(data / 'train.jsonl')]
    mean_tokens = statistics.mean(token_lengths(rows_all[:100], AutoTokenizer.from_pretrained(model)))
    rows = []
    for name in ('cpu', 'original-guide'):
        cfg = preset(name, model=model, model_type=spec.model_type, template=spec.template,
                     train_file=str(data / 'train.jsonl'), output_dir=str(work / f'train-{name}'), max_steps=steps,
                     eval_steps=10_000, save_steps=10_000, logging_steps=1)
        cfg.drop_hub_data()  # offline: our data only
        full_accum = cfg.gradient_accumulation_steps
        cfg.global_batch_size = cfg.batch_size  # one micro-batch per step
        result = run_training(cfg, work / f'train-{name}.log', force=True)
        s = run_summary(cfg, result, len(rows_all), mean_tokens)
        per_sample = s['train_runtime_seconds'] / max(1, s['samples_seen'])
        rows.append({'preset': name, 'batch': cfg.batch_size, 'grad ckpt': cfg.gradient_checkpointing,
                     'LoRA r': cfg.lora_rank, 'max_length': cfg.max_length, 'tokens/s': s['tokens_per_second'],
                     's/sample': round(per_sample, 2),
                     's/optimizer step': round(per_sample * cfg.batch_size * full_accum, 1),
                     'effective batch': cfg.batch_size * full_accum, 'peak RSS GiB': s['peak_rss_gib']})
    return rows


def bench_serve(work: Path, n_requests: int = 50) -> list[dict]:
    from openai import OpenAI
    from .agentfabric import load_cases, stop_words
    from .models import MODELS, prepare_model
    from .serving import Server, ServerSpec, installed_backends, merge_lora
    from .synth import PROFILE_DATA, write_splits
    spec = MODELS['smollm2-135m']
    model = str(prepare_model(spec.key))
    rows = []
    adapter = next((p for p in sorted((work / 'train-cpu').glob('checkpoint-*')) if (p / 'adapter_config.json').exists()),
                   None)
    if adapter:
        t = time.time()
        merged = merge_lora(adapter, work / 'merge.log', force=True)
        rows.append({'backend': 'swift export (merge)', 'start s': round(time.time() - t, 1)})
        model = str(merged)
    if not (work / 'data' / 'test_cases.jsonl').exists():
        write_splits(work / 'data', PROFILE_DATA['cpu'], seed=0)
    cases = load_cases(work / 'data' / 'test_cases.jsonl')
    for backend in [b for b in installed_backends() if b != 'vllm']:
        server_spec = ServerSpec(model, served_name='bench', backend=backend, model_type=spec.model_type,
                                 template=spec.template)
        t = time.time()
        with Server(server_spec, work / f'server-{backend}.log') as srv:
            start = time.time() - t
            client = OpenAI(base_url=srv.base_url, api_key='EMPTY')
            lat = []
            for i in range(n_requests):
                case = cases[i % len(cases)]
                t = time.time()
                client.chat.completions.create(model='bench', messages=case.messages(), stop=stop_words('bench'),
                                               max_tokens=64, temperature=0)
                lat.append(time.time() - t)
        q = statistics.quantiles(lat, n=20)
        rows.append({'backend': backend, 'start s': round(start, 1), 'requests': n_requests,
                     'p50 s': round(statistics.median(lat), 2), 'p95 s': round(q[18], 2)})
    return rows


def bench_eval(work: Path, n_cases: int = 48) -> list[dict]:
    from .agentfabric import load_cases
    from .evaluation import evaluate
    from .models import MODELS, prepare_model
    from .serving import Server, ServerSpec
    from .synth import PROFILE_DATA, write_splits
    if not (work / 'data' / 'test_cases.jsonl').exists():
        write_splits(work / 'data', PROFILE_DATA['cpu'], seed=0)
    cases = load_cases(work / 'data' / 'test_cases.jsonl')[:n_cases]
    spec = MODELS['smollm2-135m']
    model = next((str(p) for p in sorted(work.glob('train-cpu/checkpoint-*-merged'))), str(prepare_model(spec.key)))
    rows = []
    with Server(ServerSpec(model, served_name='bench', model_type=spec.model_type, template=spec.template),
                work / 'server-eval.log') as srv:
        for workers in (1, 16):
            m = evaluate(cases, srv.base_url, 'bench', work / f'eval-{workers}', workers=workers, max_tokens=64,
                         progress=False)
            rows.append({'model': Path(model).name, 'workers': workers, 'cases': len(cases),
                         'seconds': m['eval']['wall_seconds'], 'cases/s': m['eval']['cases_per_second']})
    return rows


def bench_pipeline(work: Path) -> list[dict]:
    from .pipeline import run_pipeline
    t = time.time()
    results = run_pipeline('tiny', work / 'tiny-run', log=lambda *a: None)
    rows = [{'notebook': r.notebook, 'seconds': round(r.seconds, 1)} for r in results]
    rows.append({'notebook': 'total (tiny pipeline)', 'seconds': round(time.time() - t, 1)})
    return rows


def run_bench(parts=PARTS, out_dir: str | Path | None = None) -> dict:
    out = Path(out_dir or repo_root() / 'runs' / 'bench')
    out.mkdir(parents=True, exist_ok=True)
    results = {}
    with tempfile.TemporaryDirectory(dir=out) as tmp:
        work = Path(tmp)
        for part in parts:
            fn = globals()[f'bench_{part}']
            t = time.time()
            rows = fn(work)
            results[part] = rows
            _print_table(f'{part} ({time.time() - t:.0f} s)', rows)
    write_json(out / 'bench.json', results)
    print(f'\nwritten to {out / "bench.json"}')
    return results
