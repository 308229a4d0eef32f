"""The ms_agent → AgentFabric converter on hand-written raw records, including every kind of bad input."""
import json
import subprocess
import sys

import pytest

from helpers.agentfabric import parse_action, render, system_prompt
from helpers.convert import (ConversionError, ConversionReport, convert_file, convert_lines, parse_assistant,
                             parse_system, sample_rows)
from helpers.environment import repo_root

SAMPLE = repo_root() / 'data' / 'ms_agent_sample' / 'raw.jsonl'
FMT = ('\n\nUse the following format:\n\nThought: you should always think about what to do\nAction: the action to take, '
       'should be one of the above tools[{names}]\nAction Input: the input to the action\nObservation: the result\n'
       'Thought: I now know the final answer\nFinal Answer: the final answer\nBegin!')


def system(*apis):
    body = '\n\n'.join(f'{i + 1}. {a}' for i, a in enumerate(apis))
    return 'Answer the following questions as best you can. You have access to the following APIs:\n' + body + FMT


def api(name, desc, params):
    return (f'{name}: Call this tool to interact with the {name} API. What is the {name} API useful for? {desc}. '
            f'Parameters: {json.dumps(params, ensure_ascii=False)}')


FLIGHT = api('flight_search', 'Search flights between two cities', [
    {'name': 'origin', 'description': 'From city', 'required': 'True'},
    {'name': 'destination', 'description': 'To city', 'required': 'True'},
    {'name': 'cabin', 'description': 'Cabin, e.g. "economy"', 'required': 'False'}])
WEATHER_ZH = api('weather_cn', '查询城市天气', [{'name': 'city', 'description': '城市名，如"北京"', 'required': 'True'}])


def record(rid, sys_text, *turns):
    conv = [{'from': 'system', 'value': sys_text}]
    for user, assistant in turns:
        conv += [{'from': 'user', 'value': user}, {'from': 'assistant', 'value': assistant}]
    return json.dumps({'id': rid, 'conversations': conv}, ensure_ascii=False)


def test_multi_parameter_tool_keeps_all_parameters_and_required():
    tools = parse_system(system(FLIGHT))
    schema = tools[0].schema()
    assert list(schema['properties']) == ['origin', 'destination', 'cabin']
    assert schema['required'] == ['origin', 'destination']
    assert schema['properties']['cabin']['description'] == 'Cabin, e.g. "economy"'
    assert tools[0].description == 'Search flights between two cities'
    json.loads(tools[0].describe().split('Parameters: ')[1].rsplit(' Format the arguments', 1)[0])  # valid JSON


def test_more_than_nine_apis():
    apis = [api(f'tool_{k}', f'Tool number {k}', [{'name': 'x', 'description': 'x', 'required': 'True'}])
            for k in range(1, 13)]
    tools = parse_system(system(*apis))
    assert [t.name for t in tools] == [f'tool_{k}' for k in range(1, 13)]
    assert 'tool_10,tool_11,tool_12' in system_prompt(tools, '', 'en')


def test_chinese_and_english_descriptions_render_in_their_language():
    tools = parse_system(system(WEATHER_ZH, FLIGHT))
    text = system_prompt(tools, 'x', 'zh')
    assert 'weather_cn: weather_cn API。查询城市天气 输入参数:' in text
    assert 'flight_search: flight_search API. Search flights between two cities Parameters:' in text


def test_python_literal_parameter_lists_end_at_their_own_bracket():
    """Lists that are not JSON are scanned with their quotes respected: brackets and the other quote inside a
    string, escaped quotes, and text after the list belong to no parameter."""
    params = ("[{'name': 'q', 'description': 'a [list] of {it\\'s} \"x\" items', 'required': 'True'}, "
              "{'name': 'n', 'description': \"it's ]\", 'required': False}]")
    second = api('other', 'Other', [{'name': 'z', 'description': 'z', 'required': 'True'}])
    tools = parse_system(system(f'odd: Call this tool. Parameters: {params} and [no more]', second))
    assert [t.name for t in tools] == ['odd', 'other']
    assert [(p.name, p.description, p.required) for p in tools[0].parameters] == [
        ('q', 'a [list] of {it\'s} "x" items', True), ('n', "it's ]", False)]
    for broken in ("[{'name': 'a', 'description': 'never closed}]", "[{'name': 'a'}}", '[' * 5000):
        with pytest.raises(ConversionError, match='unbalanced'):
            parse_system(system(f'bad: Call this tool. Parameters: {broken}'))


def test_a_repeated_system_prompt_gives_equal_but_separate_tools():
    first, again = parse_system(system(FLIGHT, WEATHER_ZH)), parse_system(system(FLIGHT, WEATHER_ZH))
    assert first == again and first[0] is not again[0] and first[0].parameters[0] is not again[0].parameters[0]
    first[0].parameters.clear()
    assert len(parse_system(system(FLIGHT, WEATHER_ZH))[0].parameters) == 3


