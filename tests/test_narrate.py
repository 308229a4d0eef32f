"""What the learner reads: no hand-written figure that the run did not produce (the rule, and every notebook, the
README and the data plans' texts under it), no lab-notebook detail in the lessons, links into docs/ that resolve,
paragraphs generated from the run that react to it, and time announced before it is spent."""
import json
import re
from collections import Counter

import pytest
from hypothesis import given, settings, strategies as st

from helpers import ablate, narrate
from helpers.environment import repo_root
from helpers.pipeline import notebooks
from helpers.synth import PROFILE_DATA

ROOT = repo_root()


def flagged(text):
    return [f.text for f in narrate.unlabelled_figures(text)]


# -- The rule ---------------------------------------------------------------------------------------------------

MEASURED = [  # (prose, the figure it must find)
    ('Each step took 6.0-6.6 s here.', '6.6 s'),
    ('a throughput of 387 tokens/s', '387 tokens/s'),
    ('the same 82 steps as before', '82 steps'),
    ('it ends at a validation loss of 0.72', '0.72'),
    ('Validation loss: 0.82 at the end.', '0.82'),
    ('throughput: 55.7 on this machine', '55.7'),
    ('a budget of about 8 minutes', '8 minutes'),
    ('training took 1 h on a laptop', '1 h'),
    ('It got 1 of 5 right', '1 of 5'),
    ('and 2/5 of the held-out ones', '2/5'),
    ('between 37 and 42 of 113 cases', '42 of 113'),
    ('the guide counted 1 right call in 10', '1 right call in 10'),
    ('about 40 % of a step', '40 %'),
    ('selection rose by 12.5%.', '12.5%'),
    ('1.72× the fp32 speed', '1.72×'),
    ('peak memory 9.8 GiB', '9.8 GiB'),
    ('a 15 GB download', '15 GB'),
    ('one 1,270-token step', '1,270-token'),
    ('it looped in 41 cases', '41 cases'),
    ('| arm | 0.33 |', '0.33'),
    ('- a list item with 45.4s a step', '45.4s'),
    ('The base model scored 0.04, the trained one 0.78.', '0.78'),
    ('**0.84 (41/49)** in Chinese', '41/49'),
]
SETTINGS = [  # prose that holds no measured figure
    'ms-swift 4.6.0, modelscope-agent 0.7.2, vLLM 0.32, torch 2.11 with CUDA 12.8 and Python 3.11',
    'ms-swift 1.7\'s linear schedule, modelscope-agent before 0.4.0',
    'Qwen2.5-7B-Instruct and SmolLM2-135M-Instruct (135M weights, a 7B model)',
    'LoRA r=16 α = 32 on all linear layers, lr 2e-4, dropout 0.05, weight decay 0.1, temperature 0.8',
    'section 3, §5, notebooks 00-06, notebook 02, step 2 of the guide',
    'rates with their 95% Wilson interval and a 95 % confidence interval',
    'a catalog of 36 tools in 16 categories; at most 3 tools; sessions of 4-6 queries',
    'the code `loss = 0.72` and `--max_length 1500`, and\n```\n6.0 s a step\n```',
    'a link [the ms-swift docs](https://swift.readthedocs.io/en/v4.6.0/page.html)',
    'batch 2 with 32/GPUs accumulation steps, max_length 1500, 2 epochs, `self_cognition=3000`',
    'run ids and paths like runs/20261122-165846-cpu/train/checkpoint-85',
]


@pytest.mark.parametrize('text, figure', MEASURED)
def test_a_measured_figure_is_found(text, figure):
    assert figure in flagged(text), narrate.figures(text)


@pytest.mark.parametrize('text', SETTINGS)
def test_versions_names_settings_and_section_numbers_are_no_figures(text):
    assert flagged(text) == []


def test_a_figure_passes_when_its_own_sentence_names_its_reference():
    assert flagged('The reference run took 19 min (`results/cpu-run.json`). This run took 45 min.') == ['45 min']
    assert flagged('The guide counted 1 right call in 10 ([the guide](https://example.org/guide)).') == []
    assert flagged('| reference (`results/ablation.json`) | 0.37 |\n|---|---|\n| this run | 0.41 |') == ['0.41']
    assert flagged('- 0.5 from results/cpu-run.json\n- 0.6 from nowhere') == ['0.6']
    assert flagged('Loss 0.7 per results/made-up.txt') == ['0.7']  # a reference is a committed JSON record


