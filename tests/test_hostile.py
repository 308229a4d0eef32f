"""Hostile and careless input to every command, interrupted runs, and the tools that run model-written
arguments: one test per case of issue 13, plus a few inputs the issue does not list. Each command must
answer with one line (what, where, what to do) and leave every input file as it was."""
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import jsonl
from helpers.__main__ import main
from helpers.agentfabric import EvalCase, format_call
from helpers.catalog import load_catalog
from helpers.environment import repo_root
from helpers.evaluation import rouge_l, score
from helpers.sandbox import MAX_SOURCE, WALL_SECONDS, SandboxError, Worker, calculate
from helpers.scripted_server import ScriptedServer

SAMPLE = repo_root() / 'data' / 'ms_agent_sample' / 'raw.jsonl'
TOOLS = {t.name: t for t in load_catalog()}
CASE = {'id': 'c1', 'lang': 'en', 'instruction': 'You are a weather assistant.',
        'tools': [{'name': 'get_weather', 'description': 'Weather of a city.',
                   'parameters': [{'name': 'city', 'type': 'string', 'description': 'city', 'required': True}]}],
        'query': 'Weather in Paris?', 'expected_call': {'name': 'get_weather', 'arguments': {'city': 'Paris'}},
        'observation': 'sunny', 'reference_answer': 'It is sunny in Paris.'}
CALL = format_call('get_weather', {'city': 'Paris'})


def cli(capsys, *args) -> tuple[int, str, str]:
    """Run ``python -m helpers ARGS`` in this process: (exit code, stdout, stderr)."""
    try:
        code = main([str(a) for a in args])
    except SystemExit as e:  # argparse refuses an argument
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def one_error_line(err: str, *words: str) -> None:
    """stderr is one ``error:`` line, no traceback and no last-resort message, naming ``words``."""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('error: '), err
    assert 'Traceback' not in err and 'unexpected' not in err, err
    for w in words:
        assert w in err, (w, err)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def raw(system: str, reply: str, rid: str = 'r') -> str:
    """One raw ms_agent record as a JSON line."""
    conv = [{'from': 'system', 'value': system}, {'from': 'user', 'value': 'Where is my parcel SF1?'},
            {'from': 'assistant', 'value': reply}]
    return json.dumps({'id': rid, 'conversations': conv}, ensure_ascii=False)


def system(params: str, desc: str = 'Track a parcel') -> str:
    return ('Answer the following questions as best you can. You have access to the following APIs:\n'
            '1. parcel_tracking: Call this tool to interact with the parcel tracking API. What is the parcel '
            f'tracking API useful for? {desc}. Parameters: {params}\n\nUse the following format:\n\nBegin!')


PARAMS = '[{"name": "tracking_no", "description": "number", "required": "True"}]'
REPLY = ('Action: parcel_tracking\nAction Input: {"tracking_no": "SF1"}\nObservation: in transit\n'
         'Final Answer: On its way.')
GOOD = raw(system(PARAMS), REPLY, 'good')


def convert(capsys, tmp_path, *lines: str | bytes, extra=()):
    """Convert GOOD + ``lines`` + GOOD; returns (exit code, stderr, report, output rows)."""
    src = tmp_path / 'raw.jsonl'
    src.write_bytes(b'\n'.join(x if isinstance(x, bytes) else x.encode() for x in (GOOD, *lines, GOOD)) + b'\n')
    before = digest(src)
    code, _, err = cli(capsys, 'convert', '--input', src, '--output', tmp_path / 'out.jsonl',
                       '--report', tmp_path / 'report.json', *extra)
    assert digest(src) == before
    report = json.loads((tmp_path / 'report.json').read_text())
    assert report['read'] == report['converted'] + report['rejected']
    rows = [jsonl.loads(line) for line in (tmp_path / 'out.jsonl').read_text().splitlines()]
    assert len(rows) == report['samples_written']
    return code, err, report, rows


def rejected_once(capsys, tmp_path, line, reason: str) -> None:
    code, err, report, _ = convert(capsys, tmp_path, line)
    assert code == 0 and report['read'] == 3 and report['converted'] == 2, err
    (reject,) = report['rejects']
    assert reject['line'] == 2 and reason in reject['reason'], reject
    assert f'raw.jsonl:2' in err


