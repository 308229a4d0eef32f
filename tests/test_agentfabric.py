"""Unit tests of the prompt format module (no modelscope-agent needed)."""
import json

import pytest

from helpers.agentfabric import (CaseError, EvalCase, Tool, first_turn, format_call, has_chinese, load_cases,
                                 next_turn, observation_suffix, parse_action, role_prompt, system_prompt,
                                 transcript, OBSERVATION_CHAR_LIMIT)

WEATHER = {'name': 'amap_weather', 'description': '获取对应城市的天气数据',
           'parameters': [{'name': 'location', 'type': 'string', 'description': '城市', 'required': True}]}


def test_tool_line_follows_description_language():
    zh = Tool.from_dict(WEATHER)
    assert zh.describe() == ('amap_weather: amap_weather API。获取对应城市的天气数据 输入参数: {"type": "object", '
                             '"properties": {"location": {"type": "string", "description": "城市"}}, '
                             '"required": ["location"]} Format the arguments as a JSON object.')
    en = Tool.from_dict({'name': 'f', 'description': 'Do f.', 'parameters': []})
    assert en.describe().startswith('f: f API. Do f. Parameters: {"type": "object", "properties": {}, "required": []}')


def test_a_kept_tool_line_is_the_line_of_the_tool_as_it_is_now():
    """Lines are memoised by value: tools that differ in any way (a changed field, an enum of 1 vs True vs "1",
    a type list vs a string, an empty vs a missing enum) get their own line, equal to one built afresh."""
    def fresh(tool):
        zh = has_chinese(tool.description)
        template = '{n}: {n} API。{d} 输入参数: {p}' if zh else '{n}: {n} API. {d} Parameters: {p}'
        params = json.dumps(tool.schema(), ensure_ascii=False)
        return template.format(n=tool.name, d=tool.description, p=params) + ' Format the arguments as a JSON object.'

    tool = Tool.from_dict(WEATHER)
    tools = [tool]
    for change in ({'enum': ['1']}, {'enum': [1]}, {'enum': [True]}, {'enum': []}, {'enum': ('a',)},
                   {'type': ['string']}, {'type': 'string'}, {'required': False}, {'description': '区'}):
        other = Tool.from_dict(WEATHER)
        for field, value in change.items():
            setattr(other.parameters[0], field, value)
        tools.append(other)
    lines = [t.describe() for t in tools] + [t.describe() for t in tools]  # the second time from the memo
    assert lines == [fresh(t) for t in tools] * 2
    tool.parameters[0].description = '改了'
    tool.description = 'Changed'
    line = tool.describe()
    assert line == fresh(tool) and '"改了"' in line and 'API. Changed Parameters' in line


def test_required_strings_and_schema_forms_are_understood():
    t = Tool.from_dict({'name': 'x', 'description': 'd', 'parameters': [
        {'name': 'a', 'description': '', 'required': 'True'}, {'name': 'b', 'required': 'False'}]})
    assert t.schema()['required'] == ['a']
    oai = Tool.from_dict({'type': 'function', 'function': {'name': 'x', 'description': 'd', 'parameters': {
        'type': 'object', 'properties': {'a': {'type': 'integer', 'description': 'n'}}, 'required': ['a']}}})
    assert oai.schema() == {'type': 'object', 'properties': {'a': {'type': 'integer', 'description': 'n'}},
                            'required': ['a']}


@pytest.mark.parametrize('bad', [{'description': 'no name'}, {'name': 'has space', 'description': ''},
                                 {'name': 'a,b'}, 'notadict', {'name': 'x', 'parameters': 'nope'},
                                 {'name': 'x', 'parameters': [{'description': 'param without name'}]}])
def test_bad_tools_raise_clear_errors(bad):
    with pytest.raises(CaseError):
        Tool.from_dict(bad)


def test_role_config_spelled_out_like_roleplay():
    role = {'name': '小天', 'description': '天气助手', 'instruction': ['查天气', '画图']}
    assert role_prompt(role, 'zh') == '你扮演AI-Agent，你的名字是小天。天气助手\n你具有下列具体功能：查天气；画图\n下面你将开始扮演小天'
    assert role_prompt({'name': 'Bo', 'description': '', 'instruction': 'x；'}, 'en') == (
        'You are playing as an AI-Agent, Your name is Bo.\nYou have the following specific functions:x'
        '\nNow you will start playing asBo')
    assert role_prompt('plain text', 'en') == 'plain text'