@settings(max_examples=60, deadline=None)
@given(value=st.floats(min_value=0.01, max_value=999, allow_nan=False).map(lambda v: f'{v:.2f}'),
       unit=st.sampled_from(['', ' s', ' min', '%', ' GiB', ' tokens/s', '×']),
       lead=st.sampled_from(['It reached', 'The run shows', 'We measured', 'Here the figure is', 'Then came']),
       tail=st.sampled_from(['.', ' on this machine.', ', a good sign.', ' (see notebook 05).']))
def test_any_decimal_figure_in_any_sentence_is_found_unless_referenced(value, unit, lead, tail):
    text = f'{lead} {value}{unit}{tail}'
    assert flagged(text), text
    assert not flagged(f'{lead} {value}{unit} (`results/cpu-run.json`){tail}')


@settings(max_examples=40, deadline=None)
@given(k=st.integers(0, 500), n=st.integers(1, 500), form=st.sampled_from(['{k} of {n}', '{k}/{n}',
                                                                           '{k} of the {n}']))
def test_any_count_k_of_n_is_found(k, n, form):
    text = f'The model got {form.format(k=k, n=n)} right.'
    assert flagged(text), text


def test_lab_notes_are_found_outside_code():
    text = 'Run 20261122-165846-cpu at commit d76d6d3 trained arm fast-120-full-lr2; `abc1234` in code is fine.'
    assert narrate.lab_notes(text, ablate.ARMS) == ['20261122-165846-cpu', 'd76d6d3', 'fast-120-full-lr2']
    assert narrate.lab_notes('the recipe before the change, trained fast', ablate.ARMS) == []  # plain words


# -- What the learner reads, checked with the rule --------------------------------------------------------------

def markdown_cells(path):
    return [(i, ''.join(c['source'])) for i, c in enumerate(json.loads(path.read_text())['cells'])
            if c['cell_type'] == 'markdown']


@pytest.mark.parametrize('nb', notebooks(), ids=lambda p: p.name)
def test_no_notebook_markdown_states_a_figure_the_run_did_not_produce(nb):
    """Figures a learner reads in markdown either come from the run (a code cell renders them) or name the
    committed record they come from, which must exist."""
    bad = [(i, f.text, f.sentence[:100]) for i, text in markdown_cells(nb) for f in narrate.unlabelled_figures(text)]
    assert not bad, f'render these from the run, or name their committed reference: {bad}'
    for _, text in markdown_cells(nb):
        for ref in re.findall(r'results/[\w./-]+\.json', text):
            assert (ROOT / ref).is_file(), f'{nb.name} names {ref}, which is not committed'


@pytest.mark.parametrize('nb', [p for p in notebooks() if p.name[:2] <= '05'], ids=lambda p: p.name)
def test_the_lessons_leave_run_ids_commits_and_arm_names_to_the_docs(nb):
    notes = [(i, narrate.lab_notes(text, ablate.ARMS)) for i, text in markdown_cells(nb)]
    assert not [n for n in notes if n[1]], notes


def slug(heading):
    return re.sub(r'[^\w\- ]', '', heading.strip().lower()).replace(' ', '-')


@pytest.mark.parametrize('nb', notebooks(), ids=lambda p: p.name)
def test_links_into_docs_resolve(nb):
    for _, text in markdown_cells(nb):
        for target in re.findall(r'\]\((\.\./docs/[^)\s]+)\)', text):
            path, _, anchor = target.partition('#')
            doc = (nb.parent / path).resolve()
            assert doc.is_file(), f'{nb.name}: {target}'
            if anchor:
                heads = {slug(h) for h in re.findall(r'^#+ (.+)$', doc.read_text(), re.M)}
                assert anchor in heads, f'{nb.name}: #{anchor} is no heading of {path} ({sorted(heads)})'


def test_every_link_between_the_readme_and_the_docs_resolves():
    for doc in [ROOT / 'README.md', *sorted((ROOT / 'docs').glob('*.md'))]:
        for target in re.findall(r'\]\(([^)\s]+)\)', doc.read_text()):
            if target.startswith(('http://', 'https://')):
                continue
            path, _, anchor = target.partition('#')
            dest = (doc.parent / path).resolve() if path else doc
            assert dest.is_file(), f'{doc.name}: {target}'
            if anchor:
                heads = {slug(h) for h in re.findall(r'^#+ (.+)$', dest.read_text(), re.M)}
                assert anchor in heads, f'{doc.name}: #{anchor} is no heading of {dest.name}'


