"""Command line: ``python -m helpers <command> …`` (``--help`` on any command lists its options)."""
from __future__ import annotations

import argparse
import json
import sys


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
    from .environment import ProfileError
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
        results = run_pipeline(args.profile, args.run_dir, params, only=args.only)
    except (PipelineError, ProfileError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 1
    for r in results:
        print(f'{r.notebook:40s} {r.seconds:8.1f} s  {r.status}')
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
    p = sub.add_parser('pipeline', help='run the notebooks in order with papermill into one run directory')
    p.add_argument('--profile', default='auto', help='auto | tiny | cpu | gpu')
    p.add_argument('--run-dir', help='run directory (default: runs/<time>-<profile>)')
    p.add_argument('--only', nargs='+', metavar='NN', help='only these notebook numbers, e.g. --only 00 01')
    p.add_argument('-p', action='append', metavar='NAME=VALUE', help='extra notebook parameter (JSON value)')
    p.set_defaults(func=cmd_pipeline)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == '__main__':
    sys.exit(main())
