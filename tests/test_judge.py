"""The judge on what a small model really emits: degenerate repetition, NaN, duplicate keys, lone surrogates,
huge outputs. Every output gets an outcome and none raises; ``args_exact_acc`` is JSON equality and never
exceeds the AST check (property tests over random arguments)."""
import json
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers.agentfabric import (MAX_ARGUMENTS_CHARS, MAX_ARGUMENTS_DEPTH, EvalCase, format_call, parse_action,
                                 parse_arguments)
from helpers.judge import OUTCOMES, judge, json_equal
from helpers.evaluation import score, score_case

EXAMPLES = int(os.environ.get('PROPERTY_EXAMPLES', 40))
BOUNDED = settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=EXAMPLES <= 100,
                   suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

TOOL = {'name': 'lookup', 'description': 'Look something up.',
        'parameters': [{'name': 'q', 'type': 'string', 'description': 'query', 'required': True},
                       {'name': 'n', 'type': 'integer', 'description': 'count', 'required': False, 'default': 5},
                       {'name': 'x', 'type': 'number', 'description': 'a number', 'required': False},
                       {'name': 'opts', 'type': 'object', 'description': 'options', 'required': False},
                       {'name': 'tags', 'type': 'array', 'description': 'tags', 'required': False},
                       {'name': 'flag', 'type': 'boolean', 'description': 'a flag', 'required': False}]}


def case(arguments, cid='c'):
    return EvalCase.from_dict({'id': cid, 'lang': 'en', 'instruction': 'x', 'tools': [TOOL], 'query': 'q',
                               'expected_call': {'name': 'lookup', 'arguments': arguments}, 'observation': 'ok',
                               'reference_answer': 'fine'})


def action(action_input: str) -> str:
    return f'Action: lookup\nAction Input: {action_input}\n'


@pytest.mark.parametrize('text, why', [
    ('{"q": NaN}', 'NaN'), ('{"q": Infinity}', 'Infinity'), ('{"q": -Infinity}', 'Infinity'),
    ('{"q": "a", "q": "b"}', "'q' appears twice"), ('{"o": {"k": 1, "k": 2}}', "'k' appears twice"),
    ('{"q": "\\ud800"}', 'lone surrogate'), ('{"\\udfff": 1}', 'lone surrogate'), ('{"q": "\ud800"}', 'lone surrogate'),
    ('[' * 1500 + ']' * 1500, 'nested'), ('{"q": ' + '[' * 40 + ']' * 40 + '}', f'deeper than {MAX_ARGUMENTS_DEPTH}'),
    ('{"q": "' + 'x' * MAX_ARGUMENTS_CHARS + '"}', 'longer than'), ('{"n": ' + '9' * 5000 + '}', 'digits'),
    ('["q"]', 'not an object'), ('"q"', 'not an object'), ("{'q': 'x'}", 'Expecting property name'),
    ('{"q": "x"} trailing', 'Extra data'),
])
def test_an_action_input_that_is_not_one_json_object_is_refused_with_its_reason(text, why):
    with pytest.raises(ValueError, match=why):
        parse_arguments(text)
    call = parse_action(action(text))
    assert call.arguments is None and call.action_input == text


@pytest.mark.parametrize('text', ['{"q": "\\ud83d\\ude00"}', '{"q": "😀"}', ' {"q": "x"} ',
                                  '{"q": ' + '[' * 30 + ']' * 30 + '}', '{"n": 1e400}'])
def test_what_is_json_stays_valid(text):
    assert isinstance(parse_arguments(text), dict)


@pytest.mark.parametrize('text', ['{"q": NaN}', '[' * 1200, '{"q": "a", "q": "a"}', '{"q": "\\ud800"}',
                                  '{"q": "' + 'x' * (2 * MAX_ARGUMENTS_CHARS) + '"}'])
def test_an_unparseable_action_input_is_an_invalid_call_not_an_error(text):
    s = score_case(case({'q': 'a'}), {'id': 'c', 'output': action(text), 'answer': ''})
    assert s.kind == 'invalid_json' and s.invalid is True and s.exact is False and s.ast is False
    assert s.arg_errors == ('invalid_json',) and s.pairs == (0, 0, 1)
    metrics, _ = score([case({'q': 'a'})], {'c': {'id': 'c', 'output': action(text), 'answer': ''}})
    assert metrics['invalid_call_rate'] == 1.0 and metrics['args_exact_acc'] == 0.0