def test_the_readme_and_the_docs_it_links_hold_no_unreferenced_hand_written_figure():
    readme = (ROOT / 'README.md').read_text()
    hand = re.sub(r'<!-- (\w+):begin.*?<!-- \1:end -->', '', readme, flags=re.S)  # generated parts are checked
    assert not flagged(hand), flagged(hand)                                       # against their summaries
    for target in re.findall(r'\]\((docs/[^)#\s]+)', readme):
        assert (ROOT / target).is_file(), target
    assert len(readme.encode()) <= 15 * 1024


@pytest.mark.parametrize('profile', list(PROFILE_DATA))
def test_the_data_plans_printed_reason_holds_no_measured_figure(profile):
    assert not flagged(' '.join(PROFILE_DATA[profile].why)), PROFILE_DATA[profile].why


# -- Paragraphs generated from the run --------------------------------------------------------------------------

def test_the_language_paragraph_follows_the_run_not_a_profile():
    cost = {'zh': {'mean_tokens': 520.0}, 'en': {'mean_tokens': 330.0}}
    both = narrate.data_languages({'langs': ['zh', 'en']}, {'zh': 97, 'en': 76}, cost)
    assert '97 Chinese' in both and '76 English' in both and 'English only' not in both and '1.58×' in both
    english = narrate.data_languages({'langs': ['en']}, {'en': 80}, cost)
    assert 'English only' in english
    assert 'this draw has only zh' in narrate.data_languages({'langs': ['zh', 'en']}, {'zh': 3}, None)


def test_the_guide_question_reading_depends_on_what_the_run_trained_on():
    miss = {'base': '✗ no call', 'finetuned': '✗ wrong tool: x'}
    assert 'real miss' in narrate.guide_reading(miss, ['zh', 'en'], 'cpu')
    assert 'no Chinese' in narrate.guide_reading(miss, ['en'], 'cpu')
    assert 'random model' in narrate.guide_reading(miss, ['zh'], 'tiny')
    hit = narrate.guide_reading({'base': '✗ no call', 'finetuned': '✓ right call'}, ['zh'], 'cpu')
    assert hit.startswith('Right: finetuned') and 'the base model did not' in hit and 'not expected' not in hit
    call, answer = 'Action: amap_weather\nAction Input: {"location": "朝阳区"}', '朝阳区今天阵雨。'
    looped = narrate.guide_reading({'base': '✗ no call', 'finetuned': '✓ right call'}, ['zh'], 'cpu',
                                   {'finetuned': [call] * 10})
    assert 'called again 9 times and never answered' in looped and "answered from the tool's result" not in looped
    once = narrate.guide_reading({'finetuned': '✓ right call'}, ['zh'], 'cpu', {'finetuned': [call, answer]})
    assert "answered from the tool's result" in once and 'again' not in once


def test_merge_and_smoke_test_lines_react_to_the_run(tmp_path):
    ckpt = tmp_path / 'checkpoint-85'
    ckpt.mkdir()
    assert 'needs no merge' in narrate.merge_line(str(ckpt), str(ckpt))
    assert 'merged' in narrate.merge_line(str(ckpt), str(tmp_path / 'checkpoint-85-merged'))
    wrong = narrate.smoke_reading('✗ wrong tool: calendar_add_event', 'model')
    assert '**not** the right call' in wrong and 'proves' not in wrong
    assert 'right call for this case' in narrate.smoke_reading('✓ right call: x', 'model')


def test_the_gallery_summary_counts_verdicts_regressions_and_loops():
    rows = [{'case': 'seen', 'base verdict': '✓', 'finetuned verdict': '✗'},
            {'case': 'new', 'base verdict': '✗', 'finetuned verdict': '✓'},
            {'case': 'none', 'base verdict': '✓', 'finetuned verdict': '✓'}]
    text = narrate.gallery_reading(rows, ['base', 'finetuned'], {'base': {}, 'finetuned': {'new': 8}})
    assert 'base 2 of 3; finetuned 2 of 3' in text and '**Regressions**: base got right what finetuned did not: seen' \
        in text and 'finetuned got right what base did not: new' in text and 'up to 8 more calls' in text


