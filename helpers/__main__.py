"""Command line: ``python -m helpers <command> …`` (``--help`` on any command lists its options).

Bad input gets one line on stderr that says what is wrong, where (file and line) and what to do, and a
non-zero exit: 2 for a bad argument or input file, 1 when the work itself failed (a notebook, every
record or every evaluation case), 130 on Ctrl-C. Arguments and paths are checked before the heavy
imports; outputs are written atomically and never over an input (:mod:`helpers.jsonl`).
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import sys
from pathlib import Path

from .jsonl import JsonlError, PathError, check_input, check_output_dir, check_paths


class UsageError(Exception):
    """A bad argument or input: its message is the one line the user sees (exit 2)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, not the usage block
        self.exit(2, f'error: {self.prog}: {message} (see --help)\n')


def _at_least(minimum: int):
    """An argparse type: a whole number ≥ ``minimum``."""
    def number(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f'expected a whole number, got {text!r}') from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f'must be at least {minimum}, got {value}')
        return value
    return number


def cmd_prompt(args) -> int:
    if (args.model_output is None) != (args.observation is None):
        raise UsageError('give --model-output and --observation together (both describe the second turn)')
    check_input('--case', args.case)
    from .agentfabric import CaseError, EvalCase
    from .jsonl import read_json, read_jsonl
    try:
        obj = read_json(args.case)
    except JsonlError:  # a JSONL file of cases: its first case
        obj = next((value for _, value in read_jsonl(args.case)), None)
    if obj is None:
        raise UsageError(f'--case {args.case} is empty; give one evaluation case as a JSON object')
    try:
        case = EvalCase.from_dict(obj)
    except CaseError as e:
        raise UsageError(f'{args.case}: {e}') from None
    print(json.dumps(case.messages(args.model_output, args.observation), ensure_ascii=False, indent=2))
    return 0


def cmd_prepare_model(args) -> int:
    from .models import ModelUnavailable, prepare_model
    try:
        print(prepare_model(args.model))
    except ModelUnavailable as e:
        raise UsageError(str(e)) from None
    return 0


def _parameter_value(name: str, text: str):
    """``-p NAME=VALUE``: a JSON value; plain text stays a string, but text that starts like a JSON object, list
    or string must be valid JSON (a typo there would otherwise reach the notebook as a string)."""
    from .jsonl import loads
    try:
        return loads(text)
    except ValueError as e:
        if text.lstrip()[:1] in ('{', '[', '"'):
            raise UsageError(f'-p {name}=…: the value looks like JSON but is not valid JSON ({e}); '
                             f'fix it, e.g. -p \'{name}={{"key": 1}}\'') from None
        return text


def cmd_pipeline(args) -> int:
    params = {}
    for item in args.p or []:
        key, sep, value = item.partition('=')
        if not sep or not key:
            raise UsageError(f'-p takes name=value, got {item!r}')
        params[key] = _parameter_value(key, value)
    if args.run_dir:
        check_output_dir('--run-dir', args.run_dir)
    from .pipeline import PipelineError, select
    try:
        select(args.only, args.start_from)  # notebook numbers are checked before the heavy imports
    except PipelineError as e:
        raise UsageError(str(e)) from None
    from .environment import ProfileError, RunNotFound
    from .pipeline import run_pipeline
    from .report import RunFileError
    try:
        results = run_pipeline(args.profile, args.run_dir, params, only=args.only, start_from=args.start_from,
                               force=args.force, live_output=not args.quiet)
    except (ProfileError, RunNotFound, RunFileError) as e:
        raise UsageError(str(e)) from None
    except PipelineError as e:
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
    if not (args.run_dir or args.readme):
        raise UsageError('give --run-dir RUN (write the summary), --readme (regenerate the generated parts of '
                         'README.md and docs/results.md), or both')
    from .environment import repo_root, write_text_atomic
    from .report import RunFileError, results_summary, update_docs
    summary = Path(args.summary or repo_root() / 'results' / 'cpu-run.json')
    try:
        if args.run_dir:
            check_paths({'--summary': summary})
            data = results_summary(args.run_dir, args.command)
            write_text_atomic(summary, json.dumps(data, indent=2, ensure_ascii=False) + '\n')
            print(f'wrote {summary}')
        if args.readme:  # every summary is checked before README.md or docs/ is touched
            changed = update_docs(summary)
            print(f'regenerated from the run summaries: {", ".join(str(p) for p in changed)}' if changed else
                  'README.md and docs/results.md already up to date')
    except RunFileError as e:
        raise UsageError(str(e)) from None
    return 0


