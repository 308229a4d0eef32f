"""The machine-aware plan (helpers.budget): the probe, the estimate from a calibration, scaling to a budget."""
import json

import pytest

from helpers import budget
from helpers.budget import Calibration, Probe

UNITS = {'sft_step': 5.0, 'ms_agent_step': 9.0, 'dpo_step': 20.0, 'train_start': 25.0, 'server_start': 18.0,
         'case:base': 0.8, 'case:ms_agent': 0.7, 'case:early': 0.5, 'case:finetuned': 0.55, 'case:preference': 0.55,
         'sample_turn': 1.5}
FIXED = {nb: 5.0 for nb in budget.NOTEBOOKS}
CAL = {'bf16': Calibration('bf16', {'gflops': {'fp32': 200.0, 'bf16': 600.0}, 'python_ops': 8.0, 'threads': 2,
                                    'bf16_units': True, 'seconds': 1.0}, UNITS, FIXED, 'synthetic')}


def probe(fp32, bf16=None, py=8.0):
    return Probe({'fp32': fp32, **({'bf16': bf16} if bf16 else {})}, py, 2, bf16 is not None, 1.0)


def test_the_probe_measures_this_machine():
    p = budget.probe()
    assert p.gflops['fp32'] > 1 and p.python_ops > 0.1 and p.threads >= 1 and p.seconds < 30
    assert ('bf16' in p.gflops) == p.bf16_units


def test_the_calibration_machine_gets_the_recipe_and_its_own_times():
    plan = budget.make_plan('cpu', 'bf16', measured=probe(200.0, 600.0), calibration=CAL)
    assert plan.settings == plan.reference and not plan.scaled
    expected = budget.estimate(plan.reference, UNITS, FIXED)
    assert plan.estimate == pytest.approx(expected) and plan.total <= plan.budget_seconds == 30 * 60
    assert plan.expect('sft_step', 10) == 'about 50 s on this machine (notebook 00\'s estimate)'


def test_a_slower_machine_is_estimated_slower_and_scaled_to_its_budget():
    fast = budget.make_plan('cpu', 'bf16', measured=probe(200.0, 600.0), calibration=CAL)
    slow = budget.make_plan('cpu', 'fp32', measured=probe(200.0), calibration=CAL)  # no bf16 units: fp32, 45 min
    assert slow.budget_seconds == 45 * 60 and 'estimated from the matrix throughput' in slow.how
    assert slow.scaled and slow.total <= slow.budget_seconds
    floors = {k: f for k, (_, f) in budget.KNOBS['cpu'].items()}
    assert all(floors[k] <= b <= a for k, (a, b) in slow.scaled.items())
    # the same settings cost 3x the compute time here (600 GFLOP/s in bf16 there, 200 in fp32 here)
    same = budget.estimate(fast.settings, *budget.unit_seconds(CAL, 'fp32', probe(200.0))[:2])
    assert same['02_training.ipynb'] > 2 * fast.estimate['02_training.ipynb']
    text = budget.describe(slow)
    assert 'scaled' in text and 'fp32' in text and 'training steps (notebook 02)' in text
    assert slow.training_overrides() == {'max_steps': slow.settings['sft_steps']}
    assert fast.training_overrides() == {}


def test_the_evaluation_is_cut_before_the_training():
    """A budget a little short of the recipe cuts only cases, the early arm and replies per turn; a much shorter one
    cuts those to their first-cut values and then every knob by one factor."""
    fast = probe(200.0, 600.0)
    full = budget.make_plan('cpu', 'bf16', measured=fast, calibration=CAL).total / 60
    first = budget.FIRST_CUT['cpu']
    near = budget.make_plan('cpu', 'bf16', budget_minutes=full * 0.93, measured=fast, calibration=CAL)
    assert near.scaled and set(near.scaled) <= set(first) and near.total <= near.budget_seconds
    assert all(first[k] <= b for k, (_, b) in near.scaled.items())
    far = budget.make_plan('cpu', 'bf16', budget_minutes=full * 0.5, measured=fast, calibration=CAL)
    assert far.settings['sft_steps'] < far.reference['sft_steps'] and far.total <= far.budget_seconds
    assert all(far.settings[k] <= v for k, v in first.items())
    uniform = budget.scale(budget.KNOBS['cpu'], 0.0)  # what scaling everything together reaches first: the floors
    assert far.settings['sft_steps'] > uniform['sft_steps']
    assert 'the evaluation first' in budget.describe(far)


def test_a_machine_too_slow_for_the_floors_gets_the_floors_and_says_so():
    plan = budget.make_plan('cpu', 'fp32', measured=probe(2.0, py=0.5), calibration=CAL)
    assert plan.settings == {k: f for k, (_, f) in budget.KNOBS['cpu'].items()}
    assert plan.total > plan.budget_seconds and 'over the budget' in budget.describe(plan)