def test_a_runaway_loop_is_cut_in_the_display_and_counted():
    from helpers.agentfabric import OBSERVATION_TEMPLATE, format_call, transcript
    call = format_call('unit_convert', {'value': 80})
    outputs = [format_call('calorie_lookup', {'food': 'pork'})] + [call] * 9 + ['About 326 kcal.']
    text = transcript(outputs, ['{"calories": 326}'] * 10)
    view = narrate.loop_view(text, outputs)
    assert view.count('Action: unit_convert') == 1 and '[… 8 more model outputs cut here (8× unit_convert)' in view
    assert view.endswith('About 326 kcal.') and len(view) < len(text) / 3
    assert narrate.recalls(outputs) == 9 and narrate.recalls(['Paris is sunny.']) == 0
    short = transcript(outputs[:2], ['x'])
    assert narrate.loop_view(short, outputs[:2]) == short and OBSERVATION_TEMPLATE


def test_recall_rate_counts_cases_that_called_again_after_a_result():
    preds = {'a': {'n_llm_calls': 2}, 'b': {'n_llm_calls': 3}, 'c': {'n_llm_calls': 4, 'stopped': 'limit'},
             'd': {'n_llm_calls': 1}, 'e': {'error': 'x'}}
    assert narrate.recall_rate(preds) == {'ran': 3, 'recalled': 2, 'stopped': 1}
    text = narrate.recall_reading({'finetuned': narrate.recall_rate(preds), 'base': {'ran': 0, 'recalled': 0,
                                                                                     'stopped': 0}}, 4)
    assert '2/3 [' in text and '1 stopped at the limit' in text and 'base' not in text


def history(losses, evals=()):
    rows = [{'loss': v, 'global_step/max_steps': f'{i + 1}/{len(losses)}'} for i, v in enumerate(losses)]
    return rows + [{'eval_loss': v, 'global_step/max_steps': f'{len(losses)}/{len(losses)}'} for v in evals]


def test_losses_are_read_smoothed_and_every_figure_comes_from_the_inputs():
    h = history([2.9, 1.2, 0.9, 0.6, 0.36, 0.5, 0.4, 0.45, 0.7], evals=[0.9, 0.82])
    assert narrate.smoothed(h, 'loss', 5) == pytest.approx((0.36 + 0.5 + 0.4 + 0.45 + 0.7) / 5, abs=1e-4)
    summary = {'steps': 9, 'wall_seconds': 95.0, 'seconds_per_step': 9.6, 'tokens_per_second': 55.7}
    text = narrate.training_reading(summary, h)
    assert '0.48' in text and '0.70' not in text and '55.7' not in text and '56 tokens/s' in text
    assert set(re.findall(r'\d+\.\d+', text)) <= {'9.6', '0.48', '0.82', '0.90'}  # nothing but the inputs
    ref = {'note': 'measured run R', 'precision': 'bf16', 'training': {'steps': 85, 'wall_seconds': 515}}
    assert '(`results/cpu-run.json`, measured run R, bf16) trained 85 steps in 8 min 35 s (6.1 s a step, start ' \
        'included; this run 10.6 s).' in narrate.training_reading(summary, h, ref, 'results/cpu-run.json')
    curve = narrate.curve_reading(h)
    assert 'read the trend, not the last point' in curve and 'fell from 0.90 to 0.82' in curve
    flat = narrate.curve_reading([*h[:-1], {'eval_loss': 0.89, 'step': 9}])
    assert 'moved little, 0.90 → 0.89' in flat and 'learns the format' not in flat


def test_the_ms_agent_model_is_announced_with_its_time_and_why_it_trains_less():
    text = narrate.ms_agent_plan(20, 85, 2, 120, 170.0, capped=True, budget_cut=False, kept=True)
    assert '20 steps against 85' in text and 'about 2 min 50 s' in text and 'after 20 steps' in text
    assert "profile's time budget" in text and '40 rows seen of its 120' in text
    cut = narrate.ms_agent_plan(20, 85, 2, 120, None, capped=True, budget_cut=True, kept=False)
    assert 'no estimate' in cut and 'this machine cut them' in cut and 'kept' not in cut
    epoch = narrate.ms_agent_plan(150, 400, 32, 4800, None, capped=False, budget_cut=False, kept=False)
    assert 'one per conversation' in epoch and 'plan' not in epoch  # a GPU run: one epoch of each format
    assert 'as many steps as the main model' in narrate.ms_agent_plan(12, 12, 2, 24, None, True, False, False)
    reading = narrate.ms_agent_reading(history([2.94, 1.0]), history([0.66, 0.5]))
    assert '2.94' in reading and '0.66' in reading and 'not comparable' in reading


