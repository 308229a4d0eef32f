"""Property-based tests: random bytes and random JSON fed to ``convert`` and ``score`` must never give a
traceback, the counts must hold, and the input files must stay as they were. The examples are bounded
and drawn the same way every run (a few seconds in all); ``PROPERTY_EXAMPLES=2000`` explores further.
Two equivalences back the linear-time rewrites: the call parser against RolePlay's own pattern, and the
bit-parallel LCS against the textbook table."""
import contextlib
import copy
import io
import json
import os
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import jsonl
from helpers.__main__ import main
from helpers.agentfabric import ACTION_PATTERN, parse_action
from helpers.environment import repo_root
from helpers.evaluation import lcs_length

EXAMPLES = int(os.environ.get('PROPERTY_EXAMPLES', 40))
BOUNDED = settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=EXAMPLES <= 100,
                   suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
                    max_leaves=10)
# pieces of the raw ms_agent format, so random records reach deep into the parser
PIECES = st.sampled_from([
    'Answer the following questions. You have access to the following APIs:\n', '1. ', '2. ', '\n\n', 'tool_a: ',
    'Call this tool to interact with the a API. What is the a API useful for? ', 'Parameters: ', '[', ']', '{', '}',
    '{"name": "q", "required": "True"}', '{"type": "object", "properties": {"q": {"type": "string"}}}',
    '"required": ', '"schema": "x"', 'Use the following format', 'Action: tool_a\n', 'Action Input: ',
    '{"q": "x"}', '{"q": NaN}', 'Infinity', '\nObservation: ', 'ok', 'Final Answer: ', 'Thought: ', '## 你拥有如下工具：\n',
    'tool_a: tool_a API. d Parameters: {"type": "object"} Format the arguments as a JSON object.', ',', ' ', '天气'])
TEXT = st.lists(PIECES, max_size=12).map(''.join) | st.text(max_size=30)
MESSAGE = st.fixed_dictionaries({'from': st.sampled_from(['system', 'user', 'assistant', 'tool', 3]), 'value': TEXT})


def sample_records() -> list[dict]:
    """The bundled raw sample's records that are JSON objects with messages (some lines are broken on purpose)."""
    records = []
    for line in (repo_root() / 'data' / 'ms_agent_sample' / 'raw.jsonl').read_text().splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return [r for r in records if isinstance(r, dict) and r.get('conversations')]


SAMPLES = sample_records()


def mutate(record: dict, edits: list[tuple[int, int, str]]) -> dict:
    """A real record with pieces inserted into its messages."""
    record = copy.deepcopy(record)
    for i, pos, piece in edits:
        message = record['conversations'][i % len(record['conversations'])]
        cut = pos % (len(message['value']) + 1)
        message['value'] = message['value'][:cut] + piece + message['value'][cut:]
    return record


MUTATED = st.builds(mutate, st.sampled_from(SAMPLES), st.lists(st.tuples(st.integers(0, 9), st.integers(0, 10 ** 4),
                                                                        PIECES), max_size=3))
RECORD = st.fixed_dictionaries({'conversations': st.lists(MESSAGE, max_size=5)},
                               optional={'id': st.one_of(st.text(max_size=5), st.integers(), JSON)})
LINE = st.one_of(st.binary(max_size=120), JSON.map(json.dumps), st.just('[' * 5000),
                 (RECORD | MUTATED).map(lambda r: json.dumps(r, ensure_ascii=False)))
LINES = st.lists(LINE.map(lambda x: x if isinstance(x, bytes) else x.encode()), max_size=6)


def run(*args) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in args])
        except SystemExit as e:
            code = e.code
    return code, out.getvalue(), err.getvalue()


def clean(err: str) -> None:
    assert 'Traceback' not in err and 'unexpected' not in err, err


def records_in(data: bytes) -> int:
    """Non-blank lines, as the converter counts them."""
    lines = data.split(b'\n')
    lines = lines[:-1] if lines and not lines[-1] else lines
    n = 0
    for i, line in enumerate(lines):
        line = line.rstrip(b'\r')
        line = line[3:] if i == 0 and line.startswith(b'\xef\xbb\xbf') else line
        try:
            n += bool(line.decode('utf-8').strip())
        except UnicodeDecodeError:
            n += 1
    return n