def test_without_a_calibration_nothing_is_estimated_and_other_profiles_keep_their_recipe(tmp_path):
    plan = budget.make_plan('cpu', 'bf16', measured=probe(100.0, 300.0), calibration={})
    assert plan.estimate == {} and plan.settings == plan.reference and 'no calibration' in budget.describe(plan)
    assert budget.make_plan('tiny', 'bf16').settings == budget.scale(budget.KNOBS['tiny'], 1.0)
    assert plan.notebook_line('02_training.ipynb').endswith('no estimate for the cpu profile on this machine')


def test_a_plan_round_trips_through_the_run_directory(tmp_path):
    plan = budget.make_plan('cpu', 'fp32', measured=probe(60.0), calibration=CAL)
    budget.write_plan(tmp_path, plan)
    assert budget.load_plan(tmp_path, 'cpu') == plan
    old = budget.load_plan(tmp_path / 'no-plan', 'cpu')  # a run from before plans: the recipe as it is
    assert old.settings == old.reference and old.estimate == {}
    assert plan.dpo_overrides(1000, 4) == {'max_steps': plan.settings['dpo_steps']}
    assert plan.dpo_overrides(8, 4) == {}  # one epoch is shorter than the cap


def test_calibration_is_saved_per_precision(tmp_path):
    path = tmp_path / 'cal.json'
    budget.save_calibration(CAL['bf16'], path)
    budget.save_calibration(Calibration('fp32', CAL['bf16'].probe, UNITS, FIXED, 'other'), path)
    loaded = budget.load_calibrations(path)
    assert set(loaded) == {'bf16', 'fp32'} and loaded['bf16'] == CAL['bf16']
    assert json.loads(path.read_text())['about']


def test_with_both_precisions_calibrated_a_unit_is_matrix_work_plus_the_rest():
    """Units made from a known split (GFLOP of matrix work + millions of Python steps) on two calibration machines
    are recovered on a third one, where the matrix speed alone would be far off; starts scale by Python speed."""
    work, rest = {'sft_step': (3300.0, 30.0), 'dpo_step': (9000.0, 100.0)}, {'train_start': 25.0, 'server_start': 18.0}

    def cal(precision, gflops, py):
        p = {'gflops': gflops, 'python_ops': py, 'threads': 2, 'bf16_units': 'bf16' in gflops, 'seconds': 1.0}
        units = {u: m / gflops[precision] + o / py for u, (m, o) in work.items()}
        return Calibration(precision, p, {**UNITS, **units, **rest}, FIXED, f'synthetic {precision}')

    both = {'bf16': cal('bf16', {'fp32': 330.0, 'bf16': 2400.0}, 7.0), 'fp32': cal('fp32', {'fp32': 340.0}, 7.5)}
    avx2 = probe(100.0, py=5.0)  # a slower machine without bf16 units
    units, fixed, how = budget.unit_seconds(both, 'fp32', avx2)
    for u, (m, o) in work.items():
        assert units[u] == pytest.approx(m / 100.0 + o / 5.0)
    assert units['train_start'] == pytest.approx(25.0 * 7.5 / 5.0) and 'split into matrix products' in how
    dropped = {**both, 'fp32': Calibration('fp32', both['fp32'].probe, {k: v for k, v in both['fp32'].units.items()
                                                                       if k != 'case:early'}, FIXED, 'no early arm')}
    borrowed = budget.unit_seconds(dropped, 'fp32', avx2)[0]['case:early']  # an arm the fp32 plan dropped
    assert borrowed == pytest.approx(UNITS['case:early'] * units['case:finetuned'] / UNITS['case:finetuned'])
    only_bf16, _, how1 = budget.unit_seconds({'bf16': both['bf16']}, 'fp32', avx2)
    assert 'only' in how1 and only_bf16['sft_step'] > 1.5 * units['sft_step']  # the matrix speed alone overstates it


def test_a_notebooks_line_names_only_the_cuts_it_uses():
    plan = budget.Plan('cpu', 'fp32', {'sft_steps': 53, 'eval_cases': 94}, {'sft_steps': 85, 'eval_cases': 150},
                       {'06_preference.ipynb': 50.0})
    assert plan.cuts() == ['training steps (notebook 02) 85 → 53',
                           'held-out cases per model (notebooks 05, 06) 150 → 94']
    line = plan.notebook_line('06_preference.ipynb')
    assert 'held-out cases per model (notebooks 05, 06) 150 → 94' in line and 'training steps' not in line