def test_the_readings_of_notebook_05_name_counts_best_arms_and_regressions():
    from helpers.evaluation import aggregate, compare, score
    from helpers.agentfabric import EvalCase, format_call
    tools = [{'name': 'get_weather', 'description': 'w', 'parameters': [{'name': 'city', 'type': 'string',
                                                                        'description': 'c', 'required': True}]}]
    cases = [EvalCase.from_dict({'id': str(i), 'lang': 'en', 'instruction': 'x', 'tools': tools, 'query': 'q',
                                 'expected_call': {'name': 'get_weather', 'arguments': {'city': 'Paris'}} if i < 8
                                 else None, 'observation': 'o', 'reference_answer': ''}) for i in range(12)]
    right, wrong = format_call('get_weather', {'city': 'Paris'}), format_call('get_weather', {'city': 'Rome'})
    outs = {'base': ['no'] * 12, 'finetuned': [right] * 6 + [wrong] * 2 + [right] * 4}
    scored = {arm: score(cases, {c.id: {'id': c.id, 'output': o} for c, o in zip(cases, out)}) for arm, out in outs.items()}
    results = {arm: m for arm, (m, _) in scored.items()}
    text = narrate.metrics_reading(results, 'base')
    assert 'tool selection ↑: best finetuned, 8/8' in text and 'false calls ↓: best base, 0/4' in text
    tied = narrate.metrics_reading({'base': results['base'], 'early': results['base']}, 'base')
    assert 'tool selection ↑: every arm the same, 0/8' in tied and 'best' not in tied
    comp = narrate.comparison_reading({'finetuned': compare(results['finetuned'], results['base'])}, 'base')
    assert '**finetuned** vs base:' in comp and 'worse: false calls' in comp
    assert 'irrelevance' not in comp.split('\n\n')[0] and 'repeats another rate: irrelevance detection' in comp
    kinds = {arm: Counter(s.kind for s in scores) for arm, (_, scores) in scored.items()}
    outcome = narrate.outcome_reading(kinds)
    assert 'base: right in 4 of 12 cases, most often wrong by *no call (one was needed)* (8)' in outcome
    assert 'finetuned: right in 6 of 12 cases, most often wrong by *called a tool (none was needed)* (4)' in outcome
    table = {'en': {'finetuned · tool selection ↑': '0.50 [0.30, 0.70] (10/20)'},
             'zh': {'finetuned · tool selection ↑': '0.90 [0.70, 0.97] (18/20)'}, 'xx': {}}
    assert 'weakest *en*' in narrate.group_reading(table, 'finetuned', 'language')
    assert 'no two groups' in narrate.group_reading(table, 'finetuned', 'language', minimum=30)
    errors = {'finetuned': {'right-tool calls': 8, 'arguments exact': 6, 'a value changed': 2, 'x': 0}}
    assert narrate.argument_errors_reading(errors, 'finetuned') == (
        'finetuned: 6 of 8 right-tool calls exact; the most frequent error is *a value changed* (2).')
    assert aggregate  # the readings take the metrics aggregate() makes


def test_the_fair_comparison_says_what_is_equal_and_what_is_not():
    text = narrate.fair_comparison(20, {'loss_scale': 'react'}, {'loss_scale': 'agentfabric', 'global_batch_size': 2,
                                                                 'learning_rate': 2e-4},
                                   {'agentfabric': 173, 'ms_agent': 120})
    assert 'Equal: 20 optimizer steps of 2 rows' in text and 'Not equal' in text and '`react`' in text
    assert 'as they are' in narrate.fair_comparison(None, None, None, {})


# -- Time ------------------------------------------------------------------------------------------------------

