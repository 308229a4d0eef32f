"""The preference stage (notebook 06): training turns only, replies labelled by the judge, pairs, DPO rows."""
import json
import time

import pytest

from helpers import preference as P
from helpers.agentfabric import format_call
from helpers.evaluation import ServerFailing
from helpers.judge import judge
from helpers.scripted_server import FAULTS, ScriptedServer
from helpers.synth import PROFILE_DATA, leakage, write_splits


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    out = tmp_path_factory.mktemp('data')
    write_splits(out, PROFILE_DATA['cpu'].__class__(**{**PROFILE_DATA['cpu'].__dict__, 'n_train': 30, 'n_test': 30}),
                 seed=3)
    return out


@pytest.fixture(scope='module')
def turns(data):
    return P.training_turns(P.load_conversations(data / 'train_conversations.jsonl'))


def test_every_turn_of_every_training_conversation_and_nothing_of_the_test_split(data, turns):
    train = P.load_conversations(data / 'train_conversations.jsonl')
    test = P.load_conversations(data / 'test_conversations.jsonl')
    assert len(turns) == sum(len(c.turns) for c in train)
    assert {t.id.split('#')[0] for t in turns} == {c.id for c in train}
    assert not {t.id.split('#')[0] for t in turns} & {c.id for c in test}
    assert not leakage(train, test)  # no (tool, query template) pair of the test split
    test_queries = {t.query for c in test for t in c.turns}
    assert not {t.query for t in turns} & test_queries
    # turn k carries the k earlier turns as history, as RolePlay keeps them
    conv = next(c for c in train if len(c.turns) > 2)
    ts = [t for t in turns if t.id.startswith(conv.id + '#')]
    assert [len(t.history) for t in ts] == [2 * k for k in range(len(conv.turns))]
    assert [t.query for t in ts] == [t.query for t in conv.turns]


def test_pick_turns_keeps_the_share_of_no_call_turns_and_the_order(turns):
    picked = P.pick_turns(turns, 20, seed=1)
    assert len(picked) == 20 and picked == [t for t in turns if t in picked]
    share = sum(t.expected_call is None for t in turns) / len(turns)
    assert abs(sum(t.expected_call is None for t in picked) / 20 - share) <= 0.05 + 1 / 20
    assert P.pick_turns(turns, None) == turns and P.pick_turns(turns, 10 ** 6) == turns
    half = P.pick_turns(turns, 20, seed=1, no_call_share=0.5)  # more questions that need no tool
    assert len(half) == 20 and sum(t.expected_call is None for t in half) == 10


def _call_turn(turns, optional=False):
    for t in turns:
        if t.expected_call:
            tool = next(x for x in t.tools if x.name == t.expected_call['name'])
            if not optional or any(not p.required and p.name in t.expected_call['arguments'] for p in tool.parameters):
                return t
    raise AssertionError('no such turn')


def test_labels_are_the_judges(turns):
    case = _call_turn(turns)
    gold = format_call(case.expected_call['name'], case.expected_call['arguments'])
    assert P.label(case, gold) == []
    other = next((t.name for t in case.tools if t.name != case.expected_call['name']), None)
    if other:
        assert P.label(case, format_call(other, case.expected_call['arguments'])) == ['wrong_tool']
    assert P.label(case, 'It is sunny.') == ['no_call']
    assert P.label(case, f"Action: {case.expected_call['name']}\nAction Input: {{'x': NaN}}") == ['invalid_json']
    key = next(iter(case.expected_call['arguments']))
    changed = {**case.expected_call['arguments'], key: 'something else entirely'}
    assert 'changed_value' in P.label(case, format_call(case.expected_call['name'], changed))
    assert P.label(case, gold, after_observation=gold) == ['loop']  # called again after the result
    assert P.label(case, gold, after_observation='Done: it is sunny.') == []
    none = next(t for t in turns if t.expected_call is None)
    assert P.label(none, 'Sure, happy to help.') == []
    assert P.label(none, gold) == ['false_call']


