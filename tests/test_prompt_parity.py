"""Our rendering of the AgentFabric prompt equals what the real RolePlay sends, byte for byte.

Each case runs modelscope-agent 0.7.2's RolePlay against a recording OpenAI-compatible server on
127.0.0.1 with offline tools, then compares every captured request with helpers.agentfabric.
"""
import json

import pytest

from helpers.agent_tools import llm_config, modelscope_agent, run_case
from helpers.agentfabric import (OBSERVATION_CHAR_LIMIT, EvalCase, next_turn, stop_words, transcript)
from helpers.scripted_server import ScriptedServer, apply_stop

WEATHER_ZH = {'name': 'amap_weather', 'description': '获取对应城市的天气数据',
              'parameters': [{'name': 'location', 'type': 'string', 'required': True,
                              'description': '城市/区具体名称，如`北京市海淀区`请描述为`海淀区`'}]}
IMAGE_ZH = {'name': 'image_gen', 'description': 'AI绘画（图像生成）服务，输入文本描述和图像分辨率，返回根据文本信息绘制的图片URL。',
            'parameters': [{'name': 'text', 'type': 'string', 'required': True, 'description': '详细描述了希望生成的图像具有什么内容'},
                           {'name': 'resolution', 'type': 'string', 'required': False, 'description': '格式是 数字*数字',
                            'enum': ['1024*1024', '720*1280', '1280*720']}]}
TRANSLATE_EN = {'name': 'translate_text', 'description': 'Translate text into a target language.',
                'parameters': [{'name': 'text', 'type': 'string', 'required': True, 'description': 'Text to translate'},
                               {'name': 'target_lang', 'type': 'string', 'required': True,
                                'description': 'ISO code, e.g. "fr" or {"x": 1}'},
                               {'name': 'formal', 'type': 'boolean', 'required': False, 'description': 'Formal register'}]}
STOCK_EN = {'name': 'stock_quote', 'description': 'Latest price of a stock ticker.',
            'parameters': [{'name': 'ticker', 'type': 'string', 'required': True, 'description': 'e.g. AAPL'},
                           {'name': 'days', 'type': 'integer', 'required': False, 'description': 'history window'}]}

ROLE_ZH = {'name': '小天', 'description': '一个贴心的天气助手', 'instruction': ['查询天气', '根据天气画图；', '回答要简短']}
ROLE_EN = {'name': 'Polyglot', 'description': 'A careful translator.', 'instruction': 'Translate what the user asks for；'}


def _case(cid, lang, instruction, tools, query, call, observation='晴，25度', history=None):
    d = {'id': cid, 'lang': lang, 'instruction': instruction, 'tools': tools, 'query': query,
         'expected_call': call, 'observation': observation, 'reference_answer': ''}
    if history:
        d['history'] = history
    return EvalCase.from_dict(d)


CASES = [
    _case('zh-string-1tool', 'zh', '你扮演一个天气预报助手，你需要查询相应地区的天气，并调用给你的画图工具绘制一张城市的图。',
          [WEATHER_ZH], '朝阳区天气怎样？', {'name': 'amap_weather', 'arguments': {'location': '朝阳区'}}),
    _case('zh-role-2tools', 'zh', ROLE_ZH, [WEATHER_ZH, IMAGE_ZH], '帮我画一只在雨中奔跑的柴犬，分辨率1280*720',
          {'name': 'image_gen', 'arguments': {'text': '雨中奔跑的柴犬', 'resolution': '1280*720'}},
          observation='![图片](https://example.com/dog.png)'),
    _case('en-role-mixed-3tools', 'en', ROLE_EN, [TRANSLATE_EN, WEATHER_ZH, STOCK_EN],
          'Translate "good morning, team" into French, formally.',
          {'name': 'translate_text', 'arguments': {'text': 'good morning, team', 'target_lang': 'fr', 'formal': True}},
          observation='{"translation": "Bonjour à toute l\'équipe"}'),
    _case('en-string-history', 'en', 'You are a market assistant. Keep answers short.', [STOCK_EN, TRANSLATE_EN],
          'And for MSFT over 5 days?', {'name': 'stock_quote', 'arguments': {'ticker': 'MSFT', 'days': 5}},
          observation='MSFT 5d: 410.2 → 415.9',
          history=[{'role': 'user', 'content': 'Price of AAPL?'},
                   {'role': 'assistant', 'content': transcript(
                       ['Action: stock_quote\nAction Input: {"ticker": "AAPL"}\n', 'AAPL trades at 231.5.'],
                       ['AAPL 231.5'])}]),
    _case('en-no-name-role', 'en', {'name': '', 'description': '', 'instruction': ''}, [STOCK_EN],
          'Tell me a joke about stocks.', None),
    _case('zh-long-observation', 'zh', '你是天气助手', [WEATHER_ZH], '海淀区明天会下雨吗',
          {'name': 'amap_weather', 'arguments': {'location': '海淀区'}},
          observation='雨' * (OBSERVATION_CHAR_LIMIT + 500)),
]