class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_a_countdown_prints_a_few_lines_with_the_time_left():
    clock, lines = Clock(), []
    cd = narrate.Countdown('evaluating base', 150, 'cases', step=0.25, every=120, out=lines.append, clock=clock)
    for done in range(1, 151):
        clock.now += 2.0
        cd.update(done)
    assert 4 <= len(lines) <= 5 and lines[-1].endswith('done') and '150/150 cases' in lines[-1]
    assert lines[0].startswith('evaluating base: 38/150 cases') and 'about 3 min 44 s left' in lines[0]
    slow, clock2 = [], Clock()
    cd = narrate.Countdown('training', 1000, out=slow.append, clock=clock2, step=0.5, every=120)
    for done in range(1, 4):
        clock2.now += 130  # slow steps: a line every two minutes even though the share moves little
        cd.update(done, ' · loss 1.00')
    assert len(slow) == 3 and '· loss 1.00' in slow[0]


def test_the_time_line_gives_this_machines_estimate_or_says_why_there_is_none():
    from helpers.budget import Plan
    plan = Plan('cpu', 'fp32', {'sft_steps': 40}, {'sft_steps': 85}, {'02_training.ipynb': 1500.0}, 2700.0)
    line = narrate.time_line(plan, '02_training.ipynb', {'note': 'measured run R', 'precision': 'bf16',
                                                         'machine': '2 CPU cores', 'timings':
                                                             {'02_training.ipynb': 653.3}}, 'results/cpu-run.json')
    assert line.startswith('Expected here: about 25 min 00 s') and 'training steps (notebook 02) 85 → 40' in line
    assert 'ran another plan of the recipe' in line and '10 min 53 s' not in line  # a 85-step run is no measure
    same = {'note': 'measured run R', 'precision': 'fp32', 'machine': '2 CPU cores', 'scaled': {'sft_steps': [85, 40]},
            'timings': {'02_training.ipynb': 653.3, '05_evaluation.ipynb': 100.0}}
    line = narrate.time_line(plan, '02_training.ipynb', same, 'results/cpu-fp32-run.json')
    assert 'committed reference run took 10 min 53 s (`results/cpu-fp32-run.json`' in line
    assert flagged(line) == ['25 min', '00 s']  # rendered from this run's plan; the reference one is labelled
    plan.estimate['05_evaluation.ipynb'] = 60.0
    assert 'scaled' not in narrate.time_line(plan, '05_evaluation.ipynb', same, 'r')  # 05 uses no training steps
    none = narrate.time_line(Plan('cpu', 'fp32', {}, {}, how='no calibration committed'), '02_training.ipynb')
    assert none.startswith('No estimate for this machine (no calibration committed)')


def test_estimates_per_cell_follow_the_calibration(tmp_path, monkeypatch):
    from helpers import budget
    cal = budget.Calibration('bf16', {'gflops': {'fp32': 100.0, 'bf16': 400.0}, 'python_ops': 10.0},
                             {'train_start': 20.0, 'sft_step': 6.0, 'ms_agent_step': 5.0, 'server_start': 10.0,
                              'case:base': 0.5, 'case:finetuned': 0.6}, {}, 'a test')
    monkeypatch.setattr(budget, 'load_calibrations', lambda path=None: {'bf16': cal})
    probe = {'gflops': {'fp32': 50.0, 'bf16': 200.0}, 'python_ops': 10.0, 'threads': 2, 'bf16_units': True,
             'seconds': 1.0}
    settings = {**budget.scale(budget.KNOBS['cpu'], 1.0), 'sft_steps': 10, 'ms_agent_steps': 4, 'eval_cases': 100}
    plan = budget.Plan('cpu', 'bf16', settings, {}, {'02_training.ipynb': 1.0}, probe=probe)
    got = narrate.estimates(plan)
    assert got['train'] == pytest.approx(20 + 10 * 12) and got['train_ms_agent'] == pytest.approx(20 + 4 * 10)
    assert got['eval:base'] == pytest.approx(10 + 100 * 1.0) and 'eval:ms_agent' not in got
    assert got['roleplay:finetuned'] == pytest.approx(10 + budget.work(settings)['04_roleplay.ipynb']['case:finetuned']
                                                      * 1.2)
    assert narrate.estimates(plan, sft_steps=20)['train'] == pytest.approx(20 + 20 * 12)  # a notebook's override
    assert narrate.estimates(budget.Plan('cpu', 'bf16', {}, {})) == {}


