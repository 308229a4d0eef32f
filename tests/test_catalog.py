"""Tests of the bundled tool catalog, its data files and its offline implementations."""
import copy
import json

import pytest

from helpers.agentfabric import LANGS, has_chinese
from helpers.catalog import (IMPLEMENTATIONS, N_HOLDOUT, N_TOOLS, CatalogTool, load_catalog, load_instructions,
                             load_no_call, load_slot_values, validate_catalog)

TOOLS = load_catalog()
SLOTS = load_slot_values()
BY_NAME = {t.name: t for t in TOOLS}


def sample_values(tool: CatalogTool, args: list[str], lang: str, k: int) -> dict:
    """The k-th value (cycling) of each argument's pool."""
    params = {p.name: p for p in tool.parameters}
    return {a: SLOTS[params[a].slot][lang][k % len(SLOTS[params[a].slot][lang])] for a in args}


def first_call(tool: CatalogTool, lang: str = 'en', k: int = 0) -> dict:
    template = tool.queries[lang][0]
    return tool.fill(template, sample_values(tool, template.args, lang, k))[1]


def test_catalog_loads_with_the_required_tools():
    assert len(TOOLS) == N_TOOLS and len(BY_NAME) == N_TOOLS
    assert sum(t.holdout for t in TOOLS) == N_HOLDOUT
    weather, image = BY_NAME['amap_weather'], BY_NAME['image_gen']
    assert (weather.category, weather.holdout, weather.description['zh']) == ('weather', False, '获取对应城市的天气数据')
    assert [(p.name, p.type, p.required) for p in weather.parameters] == [('location', 'string', True)]
    assert [(p.name, p.required, p.enum) for p in image.parameters] == [
        ('text', True, None), ('resolution', False, ['1024*1024', '720*1280', '1280*720'])]
    assert set(IMPLEMENTATIONS) == {t.impl for t in TOOLS}


def test_shipped_data_is_valid():
    assert validate_catalog(TOOLS, SLOTS) == []


@pytest.mark.parametrize('tool', TOOLS, ids=lambda t: t.name)
def test_every_template_runs_and_fills_its_answer(tool):
    for lang in LANGS:
        for template in tool.queries[lang]:
            for k in range(3):
                text, args = tool.fill(template, sample_values(tool, template.args, lang, k))
                assert '{' not in text and all(str(args[a]) in text for a in template.args)
                assert {p.name for p in tool.parameters if p.required} <= set(args)
                result = tool.run(args)
                assert json.loads(tool.observation(args)) == result
                answer = tool.answer_text(lang, args, result)
                assert answer and '{' not in answer
                # Chinese in an English answer may only come from the result (a Mandarin transcript)
                assert has_chinese(answer) if lang == 'zh' else not has_chinese(answer) or has_chinese(result)


@pytest.mark.parametrize('tool', TOOLS, ids=lambda t: t.name)
def test_fill_orders_arguments_like_the_parameters(tool):
    template = max(tool.queries['en'], key=lambda t: len(t.args) + len(t.fixed))
    _, args = tool.fill(template, sample_values(tool, template.args, 'en', 1))
    order = [p.name for p in tool.parameters]
    assert list(args) == sorted(args, key=order.index)


def test_results_are_deterministic_and_follow_the_primary_argument():
    changed = 0
    for tool in TOOLS:
        args = first_call(tool)
        assert tool.run(args) == tool.run(copy.deepcopy(args))
        primary = next(p for p in tool.parameters if p.name == tool.primary)
        other = next(v for v in SLOTS[primary.slot]['en'] if v != args[tool.primary])
        changed += tool.run({**args, tool.primary: other}) != tool.run(args)
    assert changed >= len(TOOLS) - 2


@pytest.mark.parametrize('lang', LANGS)
def test_as_tool_speaks_the_language(lang):
    for tool in TOOLS:
        t = tool.as_tool(lang)
        assert t.name == tool.name
        texts = [t.description] + [p.description for p in t.parameters]
        assert all(has_chinese(x) == (lang == 'zh') for x in texts), tool.name
        assert t.schema()['required'] == [p.name for p in tool.parameters if p.required]
        assert t.describe().startswith(f'{tool.name}: {tool.name} API')


@pytest.mark.parametrize('tool', TOOLS, ids=lambda t: t.name)
def test_missing_or_mistyped_required_arguments_raise(tool):
    with pytest.raises(ValueError):
        tool.run({})
    args = first_call(tool)
    for p in tool.parameters:
        if p.required:
            with pytest.raises(ValueError):
                tool.run({k: v for k, v in args.items() if k != p.name})
            with pytest.raises(ValueError):
                tool.run({**args, p.name: ['not', 'a', p.type]})


