"""The parser and every metric on hand-made predictions with known values; evaluation against a scripted
server checks that RolePlay really runs the tool with the parsed arguments and that metrics come out as scripted."""
import json
import subprocess
import sys

import pytest

from helpers.agentfabric import EvalCase, format_call
from helpers import evaluation, narrate
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
        # exact: the same JSON values, in another key order
        'a': pred('a', 'Action: get_weather\nAction Input: {"days": 3, "city": "Paris"}\n', 'It is sunny in Paris.'),
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
    assert s.exact and s.kind == 'ok' and s.weak_answer  # the call is right, but no answer came back


def test_chinese_answers_and_weak_answers_apart_from_the_call():
    c = case('z', PARIS, ref='巴黎今天晴，25度。', lang='zh', query='巴黎天气？')
    good = score_case(c, pred('z', format_call('get_weather', {'city': 'Paris', 'days': 3}), '巴黎今天晴，气温25度。'))
    weak = score_case(c, pred('z', format_call('get_weather', {'city': 'Paris', 'days': 3}), 'OK'))
    wrong = score_case(c, pred('z', format_call('search', {'query': 'Paris'}), 'OK'))
    assert good.kind == 'ok' and good.rouge > 0.7 and good.weak_answer is False
    assert weak.kind == 'ok' and weak.rouge == 0.0 and weak.weak_answer is True  # still a right call
    assert wrong.kind == 'wrong_tool' and wrong.weak_answer is None  # a weak answer counts only after a right call
    m = aggregate([c, c, c], [good, weak, wrong])
    assert m['counts']['weak_answer_rate'] == [1, 2] and m['counts']['args_exact_acc'] == [2, 3]


def test_outcome_counts_square_with_the_rates():
    cases = [case('a', PARIS), case('b', PARIS), case('c', PARIS), case('d', PARIS), case('e', None, ref='Hello!'),
             case('f', None)]
    preds = {'a': pred('a', format_call('get_weather', {'city': 'Paris', 'days': 3}), 'OK'),
             'b': pred('b', format_call('get_weather', {'city': 'Rome'})),
             'c': pred('c', "Action: get_weather\nAction Input: {'city': 'Paris'}"),
             'd': pred('d', 'It is sunny.'), 'e': pred('e', 'Hello!', 'Hello!'),
             'f': pred('f', format_call('search', {'query': 'hi'}))}
    metrics, scores = score(cases, preds)
    rows = evaluation.outcome_counts(cases, scores)
    need = {k: v for k, v in rows.items() if k.startswith('needs a call')}
    assert sum(need.values()) == metrics['n_with_call'] == 4
    right_tool = sum(v for k, v in need.items() if 'right' in k)  # right call + wrong args + not JSON
    assert right_tool == metrics['counts']['tool_selection_acc'][0] == 3
    assert rows['needs a call: right call'] == metrics['counts']['args_exact_acc'][0] == 1
    assert rows['needs no call: called a tool (none was needed)'] == metrics['counts']['false_positive_rate'][0] == 1
    assert rows['weak answer after a right outcome (apart)'] == 1  # a: right call, answer 'OK'


def test_a_verdict_under_every_output():
    v = evaluation.verdict
    assert v(PARIS, format_call('get_weather', {'city': 'Paris', 'days': 3})).startswith('✓ right call: get_weather')
    assert v(PARIS, format_call('search', {'query': 'x'})) == \
        '✗ wrong tool: search (expected get_weather {"city": "Paris", "days": 3})'
    assert v(PARIS, 'It is sunny.').startswith('✗ no call')
    assert v(PARIS, format_call('get_weather', {'city': 'Rome'})).startswith('✗ right tool, wrong arguments: {"city": "Rome"}')
    assert 'not a JSON object' in v(PARIS, "Action: get_weather\nAction Input: {'city': 1}")
    assert v(None, 'Hi!') == '✓ no call, and none was needed'
    assert v(None, format_call('search', {'query': 'hi'})).startswith('✗ called search')
    assert v(PARIS, '', error='RuntimeError: boom') == '✗ error: RuntimeError: boom'


def test_small_groups_get_counts_and_intervals_not_long_decimals():
    assert evaluation.format_rate(2, 3) == '2/3 [0.21, 0.94]'
    assert evaluation.format_rate(40, 60) == '0.67 [0.54, 0.77] (40/60)'
    assert evaluation.format_rate(0, 0) == '–'


