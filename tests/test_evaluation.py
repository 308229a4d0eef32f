"""The parser and every metric on hand-made predictions with known values; evaluation against a scripted
server checks that RolePlay really runs the tool with the parsed arguments and that metrics come out as scripted."""
import json
import subprocess
import sys

import pytest

from helpers.agentfabric import EvalCase, format_call
from helpers.evaluation import aggregate, evaluate, per_language, rouge_l, score, score_case, wilson
from helpers.scripted_server import ScriptedServer

TOOLS = [{'name': 'get_weather', 'description': 'Weather of a city.',
          'parameters': [{'name': 'city', 'type': 'string', 'description': 'city', 'required': True},
                         {'name': 'days', 'type': 'integer', 'description': 'days', 'required': False}]},
         {'name': 'search', 'description': 'Web search.',
          'parameters': [{'name': 'query', 'type': 'string', 'description': 'q', 'required': True}]}]


def case(cid, call, ref='It is sunny in Paris.', lang='en', query='Weather in Paris?'):
    return EvalCase.from_dict({'id': cid, 'lang': lang, 'instruction': 'x', 'tools': TOOLS, 'query': query,
                               'expected_call': call, 'observation': 'sunny', 'reference_answer': ref})


PARIS = {'name': 'get_weather', 'arguments': {'city': 'Paris', 'days': 3}}


def pred(cid, output, answer=''):
    return {'id': cid, 'output': output, 'answer': answer}


def test_rouge_l_words_and_characters():
    assert rouge_l('the cat sat', 'the cat sat') == 1.0
    assert rouge_l('The CAT', 'the cat sat on') == pytest.approx(2 * 1 * 0.5 / 1.5)  # lower-cased words
    assert rouge_l('', 'anything') == 0.0 and rouge_l('   ', 'x') == 0.0
    assert rouge_l('北京晴天', '北京今天晴') == pytest.approx(2 * (3 / 4) * (3 / 5) / (3 / 4 + 3 / 5))  # characters
    assert rouge_l('北京 晴', 'Beijing 晴') > 0  # CJK on either side switches to characters
    assert rouge_l('abc', 'xyz') == 0.0


def test_wilson_interval():
    lo, hi = wilson(9, 10)
    assert 0.59 < lo < 0.6 and 0.98 < hi < 0.99
    assert wilson(0, 0) is None
    assert wilson(0, 20)[0] == 0.0 and wilson(20, 20)[1] == 1.0


def test_every_metric_on_known_predictions():
    cases = [case('a', PARIS), case('b', PARIS), case('c', PARIS), case('d', PARIS),
             case('e', None, ref='Hello!'), case('f', None, ref='Hi there'), case('g', PARIS, ref='')]
    preds = {
        # exact, typed value given as a string still equals after str().strip()
        'a': pred('a', 'Action: get_weather\nAction Input: {"city": "Paris", "days": "3"}\n', 'It is sunny in Paris.'),
        # right tool, one argument missing: not exact, 1 of 2 pairs
        'b': pred('b', 'Action:  get_weather \nAction Input: {"city": "Paris"}', 'sunny'),
        # wrong tool, its arguments still count as predicted pairs
        'c': pred('c', 'Action: search\nAction Input: {"query": "Paris weather", "city": "Paris"}', ''),
        # right tool, Action Input not JSON (single quotes): invalid, no pairs
        'd': pred('d', "Action: get_weather\nAction Input: {'city': 'Paris', 'days': 3}", 'x'),
        # no call expected, none made
        'e': pred('e', 'Hello! How can I help?', 'Hello! How can I help?'),
        # no call expected, one made: a false positive
        'f': pred('f', 'Action: search\nAction Input: {"query": "hi"}', ''),
        # expected call, none parsed (lines not adjacent), no reference: no ROUGE
        'g': pred('g', 'Action: get_weather\n\nAction Input: {"city": "Paris"}', 'done'),
    }
    metrics, scores = score(cases, preds)
    assert metrics['n_cases'] == 7 and metrics['n_with_call'] == 5 and metrics['n_without_call'] == 2
    assert metrics['tool_selection_acc'] == pytest.approx(3 / 5)  # a, b, d
    assert metrics['args_exact_acc'] == pytest.approx(1 / 5)  # a only
    # pairs: expected 2 per case × 5 = 10; predicted a:2 b:1 c:2 d:0 g:0 = 5; true a:2 b:1 c:1 = 4
    p, r = 4 / 5, 4 / 10
    assert metrics['args_f1'] == pytest.approx(round(2 * p * r / (p + r), 4))
    assert metrics['false_positive_rate'] == pytest.approx(1 / 2)
    assert metrics['invalid_call_rate'] == pytest.approx(1 / 5)  # parsed calls: a b c d f; d invalid
    rouges = [1.0, rouge_l('sunny', 'It is sunny in Paris.'), 0.0, rouge_l('x', 'It is sunny in Paris.'),
              rouge_l('Hello! How can I help?', 'Hello!'), 0.0]
    assert metrics['answer_rouge_l'] == pytest.approx(round(sum(rouges) / 6, 4))
    assert metrics['counts']['tool_selection_acc'] == [3, 5]
    assert tuple(metrics['ci95']['false_positive_rate']) == wilson(1, 2)
    assert [s.kind for s in scores] == ['ok', 'wrong_arguments', 'wrong_tool', 'invalid_json', 'ok', 'false_call',
                                        'no_call']