def test_single_quoted_and_multiline_action_input_become_one_line_json():
    names = {'flight_search'}
    calls, answer = parse_assistant("Action: flight_search\nAction Input: {'origin': 'New York', 'destination': "
                                    "'東京'}\nObservation: 3 flights\nThought: I now know the final answer\n"
                                    "Final Answer: There are 3.", names)
    assert calls[0].arguments == {'origin': 'New York', 'destination': '東京'} and answer == 'There are 3.'
    calls, _ = parse_assistant('Action: flight_search\nAction Input: {\n  "origin": "Paris",\n  "destination": '
                               '"Rome",\n  "cabin": "business"\n}\nObservation: ok\nFinal Answer: done', names)
    conv = next(convert_lines([record('r', system(FLIGHT), ('fly', 'Action: flight_search\nAction Input: {\n "origin":'
                                                            ' "Paris", "destination": "Rome"\n}\nObservation: ok\n'
                                                            'Final Answer: done'))]))
    target = render(conv)[0].target
    assert target == 'Action: flight_search\nAction Input: {"origin": "Paris", "destination": "Rome"}\n'
    assert parse_action(target).arguments == {'origin': 'Paris', 'destination': 'Rome'}


def test_record_without_a_call_and_multi_turn():
    lines = [record('r1', system(WEATHER_ZH), ('你好', '你好！有什么可以帮你？'),
                    ('北京天气如何', 'Action: weather_cn\nAction Input: {"city": "北京"}\nObservation: 晴\n'
                                  'Thought: I now know the final answer\nFinal Answer: 北京今天晴。'))]
    conv = next(convert_lines(lines))
    samples = render(conv)
    assert [s.kind for s in samples] == ['direct', 'call', 'answer']
    assert samples[0].target == '你好！有什么可以帮你？'
    assert samples[1].messages[1] == {'role': 'user', 'content': '你好'}  # history keeps the raw query
    assert samples[1].messages[2]['content'] == '你好！有什么可以帮你？'
    assert samples[2].messages[-1]['content'].endswith('\nObservation: <result>晴</result>\nAnswer:')
    assert samples[2].target == '北京今天晴。'


def test_chained_calls_give_one_sample_per_request():
    conv = next(convert_lines([record('c', system(FLIGHT, WEATHER_ZH), (
        'weather in 北京 then flights', 'Action: weather_cn\nAction Input: {"city": "北京"}\nObservation: 晴\n'
        'Action: flight_search\nAction Input: {"origin": "上海", "destination": "北京"}\nObservation: 2 flights\n'
        'Final Answer: 晴, 2 flights'))]))
    samples = render(conv)
    assert [s.kind for s in samples] == ['call', 'call', 'answer']
    assert 'Observation: <result>晴</result>\nAnswer:' in samples[1].messages[-1]['content']
    assert samples[1].target.startswith('Action: flight_search\n')


@pytest.mark.parametrize('line, reason', [
    ('{"conversations": [', 'not JSON'),
    ('[1, 2]', 'no "conversations"'),
    (json.dumps({'conversations': [{'from': 'user', 'value': 'x'}]}), 'system'),
    (json.dumps({'conversations': [{'from': 'system', 'value': 'Answer…'}]}), 'alternate'),
    (record('x', 'You are helpful.', ('q', 'a')), 'lists no APIs'),
    (record('x', system('broken: Call this tool. Parameters: [{"name": "a", '), ('q', 'a')), 'unbalanced'),
    (record('x', system(FLIGHT), ('q', 'Action: flight_search\nAction Input: go now\nObservation: x')), 'not JSON'),
    (record('x', system(FLIGHT), ('q', 'Action: hotel\nAction Input: {}\nObservation: x\nFinal Answer: y')),
     'not among the APIs'),
    (record('x', system(FLIGHT), ('q', 'Action: flight_search\nAction Input: {"origin": "a"}')), 'Observation'),
    (record('x', system(FLIGHT), ('q', 'Action: flight_search\nAction Input: [1]\nObservation: x')), 'JSON object'),
    (record('x', system(FLIGHT), ('', 'hello')), 'empty user'),
    (json.dumps({'conversations': [{'from': 'system', 'value': 3}]}), 'string "value"'),
])
def test_bad_input_is_reported_with_line_and_reason(line, reason):
    report = ConversionReport()
    good = record('good', system(FLIGHT), ('hi', 'hello'))
    convs = list(convert_lines([good, line, good], report=report))
    assert len(convs) == 2
    assert report.read == 3 and report.converted == 2 and len(report.rejected) == 1
    assert report.rejected[0]['line'] == 2 and reason in report.rejected[0]['reason'], report.rejected