def arm(n_call=101, n_none=49, **counts):
    """Hand-made metrics of one arm: counts {key: k} over the usual denominators."""
    denominators = {'tool_selection_acc': n_call, 'args_exact_acc': n_call, 'false_positive_rate': n_none,
                    'invalid_call_rate': counts.pop('n_called', 60), 'weak_answer_rate': counts.pop('n_right', 40)}
    m = {'n_cases': n_call + n_none, 'n_with_call': n_call, 'n_without_call': n_none, 'counts': {},
         'args_f1': counts.pop('args_f1', None), 'answer_rouge_l': counts.pop('answer_rouge_l', None)}
    for key, n in denominators.items():
        k = counts.get(key, 0)
        m['counts'][key] = [k, n]
        m[key] = k / n if n else None
    return m


def test_differences_have_newcombe_intervals_and_a_direction():
    lo, hi = evaluation.diff_interval(79, 101, 9, 101)
    assert 0.57 < lo < 0.60 and 0.77 < hi < 0.80  # Newcombe 1998, method 10
    assert evaluation.diff_interval(1, 0, 1, 2) is None
    base = arm(tool_selection_acc=9, false_positive_rate=9, args_f1=0.05)
    tuned = arm(tool_selection_acc=79, false_positive_rate=25, args_f1=0.63)
    changes = {c.key: c for c in evaluation.compare(tuned, base)}
    assert changes['tool_selection_acc'].verdict == 'better'
    assert changes['false_positive_rate'].verdict == 'worse'  # more false calls is worse, though Δ > 0
    assert changes['args_f1'].interval is None and changes['args_f1'].verdict == 'higher (untested)'
    assert changes['answer_rouge_l'].verdict == 'n/a'
    same = {c.key: c for c in evaluation.compare(arm(false_positive_rate=8), arm(false_positive_rate=9))}
    assert same['false_positive_rate'].verdict == 'unclear'


def test_the_conclusion_is_written_from_the_numbers():
    arms = {'base': arm(tool_selection_acc=9, args_exact_acc=1, false_positive_rate=9, invalid_call_rate=20,
                        args_f1=0.05, answer_rouge_l=0.10, weak_answer_rate=5, n_right=10),
            'fine-tuned': arm(tool_selection_acc=79, args_exact_acc=39, false_positive_rate=8, invalid_call_rate=3,
                              args_f1=0.63, answer_rouge_l=0.29, weak_answer_rate=12)}
    kinds = {'fine-tuned': {'ok': 80, 'wrong_arguments': 40, 'wrong_tool': 12, 'no_call': 10, 'false_call': 8}}
    split = {'fine-tuned': {'seen tool': arm(n_call=70, tool_selection_acc=63),
                            'holdout tool': arm(n_call=31, tool_selection_acc=16)}}
    text = evaluation.conclusion(arms, 'base', kinds, split)
    better = next(line for line in text.splitlines() if line.startswith('- Better:'))
    assert 'tool selection ↑ 0.09 → 0.78 (Δ +0.69 [+0.' in better and 'arguments exact ↑' in better
    assert 'invalid Action Input ↓ 0.33 → 0.05 (Δ -0.28 [' in better  # fewer is better
    unclear = next(line for line in text.splitlines() if line.startswith('- Unclear:'))
    assert 'false calls ↓ 0.18 → 0.16' in unclear and 'weak answers ↓ 0.50 → 0.30' in unclear
    assert '- Worse:' not in text
    assert 'Most frequent failure: right tool, wrong arguments in 40 of 150 cases' in text
    assert 'Tools never seen in training: selection 0.52 [0.35, 0.68] (16/31) vs 0.90' in text and 'real gap' in text
    assert '- Means, without an interval: arguments F1 ↑ 0.05 → 0.63 (Δ +0.58)' in text
    worse = evaluation.conclusion({'a': arm(false_positive_rate=5), 'b': arm(false_positive_rate=25)}, 'a')
    assert '- Worse: false calls ↓ 0.10 → 0.51' in worse
    loops = evaluation.conclusion(arms, 'base', kinds, split, {'fine-tuned': {'ran': 123, 'recalled': 42, 'stopped': 39}})
    assert "- Loops: after the tool's result it called again in 0.34 [" in loops and '(42/123)' in loops
    assert '(39 stopped at the call limit)' in loops and 'Loops' not in text  # said only when measured


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
                                            'parsed': {'city': 'Paris', 'days': 3}, 'observation': 'sunny'}]
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


