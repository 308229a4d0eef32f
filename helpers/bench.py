"""Benchmarks: speed figures printed side by side (``make bench``, ``python -m helpers bench [part …]``).

* ``convert`` — records/s converting 30,000 generated raw ms_agent records;
* ``train`` — training throughput of the ``cpu`` preset and of the original guide's preset (its
  hyper-parameters on the same small model, data and machine): tokens/s, s/sample, s/step, peak memory;
* ``serve`` — merge time, then for each CPU backend installed: time to the first healthy response and
  request latency p50/p95 over 50 requests with the AgentFabric prompt;
* ``eval`` — evaluation throughput (cases/s) through the real RolePlay loop;
* ``pipeline`` — wall time of the whole ``tiny`` pipeline.

Nothing here asserts a target: the figures are printed, and written to ``runs/bench/bench.json``.
"""
from __future__ import annotations

import json
import statistics
import tempfile
import time
from pathlib import Path

from .environment import runs_root

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


def bench_convert(work: Path, n: int = 30000) -> list[dict]:
    from .convert import convert_file, to_ms_agent
    from .synth import Generator
    raw = work / 'raw.jsonl'
    gen = Generator(seed=11)
    t = time.time()
    with open(raw, 'w', encoding='utf-8') as f:
        for conv in gen.conversations('train', n):
            f.write(json.dumps(to_ms_agent(conv), ensure_ascii=False) + '\n')
    made = time.time() - t
    rows = []
    for fmt in ('messages', 'agentfabric'):
        t = time.time()
        report = convert_file(raw, work / f'out-{fmt}.jsonl', fmt=fmt)
        secs = time.time() - t
        rows.append({'format': fmt, 'records': report.read, 'rejected': len(report.rejected),
                     'samples': report.written, 'seconds': round(secs, 1), 'records/s': round(report.read / secs),
                     'generation s': round(made, 1)})
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
    rows_all = [json.loads(line) for line in (data / 'train.jsonl').read_text().splitlines()]
    mean_tokens = statistics.mean(token_lengths(rows_all[:100], AutoTokenizer.from_pretrained(model)))
    rows = []
    for name in ('cpu', 'original-guide'):
        cfg = preset(name, model=model, model_type=spec.model_type, template=spec.template,
                     train_file=str(data / 'train.jsonl'), output_dir=str(work / f'train-{name}'), max_steps=steps,
                     eval_steps=10_000, save_steps=10_000, logging_steps=1, general_dataset=None, general_mix_ratio=0)
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
    out = Path(out_dir or runs_root() / 'bench')
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
    (out / 'bench.json').write_text(json.dumps(results, indent=2))
    print(f'\nwritten to {out / "bench.json"}')
    return results
