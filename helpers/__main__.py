"""Command line: ``python -m helpers <command> …`` (``--help`` on any command lists its options)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def cmd_prompt(args) -> int:
    from .agentfabric import CaseError, EvalCase
    try:
        with open(args.case, encoding='utf-8') as f:
            text = f.read()
        try:
            obj = json.loads(text)
        except ValueError:  # a JSONL file of cases: take its first line
            obj = json.loads(text.strip().splitlines()[0])
        case = EvalCase.from_dict(obj)
    except (OSError, ValueError, CaseError) as e:
        print(f'error: cannot read a case from {args.case}: {e}', file=sys.stderr)
        return 2
    if (args.model_output is None) != (args.observation is None):
        print('error: give --model-output and --observation together (both describe the second turn)',
              file=sys.stderr)
        return 2
    messages = case.messages(args.model_output, args.observation)
    print(json.dumps(messages, ensure_ascii=False, indent=2))
    return 0


def cmd_prepare_model(args) -> int:
    from .models import ModelUnavailable, prepare_model
    try:
        print(prepare_model(args.model))
    except ModelUnavailable as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    return 0


def cmd_pipeline(args) -> int:
    from .environment import ProfileError, RunNotFound
    from .pipeline import PipelineError, run_pipeline
    params = {}
    for item in args.p or []:
        key, sep, value = item.partition('=')
        if not sep:
            print(f'error: -p takes name=value, got {item!r}', file=sys.stderr)
            return 2
        try:
            params[key] = json.loads(value)
        except ValueError:
            params[key] = value
    try:
        results = run_pipeline(args.profile, args.run_dir, params, only=args.only, start_from=args.start_from,
                               force=args.force, live_output=not args.quiet)
    except (PipelineError, ProfileError, RunNotFound) as e:
        print(f'error: {e}', file=sys.stderr)
        return 1
    for r in results:
        print(f'{r.notebook:28s} {r.seconds:8.1f} s  {r.status}')
    print(f'{"total":28s} {sum(r.seconds for r in results):8.1f} s')
    return 0


def cmd_kernel(args) -> int:
    from .environment import KERNEL_DISPLAY_NAME, install_kernel
    path = install_kernel(args.prefix)
    print(f'kernel "{KERNEL_DISPLAY_NAME}" ({sys.executable}) registered in {path}')
    return 0


def cmd_agentfabric_app(args) -> int:
    from .agentfabric_app import run_app
    from .environment import RunNotFound, find_run, resolve_profile
    from .serving import ServerError
    try:
        run = find_run(resolve_profile(args.profile)[0], args.run_dir)
        run_app(run, args.app_python, args.app_dir, args.port, args.model_port, args.model)
    except (RunNotFound, ServerError, FileNotFoundError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 1
    return 0


def cmd_results(args) -> int:
    from .environment import repo_root, write_text_atomic
    from .report import results_summary, update_readme
    summary = Path(args.summary or repo_root() / 'results' / 'cpu-run.json')
    if args.run_dir:
        try:
            data = results_summary(args.run_dir, args.command)
        except FileNotFoundError as e:
            print(f'error: {e}', file=sys.stderr)
            return 1
        write_text_atomic(summary, json.dumps(data, indent=2, ensure_ascii=False) + '\n')
        print(f'wrote {summary}')
    if args.readme:
        changed = update_readme(summary, repo_root() / 'README.md')
        print(f'README.md results section {"regenerated" if changed else "already up to date"} from {summary}')
    if not (args.run_dir or args.readme):
        print('error: give --run-dir RUN (write the summary), --readme (regenerate README.md), or both',
              file=sys.stderr)
        return 2
    return 0


def cmd_convert(args) -> int:
    from .convert import convert_file
    instruction = None
    if args.instruction:
        try:
            instruction = json.loads(args.instruction)
        except ValueError:
            instruction = args.instruction
    pool = None
    if instruction is None:
        from .catalog import load_instructions
        pool = load_instructions()
    try:
        report = convert_file(args.input, args.output, args.to, instruction, pool)
    except OSError as e:
        print(f'error: cannot read {args.input}: {e}', file=sys.stderr)
        return 2
    if args.report:
        with open(args.report, 'w', encoding='utf-8') as f:
            json.dump(report.to_dict(), f, ensure_ascii=False, indent=2)
    s = report.summary()
    print(f"read {s['read']}, converted {s['converted']}, rejected {s['rejected']}, "
          f"wrote {s['samples_written']} samples to {args.output}", file=sys.stderr)
    for r in report.rejected[:10]:
        print(f"  rejected line {r['line']} ({r['id']}): {r['reason']}", file=sys.stderr)
    return 0


def cmd_synth(args) -> int:
    from .synth import Generator, SynthConfig
    cfg = SynthConfig(langs=tuple(args.langs), max_tools=args.max_tools)
    gen = Generator(cfg, args.seed)
    counts = dict(zip(('train', 'val', 'test'), _split_counts(args.n, cfg.split_ratios)))
    if args.split != 'all':
        counts = {args.split: args.n}
    from .agentfabric import to_case
    n = 0
    with open(args.out, 'w', encoding='utf-8') as f:
        for split, k in counts.items():
            for conv in gen.conversations(split, k):
                f.write(json.dumps(to_case(conv).to_dict() if args.cases else conv.to_dict(), ensure_ascii=False)
                        + '\n')
                n += 1
    print(f'wrote {n} {"cases" if args.cases else "conversations"} to {args.out} ({counts})', file=sys.stderr)
    return 0


def _split_counts(n: int, ratios) -> list[int]:
    counts = [int(n * r) for r in ratios]
    counts[0] += n - sum(counts)
    return counts


def cmd_evaluate(args) -> int:
    from .agentfabric import CaseError, load_cases
    from .evaluation import evaluate
    try:
        cases = load_cases(args.cases)
    except (OSError, CaseError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    metrics = evaluate(cases, args.base_url, args.model, args.out, workers=args.workers, max_tokens=args.max_tokens,
                       max_llm_calls=args.max_llm_calls)
    print(json.dumps({k: v for k, v in metrics.items() if k not in ('counts', 'ci95')}, indent=2), file=sys.stderr)
    return 0


def cmd_score(args) -> int:
    from .agentfabric import CaseError
    from .evaluation import score_files
    try:
        metrics = score_files(args.cases, args.predictions)
    except (OSError, ValueError, CaseError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    print(json.dumps(metrics, indent=2))
    return 0


def cmd_bench(args) -> int:
    from .bench import PARTS, run_bench
    parts = args.parts or list(PARTS)
    unknown = set(parts) - set(PARTS)
    if unknown:
        print(f'error: unknown part(s) {sorted(unknown)}: choose from {", ".join(PARTS)}', file=sys.stderr)
        return 2
    run_bench(parts, args.out)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='python -m helpers', description=__doc__)
    sub = parser.add_subparsers(dest='command', required=True)

    p = sub.add_parser('prompt', help='print the messages RolePlay sends for one evaluation case (JSON)')
    p.add_argument('--case', required=True, help='CASE.json: one evaluation case')
    p.add_argument('--model-output', help='the model\'s first-turn output, to render the second turn')
    p.add_argument('--observation', help='the tool result that follows that output')
    p.set_defaults(func=cmd_prompt)

    p = sub.add_parser('prepare-model', help='build, dequantize or download a model; prints its folder')
    p.add_argument('model', help='tiny-qwen2 | smollm2-135m | qwen2.5-7b-instruct | qwen-7b-chat | a folder')
    p.set_defaults(func=cmd_prepare_model)
    p = sub.add_parser('kernel', help='register this Python as the notebooks\' Jupyter kernel (user scope)')
    p.add_argument('--prefix', help='register under this prefix instead of the user\'s Jupyter folder')
    p.set_defaults(func=cmd_kernel)

    p = sub.add_parser('agentfabric-app', help='serve a run\'s model and start the AgentFabric app against it '
                                               '(use scripts/agentfabric_app.sh, which also sets up the app)')
    p.add_argument('--app-python', required=True, help='the Python of the app\'s own environment')
    p.add_argument('--app-dir', required=True, help='apps/agentfabric of modelscope-agent v0.7.2')
    p.add_argument('--profile', default='auto', help='whose latest run to use (runs/latest-<profile>)')
    p.add_argument('--run-dir', help='a run directory instead of the latest run of the profile')
    p.add_argument('--model', choices=['finetuned', 'base'], default='finetuned')
    p.add_argument('--port', type=int, default=7860, help='the app\'s port on 127.0.0.1')
    p.add_argument('--model-port', type=int, default=8000, help='our model server\'s port on 127.0.0.1')
    p.set_defaults(func=cmd_agentfabric_app)

    p = sub.add_parser('results', help='the run summary the README cites, and the README results section from it')
    p.add_argument('--run-dir', help='a finished run: write its summary (metrics, timings, commit, command)')
    p.add_argument('--summary', help='the summary file (default: results/cpu-run.json)')
    p.add_argument('--command', default='make run', help='the command the run was made with (recorded as is)')
    p.add_argument('--readme', action='store_true', help='regenerate README.md\'s results section from the summary')
    p.set_defaults(func=cmd_results)

    p = sub.add_parser('convert', help='raw ms_agent JSONL -> AgentFabric training samples')
    p.add_argument('--input', required=True, help='RAW.jsonl in the ms_agent "conversations" format')
    p.add_argument('--output', required=True, help='OUT.jsonl, one sample per RolePlay request')
    p.add_argument('--to', choices=['messages', 'agentfabric'], default='messages',
                   help='messages: ms-swift messages; agentfabric: from/value conversations')
    p.add_argument('--report', help='REPORT.json with counts and every rejected line')
    p.add_argument('--instruction', help='role instruction (text or JSON role config); default: a stable pick '
                                         'from data/instructions.json')
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser('synth', help='generate AgentFabric conversations from the bundled tool catalog')
    p.add_argument('--n', type=int, required=True, help='number of conversations')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--out', required=True, help='FILE.jsonl of conversations (meta.split says the split)')
    p.add_argument('--split', choices=['all', 'train', 'val', 'test'], default='all',
                   help='all: 80/10/10 over train/val/test')
    p.add_argument('--langs', nargs='+', choices=['zh', 'en'], default=['zh', 'en'])
    p.add_argument('--max-tools', type=int, default=4)
    p.add_argument('--cases', action='store_true', help='write evaluation cases (last turn of each) instead')
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser('evaluate', help='run cases through the real RolePlay loop against a server')
    p.add_argument('--cases', required=True, help='CASES.jsonl (evaluation case format)')
    p.add_argument('--base-url', required=True, help='OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1')
    p.add_argument('--model', required=True, help='served model name')
    p.add_argument('--out', required=True, help='DIR for predictions.jsonl and metrics.json')
    p.add_argument('--workers', type=int, default=8, help='cases run at the same time')
    p.add_argument('--max-tokens', type=int, default=96, help='cap on new tokens per LLM call')
    p.add_argument('--max-llm-calls', type=int, default=4,
                   help='stop a case whose model keeps calling tools after this many requests (RolePlay: 10)')
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser('score', help='metrics JSON for predictions (stdout carries only the JSON)')
    p.add_argument('--cases', required=True)
    p.add_argument('--predictions', required=True)
    p.set_defaults(func=cmd_score)

    p = sub.add_parser('bench', help='print speed figures: convert, train, serve, eval, pipeline')
    p.add_argument('parts', nargs='*', help='which parts (default: all)')
    p.add_argument('--out', help='folder for bench.json (default: runs/bench)')
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser('pipeline', help='run the notebooks in order with papermill into one run directory')
    p.add_argument('--profile', default='auto', help='auto | tiny | cpu | gpu')
    p.add_argument('--run-dir', help='run directory (default: a new runs/<time>-<profile>, or with --from/--only '
                                     'after 00 the latest run of the profile, runs/latest-<profile>)')
    p.add_argument('--only', nargs='+', metavar='NN', help='only these notebook numbers, e.g. --only 00 01')
    p.add_argument('--from', dest='start_from', metavar='NN', help='start at this notebook, e.g. --from 02')
    p.add_argument('--force', action='store_true', help='rerun notebooks already done in this run dir')
    p.add_argument('--quiet', action='store_true', help='do not stream cell output to the terminal')
    p.add_argument('-p', action='append', metavar='NAME=VALUE', help='extra notebook parameter (JSON value)')
    p.set_defaults(func=cmd_pipeline)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == '__main__':
    sys.exit(main())
