"""Recipe ablations: arms change only what they name, run end to end on the tiny profile, reject bad input."""
import json
import subprocess
import sys

import pytest

from helpers import ablate
from helpers.ablate import ARMS, Arm, plan_for, run_arm
from helpers.synth import PROFILE_DATA
from helpers.training import preset


def test_an_arm_changes_only_what_it_names():
    plan = plan_for(Arm('x', 'test', data={'p_no_call': 0.4, 'answer_share': 1.0}), 'cpu')
    base = PROFILE_DATA['cpu']
    assert plan.config.p_no_call == 0.4 and plan.answer_share == 1.0
    assert plan.config.p_zh == base.config.p_zh and plan.n_train == base.n_train
    assert base.config.p_no_call != 0.4  # the profile's own plan is left alone
    with pytest.raises(ValueError, match='unknown data options'):
        plan_for(Arm('x', 'test', data={'p_no_cal': 0.4}), 'cpu')
    assert plan_for(Arm('x', 'test', data={'seed': 1}), 'cpu') == base  # the draw, not the plan


@pytest.mark.parametrize('name', list(ARMS))
def test_every_arm_builds_its_data_plan_and_training_config(name):
    arm = ARMS[name]
    plan_for(arm, 'cpu')
    cfg = preset('cpu', cuda=False, **arm.train)
    for key, value in arm.train.items():
        assert getattr(cfg, key) == value or value == 'auto'  # 'auto': resolved for the machine by preset()


def _cli(*args):
    return subprocess.run([sys.executable, '-m', 'helpers', 'ablate', *args], capture_output=True, text=True,
                          timeout=120)


def test_cli_lists_arms_and_rejects_bad_input(tmp_path):
    listed = _cli('--list')
    assert listed.returncode == 0 and all(name in listed.stdout for name in ARMS)
    for args, said in ((['--arms', 'recipe'], '--cases is required'),
                       (['--arms', 'no-such-arm', '--cases', 'x.jsonl'], 'unknown arm'),
                       (['--arms', 'recipe', '--cases', str(tmp_path / 'missing.jsonl')], 'no such file')):
        r = _cli(*args)
        assert r.returncode == 2 and said in r.stderr and 'Traceback' not in r.stderr, (args, r.stderr)


def test_an_arm_trains_serves_and_scores_on_the_given_cases(tmp_path):
    """The tiny profile end to end: the arm's own data, a real training, ms-swift serving, RolePlay; with
    ``curve``, a checkpoint kept every step and each one scored on the same cases. The cases come from the
    generator as notebook 01 makes them, so this runs beside the notebook chain, not after it."""
    from helpers.synth import write_splits
    write_splits(tmp_path / 'run' / 'data', PROFILE_DATA['tiny'], seed=0)
    lines = (tmp_path / 'run' / 'data' / 'test_cases.jsonl').read_text().splitlines()[:3]
    cases = tmp_path / 'cases.jsonl'
    cases.write_text('\n'.join(lines) + '\n')
    arm = Arm('short', 'two steps', data={'n_train': 8, 'seed': 1}, train={'max_steps': 2}, curve=1)
    result = run_arm(arm, cases, tmp_path / 'arms', profile='tiny', log=lambda *_: None)
    assert result['n_cases'] == 3 and result['metrics']['n_cases'] == 3
    assert json.loads((tmp_path / 'arms' / 'short' / 'data' / 'data_summary.json').read_text())['seed'] == 1
    assert result['train']['steps'] == 2 and result['data']['conversations'] == 8
    preds = (tmp_path / 'arms' / 'short' / 'eval' / 'predictions.jsonl').read_text().splitlines()
    assert sorted(json.loads(p)['id'] for p in preds) == sorted(json.loads(l)['id'] for l in lines)
    again = run_arm(arm, cases, tmp_path / 'arms', profile='tiny', log=lambda *_: pytest.fail('retrained'))
    assert again == result  # a finished arm is read back, not repeated
    table = ablate.table([result])
    assert list(table.index) == ['short'] and table.loc['short', 'steps'] == 2
    assert [p['step'] for p in result['curve']] == [1, 2]
    assert all(p['metrics']['n_cases'] == 3 and p['eval_loss'] > 0 for p in result['curve'])
    assert result['curve'][-1]['train_minutes'] == round(result['train']['wall_seconds'] / 60, 1)
    rows = ablate.curve_markdown(result).splitlines()
    assert len(rows) == 4 and rows[2].startswith('| 1 | ') and rows[3].startswith('| 2 | ')
    assert 'Learning curve of `short`' in ablate.readme_section({'cases': str(cases), 'arms': [result]})


def test_training_arms_and_preference_arms_are_saved_to_their_own_records():
    training, preference = {'arm': {'name': 'short'}}, {'arm': {'name': 'dpo', 'stage': 'preference'}}
    assert ablate.record_for([training])[0] == ablate.RECORD
    assert ablate.record_for([{'arm': {'name': 'sft', 'stage': 'start'}}, preference])[0] == ablate.PREFERENCE_RECORD
    with pytest.raises(ValueError, match='mix training arms and preference arms'):
        ablate.record_for([training, preference])