def test_real_computations():
    run = {t.name: t.run for t in TOOLS}
    assert run['calculator']({'expression': '(1234 + 5678) * 3'})['result'] == 20736
    assert run['calculator']({'expression': '2^10'})['result'] == 1024
    assert run['unit_convert']({'value': 100, 'from_unit': 'celsius', 'to_unit': 'fahrenheit'})['converted'] == 212
    assert run['unit_convert']({'value': 10, 'from_unit': 'km', 'to_unit': 'mile'})['converted'] == 6.2137
    with pytest.raises(ValueError):
        run['unit_convert']({'value': 1, 'from_unit': 'kg', 'to_unit': 'km'})
    assert run['bmi_calculator']({'height_cm': 180, 'weight_kg': 81})['bmi'] == 25.0
    assert run['currency_convert']({'amount': 100, 'from_currency': '美元', 'to_currency': 'CNY'})['converted'] == 720
    assert run['hotel_search']({'city': 'Paris', 'date': '2025-12-30', 'nights': 3})['checkout_date'] == '2026-01-02'
    assert run['run_python']({'code': "print(sum(range(10)), 'ok'[::-1])"})['stdout'] == '45 ko'
    assert run['image_gen']({'text': 'a cat'})['image_url'].startswith('https://example.com/img/')
    assert run['text_to_speech']({'text': 'hello'})['audio_url'].endswith('.mp3')


@pytest.mark.parametrize('code', ["__import__('os').system('echo hi')", 'import os', "open('/etc/passwd').read()",
                                  '(lambda: 1)()', 'print(().__class__.__bases__)', 'print(9 ** 9 ** 9)',
                                  "print('x' * 10 ** 9)", 'print([[y for y in range(999)] for x in range(999)])'])
def test_code_runner_never_executes_arbitrary_code(code):
    result = BY_NAME['run_python'].run({'code': code})
    assert result['status'] in ('executed', 'error')


def broken_copy() -> tuple[list[CatalogTool], dict]:
    tools, slots = copy.deepcopy(TOOLS), copy.deepcopy(SLOTS)
    weather = next(t for t in tools if t.name == 'amap_weather')
    weather.queries['en'][0].text += ' And {unknown}?'
    weather.queries['zh'][1].id = weather.queries['zh'][0].id
    next(t for t in tools if t.name == 'image_gen').answer['en'] += ' ({resolution})'
    del slots['image_prompt']
    return tools, slots


def test_validate_catalog_catches_a_broken_copy():
    problems = '\n'.join(validate_catalog(*broken_copy()))
    assert "amap_weather.en.1: placeholders ['location', 'unknown'] do not match args ['location']" in problems
    assert 'amap_weather.zh.1: duplicate template id' in problems
    assert "slot pool 'image_prompt' is missing" in problems
    assert 'image_gen: en answer uses optional parameter {resolution}' in problems


def test_validate_catalog_checks_catalog_wide_rules():
    tools = copy.deepcopy(TOOLS[:10])
    tools[0].holdout = True
    tools[0].primary = 'nope'
    problems = '\n'.join(validate_catalog(tools, SLOTS))
    assert f'not {N_TOOLS}' in problems and 'holdout' in problems and "primary 'nope'" in problems
    assert 'amap_weather: must be in the catalog and not held out' in problems


def test_no_call_queries_and_instructions():
    no_call, instructions = load_no_call(), load_instructions()
    for lang in LANGS:
        items = no_call[lang]
        assert len(items) >= 40 and len({i['id'] for i in items}) == len(items)
        assert all(has_chinese(i['text'] + i['answer']) == (lang == 'zh') for i in items)
        assert len(instructions[lang]) >= 12
        kinds = [isinstance(i, dict) for i in instructions[lang]]
        assert 0.3 <= sum(kinds) / len(kinds) <= 0.7
        assert any(isinstance(i, dict) and isinstance(i['instruction'], list) for i in instructions[lang])


def test_loaders_reject_malformed_files(tmp_path):
    bad = tmp_path / 'bad.json'
    bad.write_text('{not json', encoding='utf-8')
    for load in (load_catalog, load_slot_values, load_no_call, load_instructions):
        with pytest.raises(ValueError, match='cannot read'):
            load(bad)
    bad.write_text(json.dumps([{'name': 'x', 'category': 'math'}]), encoding='utf-8')
    with pytest.raises(ValueError, match=r'tool #0 \(x\): missing "'):
        load_catalog(bad)
    bad.write_text(json.dumps({'zh': [{'name': 'x', 'oops': 1}], 'en': []}), encoding='utf-8')
    with pytest.raises(ValueError, match='unknown role-config keys'):
        load_instructions(bad)
    bad.write_text(json.dumps({'city': {'zh': ['北京'], 'en': [True]}}), encoding='utf-8')
    with pytest.raises(ValueError, match="slot 'city' en"):
        load_slot_values(bad)