def test_pairs_prefer_the_expected_reply_over_the_models_own_mistakes(turns):
    case = _call_turn(turns)
    none = next(t for t in turns if t.expected_call is None)
    gold = format_call(case.expected_call['name'], case.expected_call['arguments'])
    key = next(iter(case.expected_call['arguments']))
    changed = format_call(case.expected_call['name'], {**case.expected_call['arguments'], key: 'zzz'})
    rollouts = [P.Rollout(case.id, 0, gold, []), P.Rollout(case.id, 1, changed, P.label(case, changed)),
                P.Rollout(case.id, 2, changed, P.label(case, changed)),  # the same mistake twice: one pair
                P.Rollout(case.id, 3, 'No idea.', ['no_call']),
                P.Rollout(case.id, 4, gold, ['loop'], after_observation=gold),
                P.Rollout(none.id, 0, gold, ['false_call']),
                P.Rollout(none.id, 1, '', [], error='completion failed: HTTP 500')]  # never a pair
    pairs = P.build_pairs([case, none], rollouts, per_prompt=5)
    by_case = {cid: [p for p in pairs if p.case_id == cid] for cid in (case.id, none.id)}
    assert sorted(p.kind for p in by_case[case.id]) == ['changed_value', 'loop', 'no_call']
    for p in pairs:
        assert p.rejected != p.chosen.rstrip() and p.rejected.strip()
        row = p.to_row()
        assert row['messages'][-1] == {'role': 'assistant', 'content': p.chosen} and row['rejected_response'] == p.rejected
    first = next(p for p in by_case[case.id] if p.kind != 'loop')
    assert first.chosen == gold and first.messages == case.messages()
    assert judge(case.expected_call, first.chosen, tools=case.tools).kind == 'ok'
    loop = next(p for p in by_case[case.id] if p.kind == 'loop')  # the request after the tool's result
    assert loop.messages == case.messages(gold) and loop.chosen == case.reference_answer
    (false_call,) = by_case[none.id]
    assert false_call.chosen == none.reference_answer and false_call.kind == 'false_call'
    assert len(P.build_pairs([case, none], rollouts, per_prompt=1)) == 2  # per turn
    capped = P.build_pairs([case, none], rollouts, per_prompt=5, per_kind=1)
    assert max(P.pair_counts(capped).values()) == 1


def test_perturbed_pairs_are_always_wrong_by_the_judge(turns):
    pairs = P.perturbed_pairs(turns, seed=0)
    assert len(pairs) >= 0.9 * len(turns)
    by_id = {t.id: t for t in turns}
    for p in pairs:
        case = by_id[p.case_id]
        assert judge(case.expected_call, p.chosen, tools=case.tools).kind == 'ok'
        assert judge(case.expected_call, p.rejected, tools=case.tools).kind != 'ok'
        assert p.source == 'perturbed'


def test_both_sources_give_every_turn_a_pair_and_the_models_own_mistakes_come_first(turns):
    case = _call_turn(turns)
    key = next(iter(case.expected_call['arguments']))
    changed = format_call(case.expected_call['name'], {**case.expected_call['arguments'], key: 'zzz'})
    rollouts = [P.Rollout(case.id, 0, changed, P.label(case, changed))]  # one turn wrong, the others right
    on_policy = P.make_pairs('on-policy', turns, rollouts)
    assert [(p.case_id, p.source) for p in on_policy] == [(case.id, 'on-policy')]
    both = P.make_pairs('both', turns, rollouts)
    assert both[0] == on_policy[0] and {p.source for p in both[1:]} == {'perturbed'}
    assert case.id not in {p.case_id for p in both[1:]}  # a turn with a pair of its own gets no perturbed one
    assert {p.case_id for p in both} == {p.case_id for p in P.perturbed_pairs(turns)} | {case.id}
    assert P.make_pairs('perturbed', turns, rollouts) == P.perturbed_pairs(turns)
    with pytest.raises(ValueError, match="choose one of on-policy, perturbed, both"):
        P.make_pairs('mixed', turns, rollouts)