@pytest.mark.parametrize('a, b, equal', [
    (1e16, 10 ** 16, True), (200, 200.0, True), ('5', 5, False), (True, 1, False), (False, 0, False),
    (None, 0, False), ({'a': 1, 'b': [1, {'c': 2}]}, {'b': [1, {'c': 2}], 'a': 1}, True), ([1, 2], [2, 1], False),
    ({'a': 1}, {'a': 1, 'b': None}, False), ([True], [1], False), (' x', 'x', False), ('x', 'x', True),
])
def test_json_equality(a, b, equal):
    assert json_equal(a, b) is equal and json_equal(b, a) is equal


def test_json_equality_has_no_depth_limit():
    deep = []
    for _ in range(100_000):
        deep = [deep]
    assert json_equal(deep, deep) and not json_equal(deep, [deep])


def test_numbers_sent_as_strings_are_not_exact():
    """The issue's case: every number as a string scored 1.0 exact while the AST check gave less."""
    c = case({'q': 'paris', 'n': 3, 'x': 2.5})
    s = score_case(c, {'id': 'c', 'output': format_call('lookup', {'q': 'paris', 'n': '3', 'x': '2.5'})})
    assert (s.exact, s.ast, s.kind, s.arg_errors) == (False, False, 'wrong_arguments', ('wrong_type',))
    assert s.pairs == (1, 2, 2)
    nested = case({'q': 'paris', 'opts': {'a': 1, 'b': {'c': [1, 2]}}})
    s = score_case(nested, {'id': 'c', 'output': format_call('lookup', {'opts': {'b': {'c': [1, 2]}, 'a': 1},
                                                                       'q': 'paris'})})
    assert s.exact and s.ast and s.kind == 'ok'  # key order is no difference


def test_an_integer_written_as_a_float_is_no_exact_integer():
    s = score_case(case({'q': 'a', 'n': 3}), {'id': 'c', 'output': action('{"q": "a", "n": 3.0}')})
    assert (s.exact, s.ast, s.arg_errors) == (False, False, ('wrong_type',))
    s = score_case(case({'q': 'a', 'x': 3}), {'id': 'c', 'output': action('{"q": "a", "x": 3.0}')})
    assert (s.exact, s.ast) == (True, True)  # a number parameter: 3.0 is 3


# ---------------------------------------------------------------------------------- property tests

LEAF = st.none() | st.booleans() | st.integers(-10 ** 20, 10 ** 20) | st.floats(allow_nan=False,
                                                                                 allow_infinity=False) \
    | st.text(max_size=6)
JSON = st.recursive(LEAF, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner,
                                                                                        max_size=3), max_leaves=8)
ARGS = st.dictionaries(st.sampled_from(['q', 'n', 'x', 'opts', 'tags', 'flag', 'other']), JSON, max_size=4)


@BOUNDED
@given(ARGS, ARGS, st.booleans())
def test_exact_never_exceeds_the_ast_check(expected, given_args, same):
    c = case(expected)
    s = score_case(c, {'id': 'c', 'output': format_call('lookup', expected if same else given_args)})
    assert not s.exact or s.ast
    assert s.exact is (s.kind == 'ok')
    if same:
        assert s.exact
    matched, extra, missing = s.pairs
    assert matched + missing == len(expected) and matched + extra == len(s.args)


NOISE = st.sampled_from(['Action: lookup\n', 'Action Input: ', '{', '}', '[', ']', '"q"', ': ', 'NaN', 'Infinity',
                         '"\\ud800"', '\ud800', '\udfff', '1e999', ', ', '"q": 1', '\n', '\x00', '😀', '\\', '"'])