def cmd_report(args) -> int:
    from .report import RunFileError, build_report
    try:
        html_path, md_path = build_report(args.run_dir)
    except RunFileError as e:
        raise UsageError(str(e)) from None
    print(f'wrote {html_path} and {md_path}')
    return 0


def cmd_budget(args) -> int:
    from . import budget
    from .environment import resolve_precision
    if args.action == 'calibrate':
        if not args.run_dir:
            raise UsageError('budget calibrate needs --run-dir: a finished cpu run of notebooks 00-06')
        run = Path(args.run_dir)
        if not (run / 'plan.json').exists() or not (run / 'timings.json').exists():
            raise UsageError(f'{run} has no plan.json or timings.json: give a run made by `make run` (notebooks 00-06)')
        try:
            cal = budget.calibrate(run)
        except (OSError, KeyError, ValueError, ZeroDivisionError) as e:
            raise UsageError(f'{run}: cannot calibrate from this run ({type(e).__name__}: {e})') from None
        print(f'{cal.precision}: {json.dumps(cal.units)}')
        print(f'wrote {budget.save_calibration(cal)}')
        return 0
    plan = budget.make_plan(args.profile, resolve_precision(args.precision, False), args.minutes)
    print(budget.describe(plan))
    for row in budget.plan_table(plan):
        print(f"  {row['notebook']:24s} {row['expected on this machine']}")
    return 0


def _instruction(text: str | None):
    """``--instruction``: a JSON role config when it starts with ``{``, else the text itself."""
    if not text:
        return None
    from .agentfabric import CaseError, check_instruction
    from .jsonl import loads
    value = text
    if text.lstrip().startswith('{'):
        try:
            value = loads(text)
        except ValueError as e:
            raise UsageError(f'--instruction looks like a JSON role config but is not valid JSON ({e}); '
                             'give plain text or {"name": …, "description": …, "instruction": …}') from None
    try:
        return check_instruction(value)
    except CaseError as e:
        raise UsageError(f'--instruction: {e}') from None


def cmd_convert(args) -> int:
    check_input('--input', args.input)
    instruction = _instruction(args.instruction)
    from .catalog import DATA_DIR, DATA_FILES, load_instructions
    pool_file = DATA_DIR / DATA_FILES['instructions'] if instruction is None else None
    check_paths({'--output': args.output, '--report': args.report},
                {'--input': args.input, 'the instruction pool': pool_file})
    from .convert import convert_file
    from .jsonl import write_json
    pool = load_instructions(pool_file) if pool_file else None
    try:
        report = convert_file(args.input, args.output, args.to, instruction, pool, args.keep_suspicious)
        if args.report:
            write_json(args.report, report.to_dict())
    except OSError as e:
        where = f' ({e.filename})' if e.filename else ''
        raise UsageError(f'cannot convert {args.input} into {args.output}: {e.strerror or e}{where}') from None
    s = report.summary()
    print(f"read {s['read']}, converted {s['converted']}, rejected {s['rejected']}, "
          f"wrote {s['samples_written']} samples to {args.output}", file=sys.stderr)
    for kind, n, listed in (('rejected', report.n_rejected, report.rejected),
                            ('warning', report.n_warned, report.warned)):
        for r in listed[:10]:
            print(f"  {kind} {args.input}:{r['line']} ({r['id']}): {r['reason']}", file=sys.stderr)
        if n > 10:
            print(f'  … and {n - 10} more' + (f' (in {args.report})' if args.report else
                                              ' (--report REPORT.json lists them)'), file=sys.stderr)
    if s['read'] == 0:
        print(f'warning: {args.input} holds no records', file=sys.stderr)
    elif s['converted'] == 0:
        print(f'error: none of the {s["read"]} records of {args.input} could be converted (reasons above)',
              file=sys.stderr)
        return 1
    return 0