def test_bundled_sample_converts_with_a_full_report(tmp_path):
    out = tmp_path / 'out.jsonl'
    report = convert_file(SAMPLE, out)
    assert report.read == report.converted + len(report.rejected)
    assert report.converted >= 5 and len(report.rejected) >= 3
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == report.written
    for row in rows:
        assert row['messages'][0]['role'] == 'system' and row['messages'][-1]['role'] == 'assistant'
        assert all(m.get('loss') is False for m in row['messages'][1:-1] if m['role'] == 'assistant')


def test_agentfabric_format_export(tmp_path):
    out = tmp_path / 'out.jsonl'
    convert_file(SAMPLE, out, fmt='agentfabric')
    row = json.loads(out.read_text().splitlines()[0])
    assert row['id'].startswith('sample-zh-parcel#')
    assert [t['from'] for t in row['conversations']][:2] == ['system', 'user']
    with pytest.raises(ValueError):
        list(sample_rows([], 'sharegpt'))


def test_cli_convert_exits_zero_on_bad_records_and_two_on_unreadable(tmp_path):
    out, rep = tmp_path / 'o.jsonl', tmp_path / 'r.json'
    res = subprocess.run([sys.executable, '-m', 'helpers', 'convert', '--input', str(SAMPLE), '--output', str(out),
                          '--report', str(rep)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    report = json.loads(rep.read_text())
    assert report['read'] == report['converted'] + report['rejected'] and report['rejects'][0]['line'] > 0
    assert 'rejected' in res.stderr
    res = subprocess.run([sys.executable, '-m', 'helpers', 'convert', '--input', str(tmp_path / 'none.jsonl'),
                          '--output', str(out)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and 'cannot read' in res.stderr


def test_conversion_error_is_a_value_error():
    assert issubclass(ConversionError, ValueError)


def _arm_conversations():
    """Every kind of generated conversation: sessions, no-call, follow-ups, masked names, both languages."""
    from helpers.synth import Generator, SynthConfig
    cfg = SynthConfig(max_tools=3, p_no_call=0.25, p_session=0.5, p_multi_turn=0.3, p_masked=0.2)
    return Generator(cfg, seed=5).conversations('train', 80)


def test_ms_agent_rows_render_the_same_conversations_in_the_original_format():
    from helpers.convert import ms_agent_rows
    convs = _arm_conversations()
    rows = ms_agent_rows(convs)
    assert len(rows) == len(convs)
    assert {c.meta['kind'] for c in convs} >= {'session', 'no_call', 'single'}
    assert any(c.meta.get('masked') for c in convs)
    for conv, row in zip(convs, rows):
        msgs = row['messages']
        assert [m['role'] for m in msgs] == ['system'] + ['user', 'assistant'] * len(conv.turns)
        system_text = msgs[0]['content']
        assert system_text.startswith('Answer the following questions as best you can. You have access to the '
                                      'following APIs:\n1. ')
        assert '# 工具' not in system_text and '# Tools' not in system_text and '# 指令' not in system_text
        assert system_text != system_prompt(conv.tools, conv.instruction, conv.lang)
        assert [t.name for t in parse_system(system_text)] == [t.name for t in conv.tools]
        names = {t.name for t in conv.tools}
        for turn, user, assistant in zip(conv.turns, msgs[1::2], msgs[2::2]):
            assert user['content'] == turn.query  # no AgentFabric role prefix
            calls, answer = parse_assistant(assistant['content'], names)
            assert [(c.name, c.arguments, c.observation) for c in calls] == \
                [(c.name, c.arguments, c.observation) for c in turn.calls]
            assert answer == turn.answer
            assert ('Final Answer: ' in assistant['content']) == bool(turn.calls)
        assert row['meta']['conversation'] == conv.id and row['meta']['format'] == 'ms_agent'


def test_ms_agent_rows_train_with_swift_react_loss_scale():
    """Encoded by ms-swift with --loss_scale react: the call lines carry weight 2, the observation text none."""
    from helpers.convert import ms_agent_rows
    from helpers.models import MODELS, prepare_model
    from helpers.training import encoded_sample
    conv = next(c for c in _arm_conversations() if c.meta['kind'] == 'single' and not c.meta.get('masked'))
    row = ms_agent_rows([conv])[0]
    spec = MODELS['tiny-qwen2']
    pieces = encoded_sample(row, str(prepare_model('tiny-qwen2')), spec.model_type, spec.template, loss_scale='react')
    call = conv.turns[0].calls[0]
    weighted = ''.join(t for t, w in pieces if w == 2.0)
    trained = ''.join(t for t, w in pieces if w > 0)
    assert call.name in weighted and json.dumps(call.arguments, ensure_ascii=False) in weighted
    assert call.observation not in trained and conv.turns[0].answer in trained
    assert call.observation in ''.join(t for t, w in pieces if w == 0)  # masked as one piece
    assert conv.turns[0].query not in trained