def test_the_gallery_takes_one_case_of_each_kind():
    history = [{'role': 'user', 'content': 'Weather in Rome?'}, {'role': 'assistant', 'content': 'Sunny.'}]
    seen, hold = case('s', PARIS), case('h', PARIS)
    hold.meta['holdout'] = True
    follow = case('f', PARIS)
    follow.history = history
    picked = evaluation.showcase([case('n', None), seen, hold, follow, case('s2', PARIS)])
    assert {k: c.id for k, c in picked.items()} == {
        'a tool seen in training': 's', 'a tool never seen in training': 'h', 'a question that needs no tool': 'n',
        'a follow-up, earlier turns as history': 'f'}  # no thank-you case here: that kind is left out


def test_contrasts_prefer_cases_where_the_arms_differ():
    cases = [case('a', PARIS), case('b', PARIS), case('c', PARIS), case('d', None), case('e', None)]
    right = format_call('get_weather', {'city': 'Paris', 'days': 3})
    tuned = {'a': pred('a', right), 'b': pred('b', right), 'c': pred('c', format_call('search', {'query': 'x'})),
             'd': pred('d', 'Hi'), 'e': pred('e', 'Hi')}
    base = {'a': pred('a', right), 'b': pred('b', 'no idea'), 'c': pred('c', right), 'd': pred('d', 'Hi'),
            'e': pred('e', format_call('search', {'query': 'hi'}))}
    scores = {'tuned': score(cases, tuned)[1], 'base': score(cases, base)[1]}
    picked = {k: c.id for k, c in evaluation.contrasts(cases, scores, 'tuned', 'base').items()}
    assert picked == {'a right call of tuned (base: no call (one was needed))': 'b', 'wrong tool by tuned': 'c',
                      'a question that needs no tool': 'e'}


def test_the_reply_shown_is_what_agentfabric_showed():
    c = case('a', PARIS)
    call = format_call('get_weather', {'city': 'Paris'})
    ran = {'output': call, 'answer': 'Sunny.', 'calls_executed': [{'name': 'get_weather', 'observation': 'sunny'}],
           'n_llm_calls': 2}
    assert evaluation.shown_reply(c, ran) == call + '\nObservation: <result>sunny</result>\nAnswer:Sunny.'
    wrong = {**ran, 'calls_executed': [{'name': 'wiki', 'observation': 'error: wiki is not the tool'}],
             'n_llm_calls': 4}
    shown = evaluation.shown_reply(c, wrong)  # what this tool really returned, not the case's recorded result
    assert '<result>error: wiki is not the tool</result>' in shown and 'sunny' not in shown
    assert '[… 2 more model outputs, each after a tool result …]\nSunny.' in shown
    old = evaluation.shown_reply(c, {**ran, 'calls_executed': [{'name': 'get_weather'}]})
    assert old.startswith(call) and 'not in these predictions' in old and 'sunny' not in old
    assert evaluation.shown_reply(c, {'output': 'Hi', 'answer': 'Hi', 'calls_executed': []}) == 'Hi'
    assert evaluation.shown_reply(c, {'output': '', 'error': 'boom'}) == '(no output: boom)'


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
    ({'city': 'Paris', 'nights': 3}, {'city': 'Paris', 'nights': '3'}, False, False),  # "3" is not an integer
    ({'city': 'Paris', 'nights': 3}, {'city': 'Paris', 'nights': 3.0}, False, False),  # nor is 3.0 ...
    ({'city': 'Paris', 'budget': 200}, {'city': 'Paris', 'budget': 200.0}, True, True),  # ... but it is a number
    ({'city': 'Paris', 'budget': 99.5}, {'city': 'Paris', 'budget': 99.50}, True, True),
    ({'city': 'Paris', 'budget': 10 ** 400}, {'city': 'Paris', 'budget': 10 ** 400}, True, True),  # beyond floats
    ({'city': 'Paris', 'nights': 3}, {'nights': 3}, False, False),  # a required parameter missing
    ({'city': 'Paris', 'nights': 3}, {'city': 'Paris'}, False, False),  # the optional value asked for, dropped
    ({'city': 'Paris', 'nights': 1}, {'city': 'Paris'}, False, True),  # ... unless what was asked is the default
    ({'city': 'Paris', 'budget': 200}, {'city': 'Paris'}, False, False),  # no default to fall back on
    ({'city': 'Paris', 'breakfast': True}, {'city': 'Paris', 'breakfast': 'True'}, False, False),  # a string
    ({'city': 'Paris', 'breakfast': True}, {'city': 'Paris', 'breakfast': 1}, False, False),  # a number
    ({'city': 'Paris', 'breakfast': True}, {'city': 'paris', 'breakfast': True}, False, True),
    ({'city': 'Paris', 'nights': 2}, {'city': 'Paris', 'nights': True}, False, False),  # a boolean is no integer
    ({'city': 'Paris', 'budget': 10 ** 16}, {'city': 'Paris', 'budget': 1e16}, True, True),  # numbers by value
    ({'city': 'Paris', 'budget': 5}, {'city': 'Paris', 'budget': '5'}, False, False),  # "5" is no number
    ({'city': 'Paris', 'nights': 3}, {'nights': 3, 'city': 'Paris'}, True, True),  # key order does not matter
    ({'city': 'Paris', 'room': 'suite'}, {'city': 'Paris', 'room': 'Suite '}, False, True),  # exact is exact
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
    rows = evaluation.group_rows(cases, {'x': scores, 'y': scores[::-1]}, lambda c: c.lang)
    assert rows['zh']['cases'] == 3 and rows['en']['cases'] == 2
    assert rows['zh']['x · false calls ↓'] == '1/2 [0.09, 0.91]'  # a small group: count and interval
    assert {'y · tool selection ↑', 'y · arguments exact ↑'} < set(rows['en'])
    assert narrate.group_reading(rows, 'x', 'language', minimum=1).startswith("Per language, x's tool selection")