# ---------------------------------------------------------------------------------- outputs never over inputs

def test_convert_output_equal_to_input_is_refused(capsys, tmp_path):
    src = tmp_path / 'raw.jsonl'
    src.write_text(GOOD + '\n')
    before = digest(src)
    code, _, err = cli(capsys, 'convert', '--input', src, '--output', src)
    assert code == 2 and digest(src) == before
    one_error_line(err, '--output', 'same file as --input')


def test_convert_output_symlinked_or_hard_linked_to_input_is_refused(capsys, tmp_path):
    src = tmp_path / 'raw.jsonl'
    src.write_text(GOOD + '\n')
    before = digest(src)
    (tmp_path / 'link.jsonl').symlink_to(src)
    os.link(src, tmp_path / 'hard.jsonl')
    for out in ('link.jsonl', 'hard.jsonl'):
        code, _, err = cli(capsys, 'convert', '--input', src, '--output', tmp_path / out)
        assert code == 2 and digest(src) == before
        one_error_line(err, 'same file as --input')


def test_convert_report_equal_to_input_or_output_is_refused(capsys, tmp_path):
    src = tmp_path / 'raw.jsonl'
    src.write_text(GOOD + '\n')
    before = digest(src)
    code, _, err = cli(capsys, 'convert', '--input', src, '--output', tmp_path / 'o.jsonl', '--report', src)
    assert code == 2 and digest(src) == before and not (tmp_path / 'o.jsonl').exists()
    one_error_line(err, '--report', 'same file as --input')
    code, _, err = cli(capsys, 'convert', '--input', src, '--output', tmp_path / 'o.jsonl',
                       '--report', tmp_path / 'o.jsonl')
    assert code == 2
    one_error_line(err, '--output and --report are the same file')


def test_synth_max_tools_zero_leaves_an_existing_out_alone(capsys, tmp_path):
    out = tmp_path / 'conversations.jsonl'
    out.write_text('keep me\n')
    code, _, err = cli(capsys, 'synth', '--n', 5, '--max-tools', 0, '--out', out)
    assert code == 2 and out.read_text() == 'keep me\n'
    one_error_line(err, '--max-tools', 'at least 1')


def test_synth_out_over_a_bundled_data_file_is_refused(capsys):
    path = repo_root() / 'data' / 'tool_catalog.json'
    before = digest(path)
    code, _, err = cli(capsys, 'synth', '--n', 1, '--out', path)
    assert code == 2 and digest(path) == before
    one_error_line(err, 'tool_catalog.json')


# ---------------------------------------------------------------------------------- convert isolates records

def test_convert_rejects_a_non_utf8_line(capsys, tmp_path):
    rejected_once(capsys, tmp_path, GOOD.replace('SF1', 'SF\udcff', 1).encode('utf-8', 'surrogateescape'),
                  'not UTF-8')


def test_convert_rejects_a_deeply_nested_line(capsys, tmp_path):
    rejected_once(capsys, tmp_path, '[' * 200_000 + ']' * 200_000, 'nested too deeply')


def test_convert_rejects_properties_that_are_not_an_object(capsys, tmp_path):
    rejected_once(capsys, tmp_path, raw(system('{"type": "object", "properties": [1, 2]}'), REPLY),
                  '"properties" is an object')


def test_convert_rejects_required_that_is_not_a_list(capsys, tmp_path):
    schema = '{"type": "object", "properties": {"tracking_no": {"type": "string"}}, "required": "tracking_no"}'
    rejected_once(capsys, tmp_path, raw(system(schema), REPLY), '"required" must be a list')


def test_convert_rejects_a_string_schema(capsys, tmp_path):
    rejected_once(capsys, tmp_path, raw(system('[{"name": "tracking_no", "schema": "string"}]'), REPLY),
                  '"schema" must be an object')


