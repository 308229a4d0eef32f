"""The generator: deterministic, every kind of conversation present, and leakage between splits impossible."""
import json
import subprocess
import sys
from collections import Counter

import pytest

from helpers.agentfabric import render, to_case
from helpers.convert import convert_lines, to_ms_agent
from helpers.synth import (PROFILE_DATA, SPLITS, Generator, Resources, SynthConfig, leakage, training_rows,
                          write_splits)


@pytest.fixture(scope='module')
def res():
    return Resources.load()


@pytest.fixture(scope='module')
def data(res):
    g = Generator(SynthConfig(), seed=3, resources=res)
    return {s: g.conversations(s, n) for s, n in (('train', 600), ('val', 120), ('test', 300))}


def test_same_seed_same_data(res):
    a = [c.to_dict() for c in Generator(seed=5, resources=res).conversations('train', 50)]
    b = [c.to_dict() for c in Generator(seed=5, resources=res).conversations('train', 50)]
    c = [c.to_dict() for c in Generator(seed=6, resources=res).conversations('train', 50)]
    assert a == b and a != c


def test_no_template_pair_is_shared_between_splits(data):
    assert leakage(data['train'], data['test']) == set()
    assert leakage(data['train'], data['val']) == set()
    assert leakage(data['val'], data['test']) == set()
    # and the split of templates is fixed by the catalog, not by the seed or the sample size
    other = Generator(seed=99).conversations('test', 300)
    assert leakage(data['train'], other) == set()


def test_holdout_tools_only_in_test(res, data):
    holdout = {t.name for t in res.tools if t.holdout}
    assert len(holdout) == 6
    for split in ('train', 'val'):
        assert not {t.name for c in data[split] for t in c.tools} & holdout
    assert {c.meta['tool'] for c in data['test'] if c.meta.get('holdout')} & holdout


def test_test_values_are_new(res, data):
    """String slot values used in test calls come from the test share of their pool."""
    slot_of = {(t.name, p.name): p.slot for t in res.tools for p in t.parameters}
    train_values = {v for c in data['train'] for turn in c.turns for call in turn.calls for v in call.arguments.values()
                    if isinstance(v, str)}
    test_values = set()
    for c in data['test']:
        for turn in c.turns:
            for call in turn.calls:
                for k, v in call.arguments.items():
                    pool = res.slots.get(slot_of.get((call.name, k)), {}).get(c.lang, {})
                    if isinstance(v, str) and pool and pool['test'] is not pool['train']:
                        test_values.add(v)
    assert test_values and not test_values & train_values


def test_every_kind_of_conversation_is_generated(data):
    convs = data['train']
    kinds = Counter(c.meta['kind'] for c in convs)
    assert {'single', 'no_call', 'follow_up', 'second_tool', 'thanks'} <= set(kinds)
    assert set(Counter(c.lang for c in convs)) == {'zh', 'en'}
    assert {1, 2, 3, 4} <= set(len(c.tools) for c in convs)
    # distractors sharing a parameter name with the right tool
    shared = 0
    for c in convs:
        if c.meta['kind'] == 'single':
            main = next(t for t in c.tools if t.name == c.meta['tool'])
            names = {p.name for p in main.parameters}
            shared += any(names & {p.name for p in t.parameters} for t in c.tools if t.name != main.name)
    assert shared > 50
    # optional parameters both given and left out, typed values
    given = left_out = typed = 0
    for c in convs:
        for turn in c.turns:
            for call in turn.calls:
                tool = next(t for t in c.tools if t.name == call.name)
                optional = {p.name for p in tool.parameters if not p.required}
                given += bool(optional & set(call.arguments))
                left_out += bool(optional - set(call.arguments))
                typed += any(not isinstance(v, str) for v in call.arguments.values())
    assert given > 30 and left_out > 30 and typed > 30


def test_rows_mask_history_and_end_with_the_target(data):
    rows = training_rows(data['train'][:100])
    assert all(r['messages'][-1]['role'] == 'assistant' and 'loss' not in r['messages'][-1] for r in rows)
    multi = [r for r in rows if r['meta']['turn'] > 0]
    assert multi and all(m['loss'] is False for r in multi for m in r['messages'][1:-1] if m['role'] == 'assistant')
    thin = training_rows(data['train'][:100], answer_share=0.0)
    assert not [r for r in thin if r['meta']['kind'] == 'answer'] and len(thin) < len(rows)


def test_generated_conversations_round_trip_through_the_raw_format(data):
    convs = data['test'][:150]
    back = list(convert_lines([json.dumps(to_ms_agent(c), ensure_ascii=False) for c in convs]))
    for a, b in zip(convs, back):
        b.lang, b.instruction = a.lang, a.instruction
        assert [(s.messages, s.target) for s in render(a)] == [(s.messages, s.target) for s in render(b)]