def test_pairs_are_split_by_conversation(turns, tmp_path):
    pairs = P.perturbed_pairs(turns, seed=0)
    paths = P.write_pairs(tmp_path, pairs, val_share=0.2)
    train = [json.loads(x) for x in paths['train'].read_text().splitlines()]
    val = [json.loads(x) for x in paths['val'].read_text().splitlines()]
    assert len(train) + len(val) == len(pairs) and val
    first_user = lambda row: next(m['content'] for m in row['messages'] if m['role'] == 'user')  # noqa: E731
    # a conversation's turns share their first user message: none is on both sides
    assert not {first_user(r) for r in train} & {first_user(r) for r in val}
    assert [p.case_id for p in P.read_pairs(tmp_path / 'pairs.jsonl')] == [p.case_id for p in pairs]


def test_the_difference_of_two_replies():
    assert P.difference('Action: a\nAction Input: {"x": "abc"}', 'Action: a\nAction Input: {"x": "ab"}') == \
        ('Action: a\nAction Input: {"x": "ab', 'c', '', '"}')
    assert P.difference('same', 'same') == ('same', '', '', '')


def test_sampling_runs_the_real_roleplay_and_labels_every_reply(turns):
    picked = P.pick_turns(turns, 6, seed=0)
    case = next(t for t in picked if t.expected_call)
    gold = format_call(case.expected_call['name'], case.expected_call['arguments'])

    def reply(body):
        user = body['messages'][-1]['content']
        if 'Observation:' in user:
            return 'Here is the result.'
        return gold + 'Observation:' if case.query in user else 'I can answer that directly.'
    with ScriptedServer(reply) as server:
        rollouts = P.sample_rollouts(picked, server.base_url, 'scripted-model', n=3, loops=True, log=lambda *a: None)
    assert len(rollouts) == 3 * len(picked) and not any(r.error for r in rollouts)
    for r in rollouts:
        t = next(x for x in picked if x.id == r.case_id)
        assert r.kinds == P.label(t, r.output, r.after_observation)
        if t is case:
            assert r.right and r.after_observation == 'Here is the result.'
        elif t.expected_call:
            assert r.kinds == ['no_call']
    temps = [b.get('temperature') for b in server.chat_requests() if 'Observation:' not in b['messages'][-1]['content']]
    assert temps.count(0) == len(picked)  # the first reply of every turn greedy, the others sampled
    table = P.rollout_table(picked, rollouts)
    assert sum(g['replies'] for g in table.values()) == len(rollouts)


def test_a_failing_server_stops_the_sampling_at_once(turns):
    with ScriptedServer(lambda body: FAULTS['http_500']) as server:
        start = time.time()
        with pytest.raises(ServerFailing, match='HTTP 500'):
            P.sample_rollouts(turns, server.base_url, 'scripted-model', n=4, log=lambda *a: None)
    assert time.time() - start < 15


def test_the_grpo_reward_is_the_judge(turns):
    """GRPO pays 1 for what the judge calls right — a right call, and no call where none is needed — else 0."""
    import importlib.util
    from helpers import training
    spec = importlib.util.spec_from_file_location('aft_rewards', training.REWARDS)
    rewards = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(rewards)
    case = _call_turn(turns)
    none = next(t for t in turns if t.expected_call is None)
    rows = P.grpo_rows([case, none])
    assert rows[0]['messages'] == case.messages() and rows[1]['expected_call'] == ''
    gold = format_call(case.expected_call['name'], case.expected_call['arguments'])
    key = next(iter(case.expected_call['arguments']))
    changed = format_call(case.expected_call['name'], {**case.expected_call['arguments'], key: 'zzz'})
    reward = rewards.JudgeReward()
    assert not set(rows[0]) & {'tools', 'rejected_response', 'images', 'label'}  # columns ms-swift reads itself
    columns = {k: [r[k] for r in rows] for k in ('expected_call', 'offered_tools')}
    assert reward([gold, 'No tool needed: here you go.'], **columns) == [1.0, 1.0]
    assert reward([changed, gold], **columns) == [0.0, 0.0]  # a changed value earns nothing; so does a false call