def _scripted_replies(case):
    """First reply calls the expected tool (and runs past the stop word, as a model would); then answers."""
    if case.expected_call is None:
        return ['Here is one: why did the stock go to school? To improve its rating.']
    first = (f'Action: {case.expected_call["name"]}\n'
             f'Action Input: {json.dumps(case.expected_call["arguments"], ensure_ascii=False)}\n'
             'Observation: <result>made up</result>\nAnswer: made up')
    return [first, '总结：' + case.observation[:20]]


@pytest.fixture(scope='module')
def roleplay(tmp_path_factory):
    return modelscope_agent()


@pytest.mark.parametrize('stream', [None, False])
@pytest.mark.parametrize('case', CASES, ids=lambda c: c.id)
def test_roleplay_requests_equal_our_rendering(roleplay, case, stream):
    replies = _scripted_replies(case)
    with ScriptedServer(replies, model='agentfabric-test') as srv:
        turn = run_case(case, llm_config(srv.base_url, 'agentfabric-test', stream=stream))
    sent = srv.chat_requests()
    assert len(sent) == (1 if case.expected_call is None else 2)

    first = case.messages()
    assert sent[0]['messages'] == first  # turn one, byte for byte
    assert sent[0]['stop'] == stop_words('agentfabric-test')
    if case.expected_call is None:
        assert turn.calls == []
        return
    output = apply_stop(replies[0], sent[0]['stop'])
    assert sent[1]['messages'] == next_turn(first, output, case.observation)  # turn two
    assert sent[1]['messages'] == case.messages(model_output=output)
    assert sent[1]['stop'] == sent[0]['stop']
    # the tool really ran, with the arguments the model wrote
    assert [c.name for c in turn.calls] == [case.expected_call['name']]
    assert turn.calls[0].arguments == case.expected_call['arguments']
    # what AgentFabric shows (and keeps as history) is our transcript of the turn
    assert turn.text == transcript([output, replies[1]], [case.observation])


def test_observation_limit_matches_library(roleplay):
    from modelscope_agent.llm.utils.function_call_with_raw_prompt import DEFAULT_EXEC_TEMPLATE
    from modelscope_agent.utils.tokenization_utils import count_tokens
    from helpers.agentfabric import OBSERVATION_TEMPLATE
    assert OBSERVATION_TEMPLATE.format(observation='X') == DEFAULT_EXEC_TEMPLATE.format(exec_result='X')
    assert OBSERVATION_CHAR_LIMIT == int(6000 / 2 - count_tokens(DEFAULT_EXEC_TEMPLATE.format(exec_result=' ')))


def test_stop_words_follow_served_model_name(roleplay):
    # a name modelscope-agent knows brings its template's stop words first
    assert stop_words('qwen_7b_chat')[-2:] == ['Observation:', 'Observation:\n']
    assert len(stop_words('qwen_7b_chat')) > 2
    assert stop_words('my-local-model') == ['Observation:', 'Observation:\n']