@pytest.mark.parametrize('expected, output, kinds', [
    ({'city': 'Paris'}, format_call('book_hotel', {'city': 'Paris'}), []),  # exact
    ({'city': 'Paris'}, format_call('get_weather', {'city': 'Paris'}), []),  # wrong tool: not an argument error
    ({'city': 'Paris'}, "Action: book_hotel\nAction Input: {'city': 'Paris'}", ['invalid_json']),
    ({'city': 'Paris', 'nights': 3}, format_call('book_hotel', {'nights': 3}), ['missing_required']),
    ({'city': 'Paris', 'nights': 3}, format_call('book_hotel', {'city': 'Paris'}), ['missing_optional']),
    ({'city': 'Paris'}, format_call('book_hotel', {'city': 'Paris', 'nights': 1}), ['unasked_optional']),
    ({'city': 'Paris'}, format_call('book_hotel', {'city': 'Paris', 'pool': True}), ['unknown_param']),
    ({'city': 'Paris', 'nights': 3}, format_call('book_hotel', {'city': 'Paris', 'nights': '3 nights'}),
     ['wrong_type']),
    ({'city': 'Paris', 'nights': 3}, format_call('book_hotel', {'city': 'Paris', 'nights': 4}), ['changed_value']),
    ({'city': 'Paris'}, format_call('book_hotel', {'city': 'paris'}), ['changed_value']),  # as args_exact_acc
    ({'city': 'Paris', 'nights': 3}, format_call('book_hotel', {'city': 'Rome', 'budget': 90, 'spa': 1}),
     ['missing_optional', 'unasked_optional', 'unknown_param', 'changed_value']),  # several at once
])
def test_argument_error_kinds_on_hand_made_predictions(expected, output, kinds):
    c = hotel_case('h', expected)
    s = score_case(c, pred('h', output))
    assert list(s.arg_errors) == kinds
    assert (kinds == []) == (s.kind in ('ok', 'wrong_tool'))  # every right-tool failure gets a reason