@pytest.mark.parametrize('value', ['{bad json', '{"description": "no name"}', '{"name": "x", "instruction": 5}'])
def test_convert_bad_instruction_is_one_line_before_any_output(capsys, tmp_path, value):
    code, _, err = cli(capsys, 'convert', '--input', SAMPLE, '--output', tmp_path / 'o.jsonl', '--instruction', value)
    assert code == 2 and not (tmp_path / 'o.jsonl').exists()
    one_error_line(err, '--instruction')


def test_a_numbered_line_in_a_description_does_not_split_the_tool(capsys, tmp_path):
    desc = 'Track a parcel.\n\n2. name: not a tool, part of this description'
    code, _, report, rows = convert(capsys, tmp_path, raw(system(PARAMS, desc), REPLY, 'split'))
    assert code == 0 and report['rejected'] == 0
    prompt = rows[2]['messages'][0]['content']
    assert 'must be one of [parcel_tracking]' in prompt and '2. name: not a tool' in prompt


@pytest.mark.parametrize('value', ['NaN', 'Infinity', '-Infinity'])
def test_nan_or_infinity_in_action_input_is_rejected_never_written(capsys, tmp_path, value):
    reply = REPLY.replace('"SF1"', value)
    rejected_once(capsys, tmp_path, raw(system(PARAMS), reply), 'NaN or Infinity')
    assert value not in (tmp_path / 'out.jsonl').read_text()