def test_two_slots_of_one_kind_never_share_a_value(data, res):
    """origin and destination (or two amounts, two languages) get different values, in every split and turn."""
    slot_of = {(t.name, p.name): p.slot for t in res.tools for p in t.parameters}
    checked = 0
    for convs in data.values():
        for conv in convs:
            for call in (c for turn in conv.turns for c in turn.calls):
                by_slot = Counter()
                for name, value in call.arguments.items():
                    if slot_of[(call.name, name)]:  # booleans have no slot: template wording fixes them
                        by_slot[(slot_of[(call.name, name)], json.dumps(value))] += 1
                assert max(by_slot.values(), default=1) == 1, call
                checked += len(call.arguments) > 1
    assert checked > 100


def test_cases_and_files(tmp_path):
    summary = write_splits(tmp_path, PROFILE_DATA['tiny'], seed=2)
    cases = [json.loads(line) for line in (tmp_path / 'test_cases.jsonl').read_text().splitlines()]
    assert len(cases) == PROFILE_DATA['tiny'].n_test == summary['test']['cases']
    for split in ('train', 'val'):  # the ms_agent arm: the same conversations, one row each
        convs = [json.loads(line) for line in (tmp_path / f'{split}_conversations.jsonl').read_text().splitlines()]
        arm = [json.loads(line) for line in (tmp_path / f'{split}_ms_agent.jsonl').read_text().splitlines()]
        assert [r['meta']['conversation'] for r in arm] == [c['id'] for c in convs]
        assert summary[split]['ms_agent_rows'] == len(convs) == getattr(PROFILE_DATA['tiny'], f'n_{split}')
    multi = [c for c in Generator(seed=2).conversations('test', 60) if len(c.turns) > 1]
    case = to_case(multi[0])
    assert case.history[0]['role'] == 'user' and case.query == multi[0].turns[-1].query