def test_argument_error_counts_and_examples():
    cases = [hotel_case('a', {'city': 'Paris'}), hotel_case('b', {'city': 'Paris', 'nights': 3}, lang='zh'),
             hotel_case('c', {'city': 'Paris'}), hotel_case('d', {'city': 'Paris'}), case('e', None)]
    preds = {'a': pred('a', format_call('book_hotel', {'city': 'Paris'})),
             'b': pred('b', format_call('book_hotel', {'city': 'Rome', 'budget': 50})),
             'c': pred('c', 'Action: book_hotel\nAction Input: {city: Paris}'),
             'd': pred('d', format_call('search', {'query': 'Paris'})), 'e': pred('e', 'Hello')}
    _, scores = score(cases, preds)
    counts = evaluation.argument_error_counts(cases, scores)
    labels = evaluation.ARG_ERRORS
    assert counts['right-tool calls'] == 3 and counts['arguments exact'] == 1  # d named the wrong tool
    assert counts[labels['invalid_json']] == 1 and counts[labels['changed_value']] == 1
    assert counts[labels['missing_optional']] == 1 and counts[labels['unasked_optional']] == 1
    assert counts[labels['unknown_param']] == counts[labels['missing_required']] == 0
    rows = evaluation.argument_error_examples(cases, scores)
    assert [r['kind'] for r in rows] == [labels[k] for k in ('invalid_json', 'missing_optional', 'unasked_optional',
                                                              'changed_value')]
    assert rows[0]['got'] == '{city: Paris}'  # the Action Input as written when it is not JSON
    assert rows[1]['lang'] == 'zh' and json.loads(rows[1]['expected']) == {'city': 'Paris', 'nights': 3}


def test_the_reply_budget_fits_the_longest_expected_call_and_warns_when_a_given_cap_cuts_one():
    """The default cap never cuts a right call: a long Chinese value costs more tokens than a fixed 64."""
    from transformers import AutoTokenizer
    from helpers.models import prepare_model
    model = prepare_model('tiny-qwen2')
    long_text = '很高兴认识你，希望我们以后能成为无话不谈的好朋友，' * 4
    cases = [case('short', PARIS), case('none', None),
             case('long', {'name': 'search', 'arguments': {'query': long_text}}, lang='zh', query=long_text)]
    tok = AutoTokenizer.from_pretrained(str(model))
    n_long = len(tok(format_call('search', {'query': long_text}), add_special_tokens=False)['input_ids'])
    assert evaluation.expected_call_tokens(cases, model)['long'] == n_long and 'none' not in \
        evaluation.expected_call_tokens(cases, model)
    assert n_long > evaluation.MIN_REPLY_TOKENS
    assert evaluation.reply_budget(cases, model) == n_long + evaluation.REPLY_MARGIN
    assert evaluation.reply_budget(cases[:2], model) == evaluation.MIN_REPLY_TOKENS  # short calls: the floor
    said = []
    assert evaluation.reply_budget(cases, model, 32, log=said.append) == 32  # an explicit cap is kept …
    assert len(said) == 1 and '1 case(s)' in said[0] and 'long' in said[0]  # … and the cut case is named
    for bad in (0, -5, 2.5, '64'):
        with pytest.raises(ValueError, match='max_tokens'):
            evaluation.reply_budget(cases, model, bad)


def test_a_call_with_bad_arguments_prints_no_traceback(capsys, tmp_path):
    """RolePlay prints a traceback for a tool call that fails its argument check; the notebook shows only the
    turn, whose observation carries the reason."""
    from helpers.agent_tools import llm_config, run_case

    def script(body):
        user = body['messages'][-1]['content']
        return 'Sorry.' if 'Observation:' in user else format_call('get_weather', {'days': 3})
    with ScriptedServer(script) as srv:
        turn = run_case(case('a', PARIS), llm_config(srv.base_url, 'scripted'))
        assert turn.calls and turn.calls[0].arguments is None  # the call reached the tool and failed its check
        assert 'city' in ''.join(turn.chunks) and 'failed to call' in ''.join(turn.chunks)
        assert 'Traceback' not in capsys.readouterr().out
        evaluate([case(c, PARIS) for c in 'bcd'], srv.base_url, 'scripted', tmp_path, workers=3, progress=False)
    assert 'Traceback' not in capsys.readouterr().out
    print('after')  # the threads' stdout swaps left stdout where it was
    assert capsys.readouterr().out == 'after\n'