@BOUNDED
@given(LINES, st.sampled_from([b'\n', b'\r\n']), st.sampled_from(['messages', 'agentfabric']))
def test_convert_takes_any_bytes(lines, end, fmt):
    with tempfile.TemporaryDirectory() as tmp:
        src, out, rep = Path(tmp, 'raw.jsonl'), Path(tmp, 'out.jsonl'), Path(tmp, 'report.json')
        data = end.join(lines) + (end if lines else b'')
        src.write_bytes(data)
        code, _, err = run('convert', '--input', src, '--output', out, '--report', rep, '--to', fmt)
        clean(err)
        report = json.loads(rep.read_text())
        assert report['read'] == report['converted'] + report['rejected'] == records_in(data)
        assert code == (1 if report['read'] and not report['converted'] else 0)
        rows = out.read_text(encoding='utf-8').splitlines()
        assert len(rows) == report['samples_written'] and all(jsonl.loads(r) for r in rows)
        assert src.read_bytes() == data and sorted(p.name for p in Path(tmp).iterdir()) == [
            'out.jsonl', 'raw.jsonl', 'report.json']


CASE = st.fixed_dictionaries({
    'id': st.sampled_from(['a', 'b', 1, True, None]), 'lang': st.sampled_from(['en', 'zh', 'fr']),
    'instruction': st.one_of(st.text(max_size=5), JSON),
    'tools': st.just([{'name': 'get_weather', 'parameters': [{'name': 'city', 'required': True}]}]) | JSON,
    'query': st.text(max_size=8) | JSON,
    'expected_call': st.just({'name': 'get_weather', 'arguments': {'city': 'Paris'}}) | st.none() | JSON,
}, optional={'reference_answer': st.one_of(st.text(max_size=20), st.none(), JSON), 'history': JSON, 'meta': JSON})
PREDICTION = st.fixed_dictionaries({'id': st.sampled_from(['a', 'b', 'c', 1, 2.5, None])}, optional={
    'output': st.one_of(TEXT, st.just('Action: get_weather\nAction Input: {"city": "Paris"}\n'), JSON),
    'answer': st.one_of(st.text(max_size=20), JSON), 'error': JSON})
CASE_LINES = st.lists(st.one_of(CASE.map(json.dumps), LINE), max_size=4)
PRED_LINES = st.lists(st.one_of(PREDICTION.map(json.dumps), LINE), max_size=4)


def as_bytes(lines) -> bytes:
    return b''.join((x if isinstance(x, bytes) else x.encode()) + b'\n' for x in lines)


@BOUNDED
@given(CASE_LINES, PRED_LINES, st.booleans(), st.booleans())
def test_score_takes_any_bytes(case_lines, pred_lines, allow_duplicates, allow_unknown):
    with tempfile.TemporaryDirectory() as tmp:
        cases, preds = Path(tmp, 'cases.jsonl'), Path(tmp, 'preds.jsonl')
        cases.write_bytes(as_bytes(case_lines))
        preds.write_bytes(as_bytes(pred_lines))
        before = cases.read_bytes(), preds.read_bytes()
        flags = ['--allow-duplicates'] * allow_duplicates + ['--allow-unknown'] * allow_unknown
        code, out, err = run('score', '--cases', cases, '--predictions', preds, *flags)
        clean(err)
        if code == 0:
            metrics = json.loads(out)
            assert metrics['n_cases'] >= 1 and err == ''
            assert allow_unknown or metrics['n_unknown_predictions'] == 0
            assert allow_duplicates or metrics['n_duplicate_cases'] == metrics['n_duplicate_predictions'] == 0
        else:
            assert code == 2 and out == '' and len(err.strip().splitlines()) == 1 and err.startswith('error: ')
        assert (cases.read_bytes(), preds.read_bytes()) == before


ACTION_TEXT = st.lists(st.sampled_from(['Action: ', 'Action Input: ', 'Action:', '\n', '\r', ' ', 'x', 'Input: ']),
                       max_size=12).map(''.join)


@BOUNDED
@given(ACTION_TEXT)
def test_parse_action_finds_what_roleplays_pattern_finds(text):
    match, call = ACTION_PATTERN.search(text), parse_action(text)
    assert (call.name, call.action_input) == match.groups() if match else call is None


@BOUNDED
@given(st.lists(st.sampled_from('abcd'), max_size=25), st.lists(st.sampled_from('abcd'), max_size=25))
def test_bit_parallel_lcs_matches_the_table(a, b):
    table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i, x in enumerate(a, 1):
        for j, y in enumerate(b, 1):
            table[i][j] = table[i - 1][j - 1] + 1 if x == y else max(table[i - 1][j], table[i][j - 1])
    assert lcs_length(a, b) == table[-1][-1]