def test_the_preference_table_of_the_docs_is_the_committed_record():
    from helpers.environment import repo_root
    doc = (repo_root() / ablate.DOC).read_text()
    saved = json.loads(ablate.PREFERENCE_RECORD.read_text())
    start = doc.index(ablate.PREFERENCE_BEGIN) + len(ablate.PREFERENCE_BEGIN) + 1
    assert doc[start:doc.index(ablate.PREFERENCE_END)] == ablate.readme_section(saved), \
        'regenerate it: python -m helpers ablate --start-run … --cases … --out … --report --readme'
    names = [a['arm']['name'] for a in saved['arms']]
    assert names[0] == ablate.START and {'dpo', 'dpo-seed1', 'dpo-nocall50', 'dpo-nocall50-seed1'} <= set(names)
    assert all(a['cases'] == saved['cases'] for a in saved['arms'])


def test_the_ablation_table_of_the_docs_is_the_committed_record():
    from helpers.environment import repo_root
    doc = (repo_root() / ablate.DOC).read_text()
    saved = json.loads((repo_root() / 'results' / 'ablation.json').read_text())
    start = doc.index(ablate.README_BEGIN) + len(ablate.README_BEGIN) + 1
    assert doc[start:doc.index(ablate.README_END)] == ablate.readme_section(saved), \
        'regenerate it: python -m helpers ablate --cases … --report --readme'
    assert ablate.README_BEGIN not in (repo_root() / 'README.md').read_text()  # the front door links to it instead
    assert {a['arm']['name'] for a in saved['arms']} >= {'before', 'react-loss', 'masked-30', 'decision-sessions'}


def test_a_preference_arm_samples_pairs_trains_and_scores_from_a_runs_model(tiny_run, tmp_path):
    """The preference stage as an arm: from the tiny run's fine-tuned model, rollouts shared by arms with the same
    sampling, a DPO training, the same cases; the record reads like a training arm's."""
    from helpers.ablate import PreferenceArm, run_preference_arm
    run, _ = tiny_run
    lines = (run / 'data' / 'test_cases.jsonl').read_text().splitlines()[:3]
    cases = tmp_path / 'cases.jsonl'
    cases.write_text('\n'.join(lines) + '\n')
    sample = {'turns': 4, 'samples_per_turn': 2}
    arm = PreferenceArm('pref', 'two steps', sample=sample, train={'max_steps': 2})
    result = run_preference_arm(arm, run, cases, tmp_path / 'arms', profile='tiny', log=lambda *_: None)
    assert result['n_cases'] == 3 and result['train']['steps'] == 2 and result['arm']['stage'] == 'preference'
    assert result['data']['turns'] == 4 and result['data']['samples'] <= result['data']['pairs']
    assert list((tmp_path / 'arms' / '_rollouts').glob('*.jsonl'))
    other = PreferenceArm('pref-perkind', 'one pair per failure kind', sample=sample, pairs={'per_kind': 1},
                          train={'max_steps': 1})
    second = run_preference_arm(other, run, cases, tmp_path / 'arms', profile='tiny', log=lambda *_: None)
    assert second['data']['sample_seconds'] == result['data']['sample_seconds']  # the rollouts were reused
    assert ablate.table([result, second]).loc['pref', 'steps'] == 2
    assert [r['arm']['name'] for r in ablate.collect(tmp_path / 'arms', cases)] == ['pref', 'pref-perkind']
    grpo = PreferenceArm('pref-grpo', 'GRPO, rewards by the judge', sample=sample,
                         train={'stage': 'grpo', 'max_steps': 1})
    third = run_preference_arm(grpo, run, cases, tmp_path / 'grpo', profile='tiny', log=lambda *_: None)
    assert third['train']['steps'] == 1 and third['data']['pairs'] == 0 and third['metrics']['n_cases'] == 3
    assert third['data']['sample_seconds'] == 0  # the trainer samples: no rollouts made or borrowed
    assert 'mean reward (replies judged right)' in third['train']['reading']  # ms-swift ran our judge as reward
    said = []
    assert ablate.start_arm(run, tmp_path / 'arms', cases, log=said.append) is None and 'no row' in said[0]
    start = ablate.start_arm(run, tmp_path / 'start', run / 'data' / 'test_cases.jsonl')
    own_cases = (run / 'data' / 'test_cases.jsonl').read_text().splitlines()
    assert start['arm']['stage'] == 'start' and start['n_cases'] == len(own_cases)
    assert ablate.record_for([start, result, second])[0] == ablate.PREFERENCE_RECORD
    section = ablate.readme_section({'cases': 'c.jsonl', 'arms': [start, result, second]})
    assert f'fine-tuned model of the run `{run.name}`' in section and '| pairs | sample min |' in section
    sft_row = next(line for line in section.splitlines() if line.startswith('| sft |'))
    assert '| - | - |' in sft_row and 'nan' not in section