def test_first_and_next_turn():
    tools = [Tool.from_dict(WEATHER)]
    msgs = first_turn(tools, '你是助手', '朝阳区天气怎样？', 'zh')
    assert msgs[0]['content'] == system_prompt(tools, '你是助手', 'zh')
    assert msgs[1] == {'role': 'user', 'content': '(。你可以使用工具：[amap_weather])朝阳区天气怎样？'}
    role = {'name': '小天', 'description': '', 'instruction': ''}
    assert first_turn(tools, role, 'q', 'zh')[1]['content'] == '(你正在扮演小天。你可以使用工具：[amap_weather])q'
    out = 'Action: amap_weather\nAction Input: {"location": "朝阳区"}\n'
    nxt = next_turn(msgs, out, '晴')
    assert nxt[1]['content'] == msgs[1]['content'] + out + '\nObservation: <result>晴</result>\nAnswer:'
    assert msgs[1]['content'].endswith('？')  # the input is not modified
    assert len(observation_suffix('x' * 5000)) == len(observation_suffix('')) + OBSERVATION_CHAR_LIMIT


def test_history_rules():
    tools = [Tool.from_dict(WEATHER)]
    hist = [{'role': 'system', 'content': 'old'}, {'role': 'user', 'content': 'a'}, {'role': 'assistant', 'content': 'b'}]
    msgs = first_turn(tools, 'x', 'q', 'en', hist)
    assert [m['role'] for m in msgs] == ['system', 'user', 'assistant', 'user']
    assert msgs[1]['content'] == 'a'  # history queries keep no prefix, as AgentFabric stores them
    with pytest.raises(CaseError):
        first_turn(tools, 'x', 'q', 'en', [{'role': 'user', 'content': 'a'}])


def test_parse_action_is_roleplays_regex():
    assert parse_action('Thought\nAction: a\nAction Input: {"x": 1}\nAction: b\nAction Input: {}') .name == 'a'
    call = parse_action('Action:  tool \nAction Input: {"k": "v"}')
    assert call.name == ' tool ' and call.arguments == {'k': 'v'}
    assert parse_action('Action: a\n\nAction Input: {}') is None  # RolePlay needs the lines adjacent
    assert parse_action('Action: a\nAction Input: {"x":\n 1}').arguments is None  # one line only
    assert parse_action('') is None and parse_action(None) is None
    assert parse_action("Action: a\nAction Input: {'x': 1}").arguments is None


def test_format_call_is_one_line_json():
    text = format_call('t', {'q': '北京 "x"\nnext'})
    assert text == 'Action: t\nAction Input: {"q": "北京 \\"x\\"\\nnext"}\n'
    assert parse_action(text).arguments == {'q': '北京 "x"\nnext'}


def test_transcript_joins_outputs_and_observations():
    assert transcript(['A'], []) == 'A'
    assert transcript(['A', 'B'], ['o']) == 'A\nObservation: <result>o</result>\nAnswer:B'
    with pytest.raises(ValueError):
        transcript(['A'], ['o'])


def _case(**kw):
    d = {'id': '1', 'lang': 'en', 'instruction': 'x', 'tools': [WEATHER], 'query': 'q',
         'expected_call': {'name': 'amap_weather', 'arguments': {'location': 'a'}}, 'observation': 'o',
         'reference_answer': 'r'}
    d.update(kw)
    return d


def test_case_round_trip_and_messages(tmp_path):
    case = EvalCase.from_dict(_case())
    assert EvalCase.from_dict(case.to_dict()) == case
    assert case.messages(model_output='M')[-1]['content'].endswith('qM\nObservation: <result>o</result>\nAnswer:')
    path = tmp_path / 'c.jsonl'
    path.write_text(json.dumps(case.to_dict()) + '\n\n' + json.dumps(_case(id='2', expected_call=None)) + '\n')
    assert [c.id for c in load_cases(path)] == ['1', '2']


@pytest.mark.parametrize('bad', [
    {'lang': 'fr'}, {'tools': 'x'}, {'query': ''}, {'instruction': 3},
    {'instruction': {'description': 'no name'}}, {'instruction': {'name': 'a', 'extra': 1}},
    {'expected_call': {'name': 'not_offered', 'arguments': {}}}, {'expected_call': 'x'},
    {'history': [{'role': 'bot', 'content': 'x'}]}, {'tools': [WEATHER, WEATHER]}])
def test_bad_cases_raise(bad):
    with pytest.raises(CaseError):
        EvalCase.from_dict(_case(**bad))


def test_load_cases_names_the_bad_line(tmp_path):
    path = tmp_path / 'c.jsonl'
    path.write_text(json.dumps(_case()) + '\n{not json\n')
    with pytest.raises(CaseError, match=':2:'):
        load_cases(path)


def test_has_chinese():
    assert has_chinese('天气') and not has_chinese('weather, ok？')