OUTPUT = st.one_of(
    st.text(max_size=200),  # random text, lone surrogates included
    st.binary(max_size=200).map(lambda b: b.decode('utf-8', 'surrogateescape')),  # random bytes as a model gave them
    st.lists(NOISE, max_size=30).map(''.join),
    st.integers(1, 5000).map(lambda n: action('[' * n)),  # degenerate nesting
    st.integers(1, 5000).map(lambda n: action('{"q": ' * n)),
    st.integers(1, 3).map(lambda k: action('{"q": "' + 'x' * (k * MAX_ARGUMENTS_CHARS) + '"}')),  # huge
    JSON.map(lambda v: action(json.dumps({'q': v}, allow_nan=True))),
)


@BOUNDED
@given(OUTPUT, st.booleans())
def test_the_judge_gives_every_model_output_an_outcome(output, needs_call):
    expected = {'name': 'lookup', 'arguments': {'q': 'a'}} if needs_call else None
    j = judge(expected, output, tools=case({}).tools)
    assert j.kind in OUTCOMES
    if j.call is not None and j.arguments is not None:
        json.dumps(j.arguments, allow_nan=False).encode('utf-8')  # what the judge accepts is JSON and UTF-8


SURROGATES = st.lists(st.integers(0xD800, 0xDFFF), min_size=1, max_size=3).map(lambda cs: ''.join(map(chr, cs)))
TEXT = st.lists(st.text(max_size=8) | SURROGATES | st.sampled_from(['\x85', '\u2028', '\x00', '"', '\\']),
                max_size=6).map(''.join)
ANY_VALUE = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | TEXT,
                         lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
                         max_leaves=12)


@BOUNDED
@given(ANY_VALUE)
def test_storable_makes_anything_one_line_of_strict_json(value):
    from helpers import jsonl
    text = jsonl.dumps(jsonl.storable(value))
    text.encode('utf-8')
    assert len(text.splitlines()) == 1 and json.dumps(jsonl.loads(text)) is not None


def test_storable_replaces_deep_nesting_with_a_note():
    from helpers import jsonl
    deep = []
    for _ in range(5000):
        deep = [deep]
    assert 'nested deeper' in jsonl.dumps(jsonl.storable(deep))


MODEL_OUTPUT = st.one_of(
    TEXT,
    st.binary(max_size=80).map(lambda b: b.decode('utf-8', 'surrogateescape')),
    TEXT.map(lambda t: action(json.dumps({'q': t}, ensure_ascii=False))),
    st.sampled_from(['NaN', 'Infinity', '-Infinity', '1e999']).map(lambda v: action('{"q": ' + v + '}')),
    st.integers(1, 3000).map(lambda n: action('[' * n)),
    st.integers(40_000, 80_000).map(lambda n: action('{"q": "' + 'y' * n + '"}')),  # past the reply bound
)


@settings(max_examples=min(EXAMPLES, 8), deadline=None, database=None, derandomize=EXAMPLES <= 100,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.lists(MODEL_OUTPUT, min_size=1, max_size=4))
def test_evaluate_keeps_every_model_output(outputs):
    """Whatever the model emits, evaluate writes one strict-JSON, UTF-8 row per case, and the metrics it writes
    are those of rescoring its rows."""
    import tempfile
    from pathlib import Path
    from helpers import jsonl
    from helpers.evaluation import evaluate, load_predictions
    from helpers.scripted_server import ScriptedServer
    cases = [case({'q': 'a'}, cid=f'c{i}') for i in range(len(outputs))]
    for i, c in enumerate(cases):
        c.query = f'query {i}'

    def script(body):
        user = body['messages'][-1]['content']
        return 'done' if 'Observation:' in user else outputs[int(user.rsplit(' ', 1)[-1])]
    with tempfile.TemporaryDirectory() as tmp, ScriptedServer(script) as srv:
        metrics = evaluate(cases, srv.base_url, 'm', tmp, workers=2, progress=False)
        raw = Path(tmp, 'predictions.jsonl').read_bytes()
        rows = [jsonl.loads(line) for line in raw.decode('utf-8').split('\n') if line]
        assert [r['id'] for r in rows] == [c.id for c in cases]
        again, _ = score(cases, load_predictions(Path(tmp, 'predictions.jsonl')))
        assert again['counts'] == metrics['counts'] and metrics['n_cases'] == len(cases)
