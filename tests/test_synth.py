"""The generator: deterministic, every kind of conversation present, and leakage between splits impossible."""
import json
import subprocess
import sys
from collections import Counter

import pytest

from helpers.agentfabric import render, to_case
from helpers.convert import convert_lines, to_ms_agent
from helpers.synth import PROFILE_DATA, Generator, Resources, SynthConfig, leakage, training_rows, write_splits


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
