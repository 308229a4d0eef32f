"""Tests of the bundled tool catalog, its data files and its offline implementations."""
import copy
import json
from dataclasses import replace

import pytest

from helpers.agentfabric import LANGS, has_chinese
from helpers.catalog import (IMPLEMENTATIONS, N_HOLDOUT, N_TOOLS, CatalogTool, implementation_defaults, join_clause,
                             load_catalog, load_instructions, load_near_miss, load_no_call, load_slot_values,
                             validate_catalog, validate_no_call)

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


def test_option_clauses_and_defaults_are_checked():
    tools = copy.deepcopy(TOOLS)
    by_name = {t.name: t for t in tools}
    forecast = by_name['weather_forecast']
    forecast.options['en'][0].args.append('location')  # a required parameter
    forecast.options['en'][0].text += ' In {location}.'
    next(p for p in forecast.parameters if p.name == 'days').default = 7  # not what the implementation uses
    next(p for p in by_name['flight_search'].parameters if p.name == 'cabin').default = 'premium'  # not in the enum
    by_name['hotel_search'].options['zh'] = by_name['hotel_search'].options['zh'][:2]
    by_name['send_message'].options['en'][1].id = 'send_message.opt.en.1'
    problems = '\n'.join(validate_catalog(tools, SLOTS))
    assert "weather_forecast.opt.en.1: 'location' is not an optional parameter" in problems
    assert 'weather_forecast.days: declared default 7 but the implementation uses 3' in problems
    assert 'flight_search.cabin: a default belongs to an optional parameter and must be a valid string' in problems
    assert 'hotel_search: zh has 2 option clauses, fewer than 3' in problems
    assert 'send_message.opt.en.1: duplicate option id' in problems


def test_defaults_are_the_implementations_and_reach_the_case_format():
    declared = 0
    for tool in TOOLS:
        args = first_call(tool)
        used = implementation_defaults(tool.impl, args)
        for p in tool.parameters:
            if p.default is not None:
                declared += 1
                assert not p.required and used[p.name] == p.default, (tool.name, p.name)
    assert declared >= 20
    tool = BY_NAME['weather_forecast'].as_tool('en')
    days = next(p for p in tool.parameters if p.name == 'days')
    assert days.default == 3 and days.to_dict()['default'] == 3
    assert 'default' not in tool.schema()['properties']['days']  # never shown to the model: the prompt is unchanged


@pytest.mark.parametrize('lang', LANGS)
def test_option_clauses_state_what_the_call_gets(lang):
    """Appended to a query that leaves the parameter out, a clause adds exactly its values to the call."""
    for tool in TOOLS:
        params = {p.name: p for p in tool.parameters}
        assert bool(tool.options.get(lang)) == any(not p.required for p in tool.parameters), tool.name
        for k, option in enumerate(tool.options.get(lang, [])):
            stated = {*option.args, *option.fixed}
            base = next(t for t in tool.queries[lang] if not stated & {*t.args, *t.fixed})
            values = sample_values(tool, [*base.args, *option.args], lang, k)
            plain_text, plain = tool.fill(base, values)
            text, args = tool.fill(base, values, option, lang)
            assert text.startswith(plain_text) and len(text) > len(plain_text)
            assert set(args) - set(plain) == stated and all(not params[n].required for n in stated)
            assert all(str(values[a]) in text[len(plain_text):] for a in option.args)
            assert list(args) == [p.name for p in tool.parameters if p.name in args]
            tool.run(args)


def test_join_clause():
    assert join_clause('查下北京的天气预报', '看5天的。', 'zh') == '查下北京的天气预报，看5天的。'
    assert join_clause('北京明天冷吗？', '看5天的。', 'zh') == '北京明天冷吗？看5天的。'
    assert join_clause('forecast Paris', 'Cover 5 days.', 'en') == 'forecast Paris. Cover 5 days.'
    assert join_clause('Weather in Paris?', 'Cover 5 days.', 'en') == 'Weather in Paris? Cover 5 days.'


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
        assert len(items) >= 40 and len({i.id for i in items}) == len(items)
        assert all(has_chinese(i.text + i.answer) == (lang == 'zh') for i in items)
        assert sum(bool(i.near) for i in items) >= 10 and sum('search' in i.avoid for i in items) >= 10
        assert len(instructions[lang]) >= 12
        kinds = [isinstance(i, dict) for i in instructions[lang]]
        assert 0.3 <= sum(kinds) / len(kinds) <= 0.7
        assert any(isinstance(i, dict) and isinstance(i['instruction'], list) for i in instructions[lang])


def test_near_miss_templates():
    near_miss = load_near_miss()
    assert validate_no_call(load_no_call(), near_miss, TOOLS, SLOTS) == []
    for lang in LANGS:
        templates = near_miss[lang]
        assert len(templates) >= 60 and all(t.near for t in templates)
        groups = {t.id.split('.')[0] for t in templates}
        assert len(groups) >= 20
        # compositional: with their pools they make hundreds of distinct queries per language
        filled = {q.text for t in templates for q in ([t.fill(v) for v in SLOTS[t.slot][lang]] if t.slot else [t])}
        assert len(filled) >= 500
        near_categories = {BY_NAME[n].category for t in templates for n in t.near}
        assert len(near_categories) >= 14
    weather = next(t for t in near_miss['en'] if t.id == 'weather_talk.en.1').fill('Kyoto')
    assert (weather.id, weather.text) == ('weather_talk.en.1:Kyoto', 'What kind of climate does Kyoto have?')
    assert 'amap_weather' in weather.near and 'search' in weather.avoid and 'Kyoto' in weather.answer


def test_validate_no_call_catches_broken_entries():
    fixed, templates = load_no_call(), load_near_miss()
    en = templates['en']
    broken = {**templates, 'en': [replace(en[0], near=('no_such_tool',)), replace(en[1], slot=None),
                                  replace(en[2], avoid=('cooking',)), replace(en[3], text=en[4].text), en[4],
                                  replace(en[5], slot='cabin'), replace(en[6], answer='天气很好')] + en[7:]}
    problems = '\n'.join(validate_no_call(fixed, broken, TOOLS, SLOTS))
    assert f"{en[0].id}: unknown near tool 'no_such_tool'" in problems
    assert f'{en[1].id}: {{value}} must appear in the text exactly when a slot is named' in problems
    assert f"{en[2].id}: unknown category 'cooking' to avoid" in problems
    assert f'{en[4].id}: the same text as another no-call query' in problems
    assert f"{en[5].id}: slot 'cabin' must be a pool of at least 9 strings" in problems
    assert f'{en[6].id}: text or answer is not in en' in problems


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