def _tracked_file(path: str) -> str | None:
    """The repository path of ``path`` when it is a file this checkout tracks (README.md, a module …); outside a
    git checkout, any existing file of the repository outside ``runs/``."""
    import subprocess
    from .environment import repo_root, runs_root
    real, root = Path(os.path.realpath(path)), repo_root()
    if not real.is_file() or not real.is_relative_to(root) or any(
            real.is_relative_to(Path(os.path.realpath(r))) for r in (root / 'runs', runs_root())):
        return None
    rel = str(real.relative_to(root))
    try:
        listed = subprocess.run(['git', '-C', str(root), 'ls-files', '--error-unmatch', '--', rel],
                                capture_output=True, timeout=10)
        known = subprocess.run(['git', '-C', str(root), 'rev-parse', '--git-dir'], capture_output=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return rel
    return rel if listed.returncode == 0 or known.returncode != 0 else None


def cmd_synth(args) -> int:
    from .catalog import DATA_DIR, DATA_FILES
    from .synth import MAX_CONVERSATIONS, OWNED_FILES
    if args.n > MAX_CONVERSATIONS:
        raise UsageError(f'--n {args.n:,} is more than one call generates (at most {MAX_CONVERSATIONS:,} '
                         'conversations); generate in parts with different --seed values')
    check_paths({'--out': args.out}, {f'data file {name}': DATA_DIR / name for name in DATA_FILES.values()})
    tracked = _tracked_file(args.out)
    if tracked and tracked not in OWNED_FILES and not args.force:
        raise UsageError(f'--out {args.out} is a file of this repository ({tracked}); write to a new file or under '
                         'runs/, or pass --force to replace it')
    from .agentfabric import to_case
    from .jsonl import write_jsonl
    from .synth import Generator, SynthConfig
    cfg = SynthConfig(langs=tuple(args.langs), max_tools=args.max_tools)
    gen = Generator(cfg, args.seed)
    counts = dict(zip(('train', 'val', 'test'), _split_counts(args.n, cfg.split_ratios)))
    if args.split != 'all':
        counts = {args.split: args.n}
    rows = ((to_case(conv).to_dict() if args.cases else conv.to_dict())  # one at a time: memory stays flat
            for split, k in counts.items() for conv in map(functools.partial(gen.conversation, split), range(k)))
    try:
        n = write_jsonl(args.out, rows)
    except OSError as e:
        raise UsageError(f'cannot write --out {args.out}: {e.strerror or e}') from None
    print(f'wrote {n} {"cases" if args.cases else "conversations"} to {args.out} ({counts})', file=sys.stderr)
    return 0


def _split_counts(n: int, ratios) -> list[int]:
    counts = [int(n * r) for r in ratios]
    counts[0] += n - sum(counts)
    return counts


def cmd_evaluate(args) -> int:
    from .environment import check_base_url
    try:
        check_base_url(args.base_url)
    except ValueError as e:
        raise UsageError(f'--base-url: {e}') from None
    check_input('--cases', args.cases)
    check_output_dir('--out', args.out)
    if os.path.isdir(args.out):
        check_paths({'predictions.jsonl': os.path.join(args.out, 'predictions.jsonl'),
                     'metrics.json': os.path.join(args.out, 'metrics.json')}, {'--cases': args.cases})
    from .agentfabric import CaseError, load_cases
    try:
        cases = load_cases(args.cases)
    except CaseError as e:
        raise UsageError(str(e)) from None
    if not cases:
        raise UsageError(f'--cases {args.cases} holds no cases; give a JSONL file of evaluation cases')
    from .evaluation import ServerFailing, ServerUnavailable, evaluate, load_predictions
    try:
        metrics = evaluate(cases, args.base_url, args.model, args.out, workers=args.workers,
                           max_tokens=args.max_tokens, max_llm_calls=args.max_llm_calls)
    except (ServerUnavailable, ServerFailing) as e:
        print(f'error: {e}', file=sys.stderr)
        return 1
    print(json.dumps({k: v for k, v in metrics.items() if k not in ('counts', 'ci95')}, indent=2), file=sys.stderr)
    if metrics['n_errors'] == metrics['n_cases']:
        first = next(iter(load_predictions(os.path.join(args.out, 'predictions.jsonl')).values()))
        print(f'error: every one of the {metrics["n_cases"]} cases failed, e.g. {first["id"]}: {first["error"]}; '
              f'see {os.path.join(args.out, "predictions.jsonl")}', file=sys.stderr)
        return 1
    return 0


def cmd_score(args) -> int:
    check_input('--cases', args.cases)
    check_input('--predictions', args.predictions)
    from .agentfabric import DuplicateIdError
    from .evaluation import UnknownIdError, score_files
    try:
        metrics = score_files(args.cases, args.predictions, args.allow_duplicates, args.allow_unknown)
    except DuplicateIdError as e:
        raise UsageError(f'{e} (or pass --allow-duplicates to score the first of each id)') from None
    except UnknownIdError as e:
        raise UsageError(f'{e} (or pass --allow-unknown to leave them out)') from None
    except ValueError as e:  # CaseError and JsonlError included: they name the file and line
        raise UsageError(str(e)) from None
    print(json.dumps(metrics, indent=2))
    return 0


def cmd_bench(args) -> int:
    from .bench import PARTS, run_bench
    parts = args.parts or list(PARTS)
    unknown = set(parts) - set(PARTS)
    if unknown:
        raise UsageError(f'unknown part(s) {sorted(unknown)}: choose from {", ".join(PARTS)}')
    if args.out:
        check_output_dir('--out', args.out)
    if args.eval_cases is not None and args.eval_cases < 1:
        raise UsageError(f'--eval-cases must be at least 1, got {args.eval_cases}')
    if args.run_dir and not (Path(args.run_dir) / 'serve' / 'model.json').is_file():
        raise UsageError(f'--run-dir {args.run_dir}: no serve/model.json there; give a run directory where '
                         'notebook 03 ran, or leave it out')
    run_bench(parts, args.out, eval_cases=args.eval_cases, run_dir=args.run_dir)
    return 0


def cmd_ablate(args) -> int:
    from . import ablate
    if args.list:
        for arm in [*ablate.ARMS.values(), *ablate.PREFERENCE_ARMS.values()]:
            print(f'{arm.name:22s} {arm.why}')
        return 0
    if not args.cases:
        raise UsageError('--cases is required: the test_cases.jsonl of a run (runs/<run>/data/test_cases.jsonl)')
    names = [n for part in args.arms for n in part.split(',') if n] or list(ablate.ARMS)
    unknown = [n for n in names if n not in ablate.ARMS and n not in ablate.PREFERENCE_ARMS]
    if unknown:
        raise UsageError(f'unknown arm(s) {unknown}: `python -m helpers ablate --list` names them')
    if any(n in ablate.PREFERENCE_ARMS for n in names) and not args.report:
        start = Path(args.start_run or '')
        if not args.start_run or not (start / 'serve' / 'model.json').is_file() or \
                not (start / 'data' / 'train_conversations.jsonl').is_file():
            raise UsageError('preference arms start from a finished run: --start-run runs/<run> (notebooks 00-05 '
                             'done, serve/model.json and data/train_conversations.jsonl present)')
    if not Path(args.cases).is_file():
        raise UsageError(f'--cases {args.cases}: no such file; give runs/<run>/data/test_cases.jsonl')
    check_output_dir('--out', args.out)
    if args.reference:
        if not (Path(args.reference) / 'eval' / 'finetuned' / 'metrics.json').is_file():
            raise UsageError(f'--reference {args.reference}: no eval/finetuned/metrics.json there; give a run '
                             'where notebook 05 finished')
        if args.reference_arm not in ablate.ARMS:
            raise UsageError(f'--reference-arm {args.reference_arm}: not an arm; `python -m helpers ablate --list`')
    from .report import RunFileError
    try:  # the runs and arms read are checked (report.load_run_file): a corrupt one is named, nothing regenerated
        if args.reference:
            ablate.from_run(args.reference, args.out, args.reference_arm)
        if args.report and args.start_run and (Path(args.start_run) / 'eval' / 'finetuned' / 'metrics.json').is_file():
            ablate.start_arm(args.start_run, args.out, args.cases)  # the row the preference arms compare with
        results = (ablate.collect(args.out, args.cases) if args.report else
                   ablate.run(names, args.cases, args.out, args.profile, start_run=args.start_run))
    except RunFileError as e:
        raise UsageError(str(e)) from None
    print(ablate.markdown(results) if args.markdown else ablate.table(results).to_string())
    for r in results:
        if r.get('curve'):
            print(f"\nlearning curve of {r['arm']['name']}:\n{ablate.curve_markdown(r)}")
    if args.readme:
        from .environment import repo_root
        from .report import replace_section
        try:
            record, begin, end = ablate.record_for(results)
        except ValueError as e:
            raise UsageError(str(e)) from None
        saved = ablate.save(results, args.cases, record)
        body = ablate.readme_section(json.loads(saved.read_text()))
        changed = replace_section(repo_root() / ablate.DOC, begin, end, body)
        print(f'wrote {saved}; {ablate.DOC} ablation table {"regenerated" if changed else "already up to date"}')
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog='python -m helpers', description=__doc__)
    sub = parser.add_subparsers(dest='command', required=True)
    count = _at_least(1)

    p = sub.add_parser('prompt', help='print the messages RolePlay sends for one evaluation case (JSON)')
    p.add_argument('--case', required=True, help='CASE.json: one evaluation case (or a JSONL file: its first)')
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

    p = sub.add_parser('results', help='a run summary (results/<name>-run.json), and the parts of README.md and '
                                       'docs/results.md generated from the summaries')
    p.add_argument('--run-dir', help='a finished run: write its summary (metrics, timings, precision, commit, command)')
    p.add_argument('--summary', help='the summary file (default: results/cpu-run.json; e.g. results/cpu-fp32-run.json '
                                     'for a CPU without bf16 units, results/tiny-run.json)')
    p.add_argument('--command', default='make run', help='the command the run was made with (recorded as is)')
    p.add_argument('--readme', action='store_true', help='regenerate the summary\'s section of docs/results.md, and '
                   'README.md\'s headline (results/cpu-run.json) and "how long on your machine" box (every summary)')
    p.set_defaults(func=cmd_results)

    p = sub.add_parser('report', help='(re)build a run\'s report.html and report.md from its files')
    p.add_argument('--run-dir', required=True, help='the run directory (runs/<run>)')
    p.set_defaults(func=cmd_report)

    p = sub.add_parser('budget', help='how long the series takes on this machine (plan), or measure a run\'s '
                                      'unit costs into results/speed-calibration.json (calibrate)')
    p.add_argument('action', choices=['plan', 'calibrate'])
    p.add_argument('--profile', choices=['cpu', 'tiny'], default='cpu')
    p.add_argument('--precision', choices=['auto', 'bf16', 'fp32'], default='auto')
    p.add_argument('--minutes', type=count, help='the time budget (default: 30 with bf16 units, 45 without)')
    p.add_argument('--run-dir', help='calibrate: a finished cpu run of notebooks 00-06, nothing from the cache')
    p.set_defaults(func=cmd_budget)

    p = sub.add_parser('convert', help='raw ms_agent JSONL -> AgentFabric training samples')
    p.add_argument('--input', required=True, help='RAW.jsonl in the ms_agent "conversations" format')
    p.add_argument('--output', required=True, help='OUT.jsonl, one sample per RolePlay request')
    p.add_argument('--to', choices=['messages', 'agentfabric'], default='messages',
                   help='messages: ms-swift messages; agentfabric: from/value conversations')
    p.add_argument('--report', help='REPORT.json with counts and every rejected line')
    p.add_argument('--instruction', help='role instruction: text, or a JSON role config {"name", "description", '
                                         '"instruction"}; default: a stable pick from data/instructions.json')
    p.add_argument('--keep-suspicious', action='store_true',
                   help='keep records whose tool texts or user turns hold chat-template tokens (<|im_end|> …) or '
                        'AgentFabric\'s Action:/Observation: lines and section headers, with a warning each, '
                        'instead of rejecting them as possible prompt injections')
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser('synth', help='generate AgentFabric conversations from the bundled tool catalog')
    p.add_argument('--n', type=count, required=True, help='number of conversations (at least 1)')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--out', required=True, help='FILE.jsonl of conversations (meta.split says the split)')
    p.add_argument('--split', choices=['all', 'train', 'val', 'test'], default='all',
                   help='all: 80/10/10 over train/val/test')
    p.add_argument('--langs', nargs='+', choices=['zh', 'en'], default=['zh', 'en'])
    p.add_argument('--max-tools', type=count, default=4, help='most tools offered in one conversation')
    p.add_argument('--cases', action='store_true', help='write evaluation cases (last turn of each) instead')
    p.add_argument('--force', action='store_true', help='replace --out even when it is a file this repository '
                                                        'tracks (README.md, a module …); the tool catalog and '
                                                        'slot files stay refused')
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser('evaluate', help='run cases through the real RolePlay loop against a server')
    p.add_argument('--cases', required=True, help='CASES.jsonl (evaluation case format)')
    p.add_argument('--base-url', required=True, help='OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1')
    p.add_argument('--model', required=True, help='served model name')
    p.add_argument('--out', required=True, help='DIR for predictions.jsonl and metrics.json')
    p.add_argument('--workers', type=count, default=8, help='cases run at the same time')
    p.add_argument('--max-tokens', type=count, default=96, help='cap on new tokens per LLM call')
    p.add_argument('--max-llm-calls', type=count, default=4,
                   help='stop a case whose model keeps calling tools after this many requests (RolePlay: 10)')
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser('score', help='metrics JSON for predictions (stdout carries only the JSON)')
    p.add_argument('--cases', required=True)
    p.add_argument('--predictions', required=True)
    p.add_argument('--allow-duplicates', action='store_true',
                   help='score the first of each repeated case or prediction id (counted in the output)')
    p.add_argument('--allow-unknown', action='store_true',
                   help='leave out predictions whose id is not a case (counted in the output)')
    p.set_defaults(func=cmd_score)

    p = sub.add_parser('bench', help='print speed figures: convert, train, serve, eval, pipeline')
    p.add_argument('parts', nargs='*', help='which parts (default: all)')
    p.add_argument('--out', help='folder for bench.json (default: runs/bench)')
    p.add_argument('--eval-cases', type=int, help='held-out cases per model in the eval part (default: 150)')
    p.add_argument('--run-dir', help='eval part: the base and fine-tuned model of this run (default: the bench\'s own)')
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser('ablate', help='train and evaluate variants of the recipe on the same held-out cases')
    p.add_argument('--arms', nargs='*', default=[], help='arm names, comma or space separated (default: all)')
    p.add_argument('--cases', help='test_cases.jsonl of a run: every arm is evaluated on these cases')
    p.add_argument('--out', default='runs/ablate', help='one folder per arm (finished arms are not repeated)')
    p.add_argument('--profile', default='cpu', help='whose recipe the arms change (default: cpu)')
    p.add_argument('--list', action='store_true', help='name the arms and what each changes')
    p.add_argument('--reference', metavar='RUN_DIR', help='take an arm from this finished run instead of training it')
    p.add_argument('--reference-arm', default='recipe', help='which arm that run is (default: recipe)')
    p.add_argument('--start-run', metavar='RUN_DIR', help='preference arms (dpo…): the finished run whose fine-tuned '
                                                          'model they start from (notebooks 00-05 done)')
    p.add_argument('--report', action='store_true', help='only print the arms already finished on these cases')
    p.add_argument('--markdown', action='store_true', help='print a Markdown table (headline metrics)')
    p.add_argument('--readme', action='store_true', help='save the arms to results/ablation.json (preference arms: '
                                                         'results/ablation-preference.json) and regenerate their '
                                                         'table in docs/ablations.md')
    p.set_defaults(func=cmd_ablate)

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
    try:
        return args.func(args)
    except (UsageError, PathError, JsonlError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print('interrupted: unfinished outputs were removed, existing files are unchanged', file=sys.stderr)
        return 130
    except BrokenPipeError:  # stdout closed early (e.g. piped into head)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except Exception as e:  # noqa: BLE001 - the last resort: still one line, with how to see more
        if os.environ.get('HELPERS_TRACEBACK'):
            raise
        print(f'error: unexpected {type(e).__name__}: {e} (a bug in helpers; HELPERS_TRACEBACK=1 shows where)',
              file=sys.stderr)
        return 1


if __name__ == '__main__':
    sys.exit(main())