def test_ties_empty_and_missing_predictions():
    cases = [case('a', PARIS), case('b', None, ref='')]
    metrics, scores = score(cases, {})
    assert metrics['n_missing_predictions'] == 2
    assert metrics['tool_selection_acc'] == 0.0 and metrics['false_positive_rate'] == 0.0
    assert metrics['invalid_call_rate'] is None  # no parsed call at all
    assert metrics['args_f1'] == 0.0
    # first match wins, like RolePlay
    s = score_case(case('x', PARIS), pred('x', 'Action: get_weather\nAction Input: {"city": "Paris", "days": 3}\n'
                                               'Action: search\nAction Input: {"query": "x"}'))
    assert s.exact and s.kind == 'bad_summary'  # the call is right, but no answer came back


def test_chinese_answers_and_bad_summary():
    c = case('z', PARIS, ref='巴黎今天晴，25度。', lang='zh', query='巴黎天气？')
    good = score_case(c, pred('z', format_call('get_weather', {'city': 'Paris', 'days': 3}), '巴黎今天晴，气温25度。'))
    bad = score_case(c, pred('z', format_call('get_weather', {'city': 'Paris', 'days': 3}), 'OK'))
    assert good.kind == 'ok' and good.rouge > 0.7
    assert bad.kind == 'bad_summary' and bad.rouge == 0.0


def test_aggregate_without_call_cases_gives_none():
    m = aggregate([case('e', None)], [score_case(case('e', None), pred('e', 'hi', 'hi'))])
    assert m['tool_selection_acc'] is None and m['args_exact_acc'] is None and m['args_f1'] is None


def test_evaluate_runs_the_real_roleplay_loop(tmp_path):
    """A scripted server plays the model: RolePlay must parse its call, run our tool with those arguments,
    send the observation back, and the metrics must be exactly what the script implies."""
    cases = [case('ok', PARIS), case('wrong', PARIS, query='Weather in Rome?'), case('none', None, ref='Hi!',
                                                                                      query='hello there')]

    def script(body):
        user = body['messages'][-1]['content']
        if 'Observation: <result>sunny</result>\nAnswer:' in user:
            return 'It is sunny in Paris.'
        if user.endswith('Weather in Paris?'):
            return format_call('get_weather', {'city': 'Paris', 'days': 3}) + 'Observation: invented'
        if user.endswith('Weather in Rome?'):
            return 'Action: search\nAction Input: {"query": "Rome weather"}\n'
        return 'Hi!'

    with ScriptedServer(script) as srv:
        metrics = evaluate(cases, srv.base_url, 'scripted', tmp_path, workers=2, progress=False)
    rows = {r['id']: r for r in map(json.loads, (tmp_path / 'predictions.jsonl').read_text().splitlines())}
    assert rows['ok']['calls_executed'] == [{'name': 'get_weather', 'arguments': '{"city": "Paris", "days": 3}',
                                            'parsed': {'city': 'Paris', 'days': 3}}]
    assert rows['ok']['output'].endswith('{"city": "Paris", "days": 3}\n')  # cut at Observation:
    assert rows['ok']['answer'] == 'It is sunny in Paris.' and rows['ok']['n_llm_calls'] == 2
    assert rows['wrong']['calls_executed'][0]['name'] == 'search'
    assert rows['none']['calls_executed'] == [] and rows['none']['answer'] == 'Hi!'
    assert metrics['tool_selection_acc'] == 0.5 and metrics['args_exact_acc'] == 0.5
    assert metrics['false_positive_rate'] == 0.0 and metrics['invalid_call_rate'] == 0.0
    assert json.loads((tmp_path / 'metrics.json').read_text())['n_cases'] == 3
    # every request carried the cap and RolePlay's stop words
    assert all(r['max_tokens'] == 96 and r['stop'][-2:] == ['Observation:', 'Observation:\n'] for r in srv.chat_requests())