def test_the_precision_note_says_what_fp32_means_for_the_run_time():
    fp32 = narrate.precision_note('fp32', [], False)
    assert '**fp32**' in fp32 and 'no bf16 matrix instructions' in fp32 and 'several times as long' in fp32
    bf16 = narrate.precision_note('bf16', ['avx512_bf16'], False)
    assert '**bf16**' in bf16 and 'avx512_bf16' in bf16
    assert 'GPU' in narrate.precision_note('auto', [], True)


def test_evaluation_progress_is_a_few_plain_lines(capsys, tmp_path):
    from helpers.agentfabric import EvalCase
    from helpers.evaluation import evaluate
    from helpers.scripted_server import ScriptedServer
    cases = [EvalCase.from_dict({'id': f'c{i}', 'lang': 'en', 'instruction': 'x', 'tools': [],
                                 'query': f'hello {i}', 'expected_call': None, 'observation': '',
                                 'reference_answer': 'hi'}) for i in range(40)]
    with ScriptedServer(lambda body: 'hi') as srv:
        evaluate(cases, srv.base_url, 'scripted', tmp_path, workers=4)
    out = capsys.readouterr()
    lines = [line for line in (out.out + out.err).splitlines() if 'evaluating scripted' in line]
    assert 2 <= len(lines) <= 5 and '\r' not in out.err and lines[-1].endswith('done')


def test_tables_show_counts_as_whole_numbers():
    import pandas as pd
    from helpers import plots
    splits = pd.DataFrame({'train': {'conversations': 120, 'samples': 173}, 'test': {'conversations': 150}}).T
    cells = re.findall(r'>([^<>]+)</td>', plots.table(splits).to_html())
    assert cells == ['120', '173', '150', '–']  # a count with a gap is still a count, not 150.00
    run = pd.Series({'steps': 85, 'wall_seconds': 655.5, 'loss': 0.70771, 'ok': True}, dtype=object).to_frame()
    assert re.findall(r'>([^<>]+)</td>', plots.table(run).to_html()) == ['85', '655.50', '0.71', 'True']


def test_a_scaled_run_is_read_beside_the_committed_run_of_the_whole_recipe():
    from helpers.budget import Plan
    scaled = Plan('cpu', 'fp32', {'sft_steps': 53, 'eval_cases': 94}, {'sft_steps': 85, 'eval_cases': 150})
    mine = {'n_cases': 94, 'counts': {'tool_selection_acc': [55, 68], 'args_exact_acc': [24, 68],
                                      'false_positive_rate': [22, 26], 'invalid_call_rate': [1, 89]}}
    ref = {'note': 'measured run R', 'arms': {'finetuned': {
        'n_cases': 150, 'counts': {'tool_selection_acc': [84, 109], 'args_exact_acc': [39, 109],
                                   'false_positive_rate': [16, 41], 'invalid_call_rate': [3, 123]}}}}
    text = narrate.scaled_reading(scaled, mine, ref, 'results/cpu-run.json')
    assert text.startswith("This run's plan cut the training to 53 of the recipe's 85 steps")
    assert '(`results/cpu-run.json`, measured run R, its own 150 cases)' in text
    assert 'false calls ↓' not in text and '(16/41)' in text and '(22/26)' in text
    assert 'no committed run of the whole recipe' in narrate.scaled_reading(scaled, mine)
    assert narrate.scaled_reading(Plan('cpu', 'bf16', {'sft_steps': 85}, {'sft_steps': 85}), mine, ref) == ''
    summary, path = narrate.full_recipe_reference('cpu')
    assert path == 'results/cpu-run.json' and not summary.get('scaled')


def test_the_data_charts_reading_names_every_chart_it_can():
    counts = {'training samples by kind': {'call': 60, 'answer': 30, 'direct': 10},
              'training samples per tool (calls)': {'a': 10, 'b': 50},
              'conversations by language': {'zh': 55, 'en': 45},
              'tools offered per conversation': {1: 5, 3: 40},
              'conversations by type': {'session': 90, 'single': 10},
              'test cases': {'seen tool': 8, 'no call expected': 4}}
    text = narrate.counts_reading(counts)
    assert '100 training samples: 60 call, 30 answer and 10 direct' in text
    assert 'conversations by language: 55 zh and 45 en' in text
    assert '2 types of conversation, the most frequent *session* (90 of 100)' in text
    assert 'the frequent ones far more often' in text and 'the held-out test cases: 8 seen tool' in text
    assert narrate.counts_reading({}) == ''