def test_ctrl_c_during_convert_leaves_no_file_that_looks_complete(tmp_path):
    src = tmp_path / 'raw.jsonl'
    # distinct records (each its own system prompt), so no memo makes the conversion finish before the signal
    src.write_text(''.join(raw(system(PARAMS, f'Track parcel kind {i}'), REPLY, f'r{i}') + '\n' for i in range(100_000)))
    out = tmp_path / 'out.jsonl'
    out.write_text('previous run\n')
    # SIGINT as a terminal sends it: a test run started in the background (`make test &`) has SIGINT ignored,
    # which a child inherits and Python then keeps, so the child gets the default disposition back first
    proc = subprocess.Popen([sys.executable, '-m', 'helpers', 'convert', '--input', str(src), '--output', str(out)],
                            stderr=subprocess.PIPE, text=True, cwd=repo_root(),
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 60
    while not list(tmp_path.glob('.out.jsonl.*.part')) and time.time() < deadline:
        time.sleep(0.05)
    assert list(tmp_path.glob('.out.jsonl.*.part')), 'the conversion never started writing'
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    err = proc.communicate(timeout=60)[1]
    assert proc.returncode == 130 and 'interrupted' in err and 'Traceback' not in err, err
    assert out.read_text() == 'previous run\n' and not list(tmp_path.glob('.out.jsonl.*'))


def test_an_unwritable_output_names_the_output_not_the_input(capsys, tmp_path):
    for out, words in ((tmp_path / 'missing' / 'o.jsonl', ('--output', 'does not exist')),
                       (Path('/proc/o.jsonl'), ('/proc/o.jsonl',))):
        code, _, err = cli(capsys, 'convert', '--input', SAMPLE, '--output', out)
        assert code == 2 and 'cannot read' not in err
        one_error_line(err, *words)


# ---------------------------------------------------------------------------------- one-line errors

def test_prompt_with_an_empty_case_file(capsys, tmp_path):
    path = tmp_path / 'case.json'
    path.write_text('\n  \n')
    code, out, err = cli(capsys, 'prompt', '--case', path)
    assert code == 2 and out == ''
    one_error_line(err, 'case.json', 'empty')


@pytest.mark.parametrize('key,value', [('output', 42), ('answer', {'text': 'x'}), ('output', ['a'])])
def test_score_with_a_non_string_output_or_answer(capsys, tmp_path, key, value):
    cases, preds = tmp_path / 'c.jsonl', tmp_path / 'p.jsonl'
    cases.write_text(json.dumps(CASE) + '\n')
    preds.write_text(json.dumps({'id': 'c1', 'output': CALL, 'answer': 'x', key: value}) + '\n')
    code, out, err = cli(capsys, 'score', '--cases', cases, '--predictions', preds)
    assert code == 2 and out == ''
    one_error_line(err, 'p.jsonl:1', f'"{key}" must be a string')


def test_evaluate_with_non_utf8_cases(capsys, tmp_path):
    path = tmp_path / 'cases.jsonl'
    path.write_bytes(json.dumps(CASE).encode() + b'\n{"id": "\xff"}\n')
    code, _, err = cli(capsys, 'evaluate', '--cases', path, '--base-url', 'http://127.0.0.1:9/v1', '--model', 'm',
                       '--out', tmp_path / 'eval')
    assert code == 2
    one_error_line(err, 'cases.jsonl:2', 'not UTF-8')


def test_synth_out_in_a_missing_folder(capsys, tmp_path):
    code, _, err = cli(capsys, 'synth', '--n', 2, '--out', tmp_path / 'no' / 'such' / 'x.jsonl')
    assert code == 2
    one_error_line(err, '--out', 'does not exist')


def test_pipeline_run_dir_on_a_file(capsys, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, 'helpers.pipeline', None)  # refused before the pipeline is imported
    path = tmp_path / 'file.txt'
    path.write_text('x')
    code, _, err = cli(capsys, 'pipeline', '--run-dir', path, '--profile', 'tiny')
    assert code == 2 and path.read_text() == 'x'
    one_error_line(err, '--run-dir', 'is a file')


def test_synth_n_negative_writes_nothing(capsys, tmp_path):
    out = tmp_path / 'x.jsonl'
    code, _, err = cli(capsys, 'synth', '--n', -5, '--out', out)
    assert code == 2 and not out.exists()
    one_error_line(err, '--n', 'at least 1')


# ---------------------------------------------------------------------------------- score

def score_files_cli(capsys, tmp_path, cases, preds, *flags):
    c, p = tmp_path / 'c.jsonl', tmp_path / 'p.jsonl'
    c.write_text(''.join(json.dumps(x) + '\n' for x in cases))
    p.write_text(''.join(json.dumps(x) + '\n' for x in preds))
    return cli(capsys, 'score', '--cases', c, '--predictions', p, *flags)


def test_score_duplicate_prediction_ids_are_an_error_unless_allowed(capsys, tmp_path):
    preds = [{'id': 'c1', 'output': CALL, 'answer': ''}, {'id': 'c1', 'output': 'no call', 'answer': ''}]
    code, out, err = score_files_cli(capsys, tmp_path, [CASE], preds)
    assert code == 2 and out == ''
    one_error_line(err, 'p.jsonl:2', "'c1' repeats line 1", '--allow-duplicates')
    code, out, _ = score_files_cli(capsys, tmp_path, [CASE], preds, '--allow-duplicates')
    metrics = json.loads(out)
    assert code == 0 and metrics['n_duplicate_predictions'] == 1 and metrics['tool_selection_acc'] == 1.0


def test_score_duplicate_case_ids_are_an_error_unless_allowed(capsys, tmp_path):
    preds = [{'id': 'c1', 'output': CALL, 'answer': ''}]
    code, out, err = score_files_cli(capsys, tmp_path, [CASE, CASE], preds)
    assert code == 2 and out == ''
    one_error_line(err, 'c.jsonl:2', "'c1' repeats line 1", '--allow-duplicates')
    code, out, _ = score_files_cli(capsys, tmp_path, [CASE, CASE], preds, '--allow-duplicates')
    metrics = json.loads(out)
    assert code == 0 and metrics['n_cases'] == 1 and metrics['n_duplicate_cases'] == 1


def test_score_unknown_prediction_ids_are_an_error_unless_allowed(capsys, tmp_path):
    preds = [{'id': 'c1', 'output': CALL, 'answer': ''}, {'id': 'zz', 'output': CALL, 'answer': ''}]
    code, out, err = score_files_cli(capsys, tmp_path, [CASE], preds)
    assert code == 2 and out == ''
    one_error_line(err, "'zz'", '--allow-unknown')
    code, out, _ = score_files_cli(capsys, tmp_path, [CASE], preds, '--allow-unknown')
    metrics = json.loads(out)
    assert code == 0 and metrics['n_unknown_predictions'] == 1 and metrics['n_cases'] == 1


def test_a_null_reference_answer_is_left_out_of_rouge():
    case = EvalCase.from_dict({**CASE, 'reference_answer': None})
    assert case.reference_answer == ''
    metrics, scores = score([case], {'c1': {'id': 'c1', 'output': CALL, 'answer': 'None'}})
    assert scores[0].rouge is None and metrics['answer_rouge_l'] is None


def test_rouge_l_of_a_5mb_answer_is_fast():
    answer = 'the weather in paris is sunny today ' * 150_000  # 5.4 MB
    start = time.perf_counter()
    value = rouge_l(answer, 'It is sunny in Paris today.')
    assert time.perf_counter() - start < 0.5 and 0 < value < 1
    start = time.perf_counter()
    rouge_l('天气晴朗' * 1_300_000, '巴黎今天天气晴朗' * 2000)  # both long, CJK characters as tokens
    assert time.perf_counter() - start < 1.0


# ---------------------------------------------------------------------------------- evaluate

def test_evaluate_against_a_server_that_refuses_connections(capsys, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, 'modelscope_agent', None)  # fails before RolePlay is even imported
    cases = tmp_path / 'cases.jsonl'
    cases.write_text(json.dumps(CASE) + '\n')
    start = time.time()
    code, _, err = cli(capsys, 'evaluate', '--cases', cases, '--base-url', 'http://127.0.0.1:9/v1', '--model', 'm',
                       '--out', tmp_path / 'eval')
    assert code == 1 and time.time() - start < 10
    one_error_line(err, 'http://127.0.0.1:9/v1/models', 'refused')


@pytest.mark.parametrize('flag,value', [('--workers', 0), ('--max-tokens', -5), ('--max-llm-calls', 0)])
def test_evaluate_numbers_are_checked_before_the_slow_imports(capsys, tmp_path, monkeypatch, flag, value):
    monkeypatch.setitem(sys.modules, 'helpers.evaluation', None)
    code, _, err = cli(capsys, 'evaluate', '--cases', tmp_path / 'none.jsonl', '--base-url', 'http://x/v1',
                       '--model', 'm', '--out', tmp_path, flag, value)
    assert code == 2
    one_error_line(err, flag, 'at least 1')


def test_evaluate_out_on_a_file_is_checked_before_the_slow_imports(capsys, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, 'helpers.evaluation', None)
    cases, out = tmp_path / 'cases.jsonl', tmp_path / 'out'
    cases.write_text(json.dumps(CASE) + '\n')
    out.write_text('a file')
    code, _, err = cli(capsys, 'evaluate', '--cases', cases, '--base-url', 'http://x/v1', '--model', 'm', '--out', out)
    assert code == 2 and out.read_text() == 'a file'
    one_error_line(err, '--out', 'is a file')


def test_evaluate_exits_non_zero_when_every_case_failed(capsys, tmp_path):
    cases = tmp_path / 'cases.jsonl'
    cases.write_text(json.dumps(CASE) + '\n' + json.dumps({**CASE, 'id': 'c2'}) + '\n')

    def crash(body):
        raise RuntimeError('model crashed')

    with ScriptedServer(crash, error_status=400) as srv:  # 400: the client does not retry
        code, _, err = cli(capsys, 'evaluate', '--cases', cases, '--base-url', srv.base_url, '--model', 'm',
                           '--out', tmp_path / 'eval', '--workers', 2)
    assert code == 1 and 'every one of the 2 cases failed' in err.splitlines()[-1]
    rows = [json.loads(line) for line in (tmp_path / 'eval' / 'predictions.jsonl').read_text().splitlines()]
    assert [r['id'] for r in rows] == ['c1', 'c2'] and all(r['error'] for r in rows)


# ---------------------------------------------------------------------------------- model-written tool arguments

def observe(tool: str, args: dict) -> tuple[dict, float]:
    """The tool's observation, parsed as strict JSON, and how long it took."""
    start = time.perf_counter()
    text = TOOLS[tool].observation(args)
    return jsonl.loads(text), time.perf_counter() - start


@pytest.mark.parametrize('tool,key,source', [
    ('run_python', 'code', "'%2000000000d' % 1"), ('calculator', 'expression', "'%2000000000d' % 1"),
    ('run_python', 'code', 'sum([[0]*3000]*3000, [])'), ('run_python', 'code', 'str([[0]*100000]*100000)'),
    ('calculator', 'expression', '1+' * 50_000 + '1'), ('calculator', 'expression', '-' * 100_000 + '1'),
    ('run_python', 'code', '[[0]*100000 for x in range(100000)]'), ('run_python', 'code', 'print([[0]*99999]*99999)'),
])
def test_sandbox_cases_from_the_issue_are_bounded(tool, key, source):
    result, seconds = observe(tool, {key: source})
    assert seconds < 1.0, seconds
    assert result.get('status') in ('error', 'executed') or 'error' in result, result


@pytest.mark.parametrize('source', ['float("nan")', "float('inf')", '1e308 * 10', "-float('inf')"])
def test_calculator_never_returns_nan_or_infinity(source):
    result, _ = observe('calculator', {'expression': source})
    assert 'not a finite number' in result['error']


def test_run_sql_with_thousands_of_spaces_is_fast():
    for sql in ('SELECT' + ' ' * 2000 + 'x', 'SELECT a' + ' ' * 2000 + ',b', 'WITH' + ' ' * 2000 + 'x',
                'SELECT ' + ' ' * 2000 + 'from', "SELECT '" + ' ' * 5000):
        result, seconds = observe('run_sql', {'sql': sql})
        assert seconds < 0.2 and 'error' in result, (sql[:20], result)
    result, seconds = observe('run_sql', {'sql': 'SELECT a,' + ' ' * 5000 + 'b FROM t LIMIT 5'})
    assert seconds < 0.2 and result['columns'] == 2 and result['rows'] <= 5


def test_a_computation_the_evaluator_allows_is_stopped_by_the_worker_limits():
    start = time.perf_counter()
    with pytest.raises(SandboxError, match='limits'):
        calculate('round(1, -10**8)')  # computes 10**(10**8): minutes of CPU inside one int operation
    assert time.perf_counter() - start < WALL_SECONDS + 1
    assert calculate('(250 + 375) * 4') == 2500  # a fresh worker answers the next call


def test_the_worker_runs_under_an_address_space_limit():
    calculate('1 + 1')
    from helpers import sandbox
    limits = Path(f'/proc/{sandbox._WORKER._proc.pid}/limits').read_text()
    line = next(x for x in limits.splitlines() if x.startswith('Max address space'))
    assert line.split()[3] == str(sandbox.MEMORY_BYTES)


def test_a_worker_that_does_not_answer_is_killed_after_the_wall_limit():
    worker = Worker([sys.executable, '-c', 'import time; time.sleep(60)'], wall_seconds=0.5)
    start = time.perf_counter()
    with pytest.raises(SandboxError):
        worker.request({'op': 'calculate', 'source': '1'})
    assert time.perf_counter() - start < 2 and worker._proc is None


def test_sources_longer_than_the_bound_are_refused_before_the_worker():
    with pytest.raises(SandboxError, match=str(MAX_SOURCE)):
        calculate('1' * (MAX_SOURCE + 1))


def test_bad_tool_arguments_come_back_as_a_json_error_object():
    result, _ = observe('send_email', {'to': 'a@' + 'x' * 100_000, 'subject': 's'})
    assert 'email address' in result['error']
    result, _ = observe('calculator', {})
    assert 'missing required argument' in result['error']


def test_normal_sandbox_calls_stay_fast():
    calculate('1')
    start = time.perf_counter()
    for _ in range(100):
        assert TOOLS['calculator'].run({'expression': '(1234 + 5678) * 3'})['result'] == 20736
    assert time.perf_counter() - start < 1.0


# ---------------------------------------------------------------------------------- inputs the issue does not list

def test_a_folder_as_input(capsys, tmp_path):
    for args in (('convert', '--input', tmp_path, '--output', tmp_path / 'o.jsonl'),
                 ('score', '--cases', tmp_path, '--predictions', tmp_path),
                 ('prompt', '--case', tmp_path)):
        code, _, err = cli(capsys, *args)
        assert code == 2
        one_error_line(err, 'is a folder')


def test_empty_input_files(capsys, tmp_path):
    empty = tmp_path / 'empty.jsonl'
    empty.write_text('')
    code, _, err = cli(capsys, 'convert', '--input', empty, '--output', tmp_path / 'o.jsonl')
    assert code == 0 and 'read 0' in err and 'holds no records' in err
    assert (tmp_path / 'o.jsonl').read_text() == ''
    code, _, err = cli(capsys, 'score', '--cases', empty, '--predictions', empty)
    assert code == 2
    one_error_line(err, 'holds no cases')


def test_bom_and_crlf_line_ends_are_read(capsys, tmp_path):
    src = tmp_path / 'raw.jsonl'
    src.write_bytes(b'\xef\xbb\xbf' + (GOOD + '\r\n' + GOOD + '\r\n').encode())
    code, _, err = cli(capsys, 'convert', '--input', src, '--output', tmp_path / 'o.jsonl')
    assert code == 0 and 'converted 2, rejected 0' in err
    cases = tmp_path / 'c.jsonl'
    cases.write_bytes(b'\xef\xbb\xbf' + json.dumps(CASE).encode() + b'\r\n')
    code, out, _ = cli(capsys, 'prompt', '--case', cases)
    assert code == 0 and json.loads(out)[-1]['content'].endswith('Weather in Paris?')


def test_a_line_longer_than_the_bound_is_rejected_unread(capsys, tmp_path, monkeypatch):
    from helpers import convert as convert_module
    monkeypatch.setattr(convert_module, 'MAX_RECORD_BYTES', 1000)
    code, _, report, _ = convert(capsys, tmp_path, json.dumps({'id': 'x' * 5000}))
    assert code == 0 and report['rejects'][0]['line'] == 2 and 'longer than' in report['rejects'][0]['reason']


def test_every_record_rejected_exits_non_zero(capsys, tmp_path):
    src = tmp_path / 'raw.jsonl'
    src.write_text('not json\n[]\n')
    code, _, err = cli(capsys, 'convert', '--input', src, '--output', tmp_path / 'o.jsonl')
    assert code == 1 and err.strip().splitlines()[-1].startswith('error: none of the 2 records')


def test_output_to_dev_null_is_written_in_place(capsys, tmp_path):
    code, _, err = cli(capsys, 'convert', '--input', SAMPLE, '--output', os.devnull, '--report', tmp_path / 'r.json')
    assert code == 0 and Path(os.devnull).is_char_device()
    assert json.loads((tmp_path / 'r.json').read_text())['converted'] >= 5


def test_the_cli_prints_no_traceback_in_a_real_process(tmp_path):
    """The same one-line contract in a separate process, where a traceback would really be printed."""
    empty = tmp_path / 'case.json'
    empty.write_text('')
    res = subprocess.run([sys.executable, '-m', 'helpers', 'prompt', '--case', str(empty)], capture_output=True,
                         text=True, timeout=60, cwd=repo_root())
    assert res.returncode == 2 and res.stdout == '' and len(res.stderr.strip().splitlines()) == 1, res.stderr


@pytest.mark.skipif(os.geteuid() == 0, reason='root may write any file')
def test_a_read_only_output_is_refused(capsys, tmp_path):
    out = tmp_path / 'o.jsonl'
    out.write_text('keep\n')
    out.chmod(0o444)
    code, _, err = cli(capsys, 'convert', '--input', SAMPLE, '--output', out)
    assert code == 2 and out.read_text() == 'keep\n'
    one_error_line(err, 'read-only')


def test_the_instruction_pool_is_an_input_too(capsys):
    path = repo_root() / 'data' / 'instructions.json'
    before = digest(path)
    code, _, err = cli(capsys, 'convert', '--input', SAMPLE, '--output', path)
    assert code == 2 and digest(path) == before
    one_error_line(err, 'instruction pool')