def test_cli_synth_is_deterministic(tmp_path):
    outs = []
    for name in ('a', 'b'):
        path = tmp_path / f'{name}.jsonl'
        res = subprocess.run([sys.executable, '-m', 'helpers', 'synth', '--n', '40', '--seed', '7', '--out', str(path)],
                             capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, res.stderr
        outs.append(path.read_text())
    assert outs[0] == outs[1] and len(outs[0].splitlines()) == 40
    assert Counter(json.loads(line)['meta']['split'] for line in outs[0].splitlines()) == {'train': 32, 'val': 4,
                                                                                          'test': 4}


def test_bundled_test_cases_are_the_generator_s(tmp_path):
    """data/test_cases.jsonl is the default generator's test split (500 cases, both languages, seed 0)."""
    from helpers.agentfabric import load_cases
    from helpers.environment import repo_root
    bundled = (repo_root() / 'data' / 'test_cases.jsonl').read_text()
    out = tmp_path / 'cases.jsonl'
    subprocess.run([sys.executable, '-m', 'helpers', 'synth', '--n', '500', '--split', 'test', '--cases', '--out',
                    str(out)], check=True, capture_output=True, timeout=120)
    assert out.read_text() == bundled, 'regenerate: python -m helpers synth --n 500 --split test --cases --out data/test_cases.jsonl'
    cases = load_cases(repo_root() / 'data' / 'test_cases.jsonl')
    assert len(cases) == 500 and {c.lang for c in cases} == {'zh', 'en'}
    assert sum(c.expected_call is None for c in cases) > 30 and sum(bool(c.meta.get('holdout')) for c in cases) > 50


def _catalog_pieces(res):
    """Template and option clause by id."""
    pieces = {t.id: t for tool in res.tools for lang in tool.queries for t in tool.queries[lang]}
    pieces.update({o.id: o for tool in res.tools for lang in tool.options for o in tool.options[lang]})
    return pieces


def test_optional_values_are_present_exactly_when_the_query_states_them(res, data):
    """In first turns the call holds an optional parameter iff its template or the appended option clause states
    it; both directions occur for many tools, in both languages."""
    pieces = _catalog_pieces(res)
    tools = {t.name: t for t in res.tools}
    given, left_out, clauses = Counter(), Counter(), Counter()
    for convs in data.values():
        for conv in convs:
            if conv.meta['kind'] in ('no_call', 'session'):
                continue
            call = conv.turns[0].calls[0]
            ids = [i for name, i in conv.meta['pairs'] if name == call.name][:2]
            stated = {n for i in ids if i.startswith(f'{call.name}.') for n in (*pieces[i].args, *pieces[i].fixed)}
            optional = {p.name for p in tools[call.name].parameters if not p.required}
            assert set(call.arguments) & optional == stated & optional, (conv.turns[0].query, call.arguments)
            for name in optional:
                (given if name in call.arguments else left_out)[(call.name, conv.lang)] += 1
            clauses[conv.lang] += any('.opt.' in i for i in ids)
    for lang in ('zh', 'en'):
        both = {t for t, lg in given if lg == lang} & {t for t, lg in left_out if lg == lang}
        assert len(both) >= 15, both
        assert clauses[lang] >= 30


def test_values_are_copied_verbatim_with_the_schema_types(res, data):
    json_type = {'string': str, 'integer': int, 'number': (int, float), 'boolean': bool}
    tools = {t.name: t for t in res.tools}
    kinds = Counter()
    for convs in data.values():
        for conv in convs:
            for turn in conv.turns:
                for call in turn.calls:
                    params = {p.name: p for p in tools[call.name].parameters}
                    for name, value in call.arguments.items():
                        p = params[name]
                        assert isinstance(value, json_type[p.type]) and (p.type == 'boolean') == isinstance(value, bool)
                        kinds[p.type] += 1
                        if p.slot and not p.enum:  # a placeholder value: in the query verbatim
                            assert str(value) in ''.join(t.query for t in conv.turns), (name, value)
    assert kinds['integer'] > 50 and kinds['number'] > 30 and kinds['boolean'] > 10


def test_no_call_queries_are_many_distinct_and_never_shared(res):
    """Hundreds of distinct no-call queries per language, none shared between splits; near misses come with the
    tool they sit close to, and no query is offered a tool of a category it avoids."""
    g = Generator(SynthConfig(), seed=1, resources=res)
    items = {q.id: q for lang in ('zh', 'en') for parts in (res.no_call[lang], res.near_miss[lang])
             for split in SPLITS for q in parts[split]}
    category = {t.name: t.category for t in res.tools}
    holdout = {t.name for t in res.tools if t.holdout}
    queries = {}
    for split, n in (('train', 3000), ('val', 400), ('test', 500)):
        convs = g.conversations(split, n)
        queries[split] = {(c.lang, t.query) for c in convs for t in c.turns if not t.calls}
        for c in convs:
            if c.meta['kind'] != 'no_call':
                continue
            item = items[c.meta['template']]
            offered = {t.name for t in c.tools}
            assert not {category[t] for t in offered} & set(item.avoid)
            usable = {n for n in item.near if split == 'test' or n not in holdout}
            if usable:  # a near miss, or a fixed query close to a tool: offered with it
                assert offered & usable, (item.text, offered)
        no_call = [c for c in convs if c.meta['kind'] == 'no_call']
        near = [c for c in no_call if c.meta['no_call'] == 'near_miss']
        assert len(near) > 0.45 * len(no_call) and {c.meta['tool'] for c in no_call} == {None}
        if split == 'test':  # distinct until the pool is used up
            for lang in ('zh', 'en'):
                texts = [c.turns[0].query for c in no_call if c.lang == lang]
                assert len(set(texts)) >= 0.85 * len(texts)
    assert not queries['train'] & queries['test'] and not queries['train'] & queries['val']
    assert not queries['val'] & queries['test']
    for lang in ('zh', 'en'):
        assert len({q for split in SPLITS for lg, q in queries[split] if lg == lang}) >= 200
        assert sum(len(res.near_miss[lang][s]) + len(res.no_call[lang][s]) for s in SPLITS) >= 500


def test_cpu_plan_is_bilingual_with_a_test_split_of_many_distinct_no_call_queries(res):
    plan = PROFILE_DATA['cpu']
    assert set(plan.config.langs) == {'zh', 'en'} and plan.n_test >= 150 and plan.config.max_tools == 3
    g = Generator(plan.config, seed=0, resources=res)
    train = training_rows(g.conversations('train', plan.n_train), plan.answer_share, 0, plan.train_history)
    langs = Counter(r['meta']['lang'] for r in train)
    assert min(langs.values()) > 0.3 * len(train)
    cases = [to_case(c) for c in g.conversations('test', plan.n_test)]
    assert {c.lang for c in cases} == {'zh', 'en'} and {len(c.tools) for c in cases} == {1, 2, 3}
    for lang in ('zh', 'en'):
        no_call = [c.query for c in cases if c.lang == lang and c.expected_call is None]
        assert len(no_call) >= 12 and len(set(no_call)) >= 0.8 * len(no_call)
    for name in ('tiny', 'gpu'):
        assert PROFILE_DATA[name].config.langs == ('zh', 'en')


def test_language_share(res):
    convs = Generator(SynthConfig(p_zh=0.2), seed=0, resources=res).conversations('train', 1000)
    assert 0.15 < sum(c.lang == 'zh' for c in convs) / 1000 < 0.25
    assert {c.lang for c in Generator(SynthConfig(langs=('en',)), 0, res).conversations('train', 50)} == {'en'}
    with pytest.raises(ValueError, match='p_zh'):
        SynthConfig(p_zh=1.5)


def test_function_masking(res):
    """p_masked of the training conversations have their tool and parameter names replaced consistently in the
    system prompt, the prefix and the call; everything else is the same conversation."""
    plain = Generator(SynthConfig(), seed=2, resources=res).conversations('train', 400)
    masked = Generator(SynthConfig(p_masked=0.5), seed=2, resources=res).conversations('train', 400)
    assert not any(c.meta.get('masked') for c in plain)
    share = sum(bool(c.meta.get('masked')) for c in masked) / 400
    assert 0.4 < share < 0.6
    assert not any(c.meta.get('masked') for c in Generator(SynthConfig(p_masked=1.0), 2, res).conversations('test', 50))
    names = {t.name for t in res.tools}
    checked = 0
    for a, b in zip(plain, masked):
        if not b.meta.get('masked'):
            assert a.to_dict() == b.to_dict()
            continue
        tool_map = {x.name: y.name for x, y in zip(a.tools, b.tools)}
        param_map = {p.name: q.name for x, y in zip(a.tools, b.tools) for p, q in zip(x.parameters, y.parameters)}
        assert not set(tool_map.values()) & names and len(set(tool_map.values())) == len(tool_map)
        assert [(x.description, [p.description for p in x.parameters]) for x in a.tools] == \
            [(y.description, [p.description for p in y.parameters]) for y in b.tools]
        for ta, tb in zip(a.turns, b.turns):
            assert (ta.query, ta.answer) == (tb.query, tb.answer)
            assert [(tool_map[c.name], {param_map[k]: v for k, v in c.arguments.items()}) for c in ta.calls] == \
                [(c.name, c.arguments) for c in tb.calls]
        for sample in render(b):
            text = ''.join(m['content'] for m in sample.messages) + sample.target
            assert not any(n in text for n in tool_map if '_' in n), sample.target  # ('translate' is a word)
            if sample.kind == 'call':
                call = json.loads(sample.target.split('Action Input: ')[1])
                name = sample.target.split('\n')[0][len('Action: '):]
                tool = next(t for t in b.tools if t.name == name)
                assert set(call) <= {p.name for p in tool.parameters}
                assert f'[{",".join(t.name for t in b.tools)}]' in sample.messages[-1]['content']
                checked += 1
    assert checked > 50


def test_plan_cost_counts_both_arms(res):
    from transformers import AutoTokenizer
    from helpers.models import prepare_model
    from helpers.synth import plan_cost, token_lengths
    tokenizer = AutoTokenizer.from_pretrained(str(prepare_model('tiny-qwen2')))
    plan = PROFILE_DATA['tiny']
    cost = plan_cost(plan, tokenizer, seed=3, resources=res)
    convs = Generator(plan.config, 3, res).conversations('train', plan.n_train)
    rows = training_rows(convs, plan.answer_share, 3, plan.train_history)
    assert cost['agentfabric']['samples'] == len(rows) and cost['ms_agent']['samples'] == plan.n_train
    assert cost['agentfabric']['tokens_per_epoch'] == sum(token_lengths(rows, tokenizer))
    assert sum(cost['agentfabric']['langs'].values()) == len(rows)
    assert cost['ms_agent']['mean_tokens'] > 0 and cost['conversations'] == plan.n_train


def test_p_option_train_changes_the_training_split_only(res):
    """The option-clause share of training can differ from the held-out one; the other splits stay as they were."""
    def clauses(cfg, split):
        convs = Generator(cfg, seed=4, resources=res).conversations(split, 200)
        return sum(any('.opt.' in i for _, i in c.meta.get('pairs', [])) for c in convs), [c.to_dict() for c in convs]
    n_train, _ = clauses(SynthConfig(), 'train')
    n_none, _ = clauses(SynthConfig(p_option_train=0.0), 'train')
    assert n_train >= 20 and n_none == 0
    assert clauses(SynthConfig(p_option_train=0.0), 'test')[1] == clauses(SynthConfig(), 'test')[1]
    with pytest.raises(ValueError, match='p_option_train'):
        SynthConfig(p_option_train=1.5)