def test_a_failing_case_is_recorded_and_the_run_goes_on(tmp_path):
    cases = [case('a', PARIS), case('b', None, ref='Hi!', query='hello')]

    def script(body):
        if body['messages'][-1]['content'].endswith('hello'):
            raise RuntimeError('model crashed')
        return 'It is sunny.'

    with ScriptedServer(script, error_status=400) as srv:  # 400: the OpenAI client does not retry
        metrics = evaluate(cases, srv.base_url, 'scripted', tmp_path, workers=1, progress=False)
    rows = [json.loads(line) for line in (tmp_path / 'predictions.jsonl').read_text().splitlines()]
    assert rows[1]['error'] and not rows[0]['error']  # RolePlay retried, gave up, the case is marked failed
    assert metrics['n_errors'] == 1 and metrics['n_cases'] == 2


def test_score_cli_prints_only_json(tmp_path):
    cases_path, preds_path = tmp_path / 'c.jsonl', tmp_path / 'p.jsonl'
    cases_path.write_text(json.dumps(case('a', PARIS).to_dict()) + '\n')
    preds_path.write_text(json.dumps(pred('a', format_call('get_weather', {'city': 'Paris', 'days': 3}), 'x')) + '\n')
    res = subprocess.run([sys.executable, '-m', 'helpers', 'score', '--cases', str(cases_path), '--predictions',
                          str(preds_path)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)['args_exact_acc'] == 1.0
    preds_path.write_text('not json\n')
    res = subprocess.run([sys.executable, '-m', 'helpers', 'score', '--cases', str(cases_path), '--predictions',
                          str(preds_path)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and res.stdout == ''


def test_a_model_that_keeps_calling_is_stopped(tmp_path):
    loop = format_call('get_weather', {'city': 'Paris'})
    with ScriptedServer(lambda body: loop) as srv:
        metrics = evaluate([case('a', PARIS)], srv.base_url, 'scripted', tmp_path, workers=1, progress=False,
                           max_llm_calls=3)
    row = json.loads((tmp_path / 'predictions.jsonl').read_text())
    assert row['stopped'] and row['n_llm_calls'] == 3 and len(srv.chat_requests()) == 3
    assert len(row['calls_executed']) == 3 and metrics['n_stopped'] == 1  # no 4th request was sent
    assert metrics['tool_selection_acc'] == 1.0  # the first call is still scored


HOTEL = {'name': 'book_hotel', 'description': 'Book a hotel room.',
         'parameters': [{'name': 'city', 'type': 'string', 'description': 'city', 'required': True},
                        {'name': 'nights', 'type': 'integer', 'description': 'nights', 'required': False, 'default': 1},
                        {'name': 'breakfast', 'type': 'boolean', 'description': 'b', 'required': False,
                         'default': False},
                        {'name': 'budget', 'type': 'number', 'description': 'max price', 'required': False},
                        {'name': 'room', 'type': 'string', 'description': 'room', 'required': False,
                         'enum': ['standard', 'suite'], 'default': 'standard'}]}


def hotel_case(cid, arguments, lang='en'):
    return EvalCase.from_dict({'id': cid, 'lang': lang, 'instruction': 'x', 'tools': [HOTEL] + TOOLS[:1],
                               'query': 'q', 'expected_call': {'name': 'book_hotel', 'arguments': arguments},
                               'observation': 'ok', 'reference_answer': ''})


@pytest.mark.parametrize('expected, given, exact, ast', [
    ({'city': 'Paris'}, {'city': 'Paris'}, True, True),
    ({'city': 'Paris'}, {'city': '  paris '}, False, True),  # case and surrounding spaces
    ({'city': 'Paris'}, {'city': 'Paris', 'nights': 1}, False, True),  # an optional parameter at its default
    ({'city': 'Paris'}, {'city': 'Paris', 'room': ' Standard'}, False, True),
    ({'city': 'Paris'}, {'city': 'Paris', 'breakfast': False}, False, True),
    ({'city': 'Paris'}, {'city': 'Paris', 'nights': 2}, False, False),  # optional, nobody asked, not the default
    ({'city': 'Paris'}, {'city': 'Paris', 'budget': 100}, False, False),  # optional without a default
    ({'city': 'Paris'}, {'city': 'Paris', 'pool': True}, False, False),  # a parameter the tool does not have
    ({'city': 'Paris', 'nights': 3}, {'city': 'Paris', 'nights': '3'}, True, False),  # "3" is not an integer
    ({'city': 'Paris', 'nights': 3}, {'city': 'Paris', 'nights': 3.0}, False, False),  # nor is 3.0 ...
    ({'city': 'Paris', 'budget': 200}, {'city': 'Paris', 'budget': 200.0}, False, True),  # ... but it is a number
    ({'city': 'Paris', 'budget': 99.5}, {'city': 'Paris', 'budget': 99.50}, True, True),
    ({'city': 'Paris', 'budget': 10 ** 400}, {'city': 'Paris', 'budget': 10 ** 400}, True, True),  # beyond floats
    ({'city': 'Paris', 'nights': 3}, {'nights': 3}, False, False),  # a required parameter missing
    ({'city': 'Paris', 'nights': 3}, {'city': 'Paris'}, False, False),  # the optional value asked for, dropped
    ({'city': 'Paris', 'nights': 1}, {'city': 'Paris'}, False, True),  # ... unless what was asked is the default
    ({'city': 'Paris', 'budget': 200}, {'city': 'Paris'}, False, False),  # no default to fall back on
    ({'city': 'Paris', 'breakfast': True}, {'city': 'Paris', 'breakfast': 'True'}, True, False),  # a string
    ({'city': 'Paris', 'breakfast': True}, {'city': 'Paris', 'breakfast': 1}, False, False),  # a number
    ({'city': 'Paris', 'breakfast': True}, {'city': 'paris', 'breakfast': True}, False, True),
    ({'city': 'Paris', 'nights': 2}, {'city': 'Paris', 'nights': True}, False, False),  # a boolean is no integer
])
def test_args_ast_acc_on_hand_made_predictions(expected, given, exact, ast):
    c = hotel_case('h', expected)
    s = score_case(c, pred('h', format_call('book_hotel', given)))
    assert (s.exact, s.ast) == (exact, ast)
    metrics, _ = score([c], {'h': pred('h', format_call('book_hotel', given))})
    assert metrics['args_ast_acc'] == float(ast) and metrics['counts']['args_ast_acc'] == [int(ast), 1]


def test_args_ast_acc_needs_the_right_tool_and_a_json_object():
    c = hotel_case('h', {'city': 'Paris'})
    assert score_case(c, pred('h', format_call('get_weather', {'city': 'Paris'}))).ast is False
    assert score_case(c, pred('h', "Action: book_hotel\nAction Input: {'city': 'Paris'}")).ast is False
    assert score_case(c, pred('h', 'No call.')).ast is False
    assert score_case(case('n', None), pred('n', 'Hi')).ast is None  # no call expected: not scored


def test_args_ast_acc_when_the_schema_lacks_types():
    """Converted data may declare every parameter a string while the expected value is a number: the expected
    value's own type is required then."""
    untyped = {'name': 'f', 'description': 'd', 'parameters': [{'name': 'n', 'description': 'count',
                                                                 'required': True}]}
    c = EvalCase.from_dict({'id': 'u', 'lang': 'en', 'instruction': 'x', 'tools': [untyped], 'query': 'q',
                            'expected_call': {'name': 'f', 'arguments': {'n': 3}}, 'observation': '',
                            'reference_answer': ''})
    assert score_case(c, pred('u', format_call('f', {'n': 3}))).ast is True
    assert score_case(c, pred('u', format_call('f', {'n': '3'}))).ast is False


def test_irrelevance_detection_and_per_language():
    cases = [case('a', PARIS), case('b', None, ref=''), case('c', None, ref='', lang='zh', query='你好'),
             case('d', None, ref='', lang='zh', query='在吗'), case('e', PARIS, lang='zh', query='巴黎天气')]
    preds = {'a': pred('a', format_call('get_weather', {'city': 'Paris', 'days': 3})),
             'b': pred('b', 'Hello!'), 'c': pred('c', format_call('search', {'query': '你好'})),
             'd': pred('d', '在的'), 'e': pred('e', format_call('get_weather', {'city': 'Paris'}))}
    metrics, scores = score(cases, preds)
    assert metrics['false_positive_rate'] == round(1 / 3, 4)
    assert metrics['irrelevance_detection'] == round(2 / 3, 4)
    assert metrics['counts']['irrelevance_detection'] == [2, 3]
    assert tuple(metrics['ci95']['irrelevance_detection']) == wilson(2, 3)
    by_lang = per_language(cases, scores)
    assert set(by_lang) == {'en', 'zh'}
    assert by_lang['en']['irrelevance_detection'] == 1.0 and by_lang['en']['n_cases'] == 2
    assert by_lang['zh']['irrelevance_detection'] == 0.5 and by_lang['zh']['counts']['false_positive_rate'] == [1, 2]
    assert by_lang['zh']['args_exact_acc'] == 0.0 and by_lang['en']['args_ast_acc'] == 1.0