def test_the_reading_of_before_and_after_counts_right_outcomes_up_and_failures_down():
    """A right outcome that rises is better and a failure that rises is worse (never both under "More"), argument
    errors included; the guide's question reads as kept, gained or lost."""
    from helpers import narrate
    from helpers.agentfabric import EvalCase
    from helpers.evaluation import RIGHT_CALL, RIGHT_NO_CALL, per_language, score
    tools = [{'name': 'get_weather', 'description': 'w', 'parameters': [
        {'name': 'city', 'type': 'string', 'description': 'c', 'required': True},
        {'name': 'days', 'type': 'integer', 'description': 'd', 'required': False}]}]
    cases = [EvalCase.from_dict({'id': str(i), 'lang': 'en', 'instruction': 'x', 'tools': tools, 'query': 'q',
                                 'expected_call': {'name': 'get_weather', 'arguments': {'city': 'Paris'}} if i < 6
                                 else None, 'observation': 'o', 'reference_answer': ''}) for i in range(10)]
    right, extra = format_call('get_weather', {'city': 'Paris'}), format_call('get_weather', {'city': 'Paris', 'days': 2})
    outs = {'before': [right] * 2 + [extra] * 4 + [right] * 4,  # 4 unasked options, 4 false calls
            'after': [right] * 5 + [extra] + ['no tool needed'] * 4}
    scored = {arm: score(cases, {c.id: {'id': c.id, 'output': o} for c, o in zip(cases, out)})
              for arm, out in outs.items()}
    counts = {arm: P.change_counts(cases, s) for arm, (_, s) in scored.items()}
    assert counts['before'][RIGHT_CALL] == 2 and counts['after'][RIGHT_NO_CALL] == 4
    assert counts['before']['right tool, an optional parameter nobody asked for'] == 4
    langs = {arm: per_language(cases, s) for arm, (_, s) in scored.items()}
    text = P.comparison_reading(scored['after'][0], scored['before'][0], langs, 'after', 'before',
                                counts['before'], counts['after'])
    better = next(line for line in text.splitlines() if line.startswith(f'- {P.GOOD_WAY}: '))
    assert f'{RIGHT_CALL} 2 → 5' in better and f'{RIGHT_NO_CALL} 0 → 4' in better
    assert 'an optional parameter nobody asked for 4 → 1' in better and P.BAD_WAY not in text
    back = P.comparison_reading(scored['before'][0], scored['after'][0], langs | {'before': langs['before']},
                                'before', 'after', counts['after'], counts['before'])
    assert f'{RIGHT_CALL} 5 → 2' in next(line for line in back.splitlines() if line.startswith(f'- {P.BAD_WAY}: '))
    nudged = P.comparison_reading(scored['after'][0], scored['before'][0], langs, 'after', 'before',
                                  {RIGHT_CALL: 24, 'wrong tool': 10}, {RIGHT_CALL: 22, 'wrong tool': 11})
    assert P.GOOD_WAY not in nudged and P.BAD_WAY not in nudged  # a case or two is what one training more can do
    assert f'not read as better or worse): {RIGHT_CALL} 24 → 22; wrong tool 10 → 11.' in nudged
    assert narrate.before_after_reading('✓ right call', '✗ no call', 'pref').startswith('Lost')
    assert narrate.before_after_reading('✗ wrong tool', '✓ right call', 'pref').startswith('Gained')


def test_the_sft_reading_says_when_this_run_stopped_before_the_curves_plateau():
    from helpers import ablate
    curve = ablate.learning_curves()
    sft = {'counts': {'args_exact_acc': [24, 68], 'false_positive_rate': [22, 26]}}
    short = P.sft_reading(curve, sft, steps=53)
    assert 'This run trained 53 steps, fewer than the first point of the curves (step 85)' in short
    assert 'fewer than the first point' not in P.sft_reading(curve, sft, steps=85)
    assert '(24/68)' in short and '(22/26)' in short


def test_a_grpo_training_is_read_by_its_rewards():
    history = [{'loss': 0.0, 'reward': r, 'frac_reward_zero_std': z} for r, z in
               [(0.25, 0.75)] * 5 + [(0.5, 0.5)] * 5]
    text = P.training_reading(history)
    assert 'mean reward (replies judged right) 0.250 → 0.500' in text
    assert 'groups whose replies all scored alike (no signal) 0.750 → 0.500' in text
