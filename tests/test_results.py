"""The results in README.md and docs/results.md come from the committed run summaries, and a summary comes from a
run's own files."""
import json
import re
import shutil

import pytest

from helpers import report
from helpers.environment import repo_root

ROOT = repo_root()
SUMMARY = ROOT / 'results' / 'cpu-run.json'


def section(text: str, name: str, key: str = '') -> str:
    m = re.search(rf'<!-- {name}:begin[^\n]*{re.escape(key)}[^\n]*-->\n(.*?)<!-- {name}:end -->', text, re.S)
    assert m, f'no generated {name} section' + (f' for {key}' if key else '')
    return m.group(1)


def test_the_docs_and_the_readme_are_the_committed_summaries():
    docs, readme = (ROOT / 'docs' / 'results.md').read_text(), (ROOT / 'README.md').read_text()
    found = report.summaries()
    assert SUMMARY in found
    for path, summary in found.items():  # every committed summary has its section, equal to it
        rel = str(path.relative_to(ROOT))
        assert section(docs, 'results', rel) == report.readme_results(summary), \
            f'regenerate it: python -m helpers results --readme --summary {rel}'
    assert section(readme, 'headline') == report.headline(found[SUMMARY], SUMMARY)
    assert section(readme, 'times') == report.time_box(found)
    for nb in sorted((ROOT / 'notebooks').glob('[0-9][0-9]_*.ipynb')):  # each notebook's measured run time, too
        intro = next(''.join(c['source']) for c in json.loads(nb.read_text())['cells'] if c['cell_type'] == 'markdown')
        assert section(intro, 'nbtimes') == report.notebook_times(found, nb.name), f'{nb.name}: regenerate it'
    assert 'Wall time per notebook' not in readme and len(readme.encode()) <= 15 * 1024  # the front door stays small


def _repo(tmp_path):
    root = tmp_path / 'repo'
    (root / 'docs').mkdir(parents=True)
    shutil.copytree(ROOT / 'results', root / 'results')
    for name in ('README.md', 'docs/results.md'):
        shutil.copy(ROOT / name, root / name)
    shutil.copytree(ROOT / 'notebooks', root / 'notebooks')
    return root


def test_a_summary_is_made_from_a_run_and_rewrites_the_docs(tiny_run, tmp_path):
    run_dir, steps = tiny_run
    summary = report.results_summary(run_dir, 'notebooks 00-06 by hand')
    assert summary['timings'] == {}  # a run by hand keeps no timings.json …
    summary['timings'] = {name: step.seconds for name, step in steps.items()}  # … the fixture measured them
    metrics = json.loads((run_dir / 'eval' / 'metrics.json').read_text())
    assert set(summary['arms']) == set(metrics['models']) and summary['baseline'] == metrics['baseline']
    for arm, m in summary['arms'].items():
        assert m['counts'] == metrics['models'][arm]['counts'] and m['n_cases'] == metrics['n_cases']
    assert summary['command'] == 'notebooks 00-06 by hand' and summary['commit']
    assert summary['precision'] == json.loads((run_dir / 'plan.json').read_text())['precision']
    assert summary['training']['steps'] == json.loads((run_dir / 'run_summary.json').read_text())['steps']
    root = _repo(tmp_path)
    path = root / 'results' / 'tiny-run.json'
    path.write_text(json.dumps(summary))
    changed = report.update_docs(path, root)
    notebooks = sorted((root / 'notebooks').glob('[0-9][0-9]_*.ipynb'))
    assert set(changed) == {root / 'docs' / 'results.md', root / 'README.md', *notebooks}
    for nb in notebooks:  # every notebook's introduction names its measured time on the tiny profile
        intro = next(''.join(c['source']) for c in json.loads(nb.read_text())['cells'] if c['cell_type'] == 'markdown')
        assert f"`tiny` (what `make test` runs): {report._duration(summary['timings'][nb.name])}" in intro
    docs, readme = (root / 'docs' / 'results.md').read_text(), (root / 'README.md').read_text()
    assert section(docs, 'results', str(path)) == report.readme_results(summary)  # a new section, added
    assert section(docs, 'results', 'results/cpu-run.json') == \
        section((ROOT / 'docs' / 'results.md').read_text(), 'results', 'results/cpu-run.json')  # the other kept
    tiny_row = next(line for line in section(readme, 'times').splitlines() if line.startswith('| `tiny`'))
    assert 'not measured yet' not in tiny_row and summary['note'] in tiny_row
    assert report.update_docs(path, root) == []  # a second time changes nothing
    link = tmp_path / 'latest-tiny'
    link.symlink_to(run_dir)
    assert report.results_summary(link, 'x')['note'] == f'measured run {run_dir.resolve().name}'


def test_the_time_box_fills_a_row_only_from_a_summary_of_that_kind_of_machine():
    base = json.loads(SUMMARY.read_text())
    fp32 = {**base, 'precision': 'fp32', 'note': 'measured run X-cpu', 'machine': 'AMD EPYC (avx2), 2 CPU cores',
            'timings': {'00_environment.ipynb': 30.0, '06_preference.ipynb': 3630.0}}
    rows = report.time_box({SUMMARY: base, SUMMARY.with_name('cpu-fp32-run.json'): fp32}).splitlines()[2:]
    total = f"{report._duration(sum(base['timings'].values()))} for {report._notebooks(base['timings'])}"
    assert [r.split(' | ')[1] for r in rows] == ['not measured yet', total, '61 min for notebooks 00-06',
                                                 'not measured yet']
    forced = report.time_box({SUMMARY: base, SUMMARY.with_name('cpu-fp32-run.json'): {
        **fp32, 'machine': 'Intel Xeon (amx_bf16 avx512_bf16), 2 CPU cores'}}).splitlines()[4]
    assert 'fp32 forced (`AFT_PRECISION=fp32`) on a CPU that has bf16 units' in forced
    assert 'forced' not in rows[2]  # a machine description without bf16 units
    unknown = {k: v for k, v in base.items() if k != 'precision'}  # a summary that does not say its precision …
    rows = report.time_box({SUMMARY: unknown}).splitlines()[2:]
    assert all('not measured yet' in r for r in rows)  # … fills no cpu row: it could be either
    gpu = {**base, 'profile': 'gpu', 'precision': 'auto'}
    assert 'not measured yet' not in report.time_box({SUMMARY: gpu}).splitlines()[-1]


def test_a_corrupt_summary_anywhere_in_results_leaves_every_document_alone(tmp_path):
    root = _repo(tmp_path)
    (root / 'results' / 'cpu-fp32-run.json').write_text('{"note": "half')
    before = {p: p.read_bytes() for p in (root / 'README.md', root / 'docs' / 'results.md')}
    with pytest.raises(report.RunFileError, match='cpu-fp32-run.json'):
        report.update_docs(root / 'results' / 'cpu-run.json', root)
    assert all(p.read_bytes() == b for p, b in before.items())


def test_the_readme_shows_each_language_when_the_run_has_them():
    summary = json.loads(SUMMARY.read_text())
    arm = next(iter(summary['arms']))
    zh = {'n_cases': 2, 'n_with_call': 1, 'n_without_call': 1, 'tool_selection_acc': 1.0, 'args_exact_acc': 0.0,
          'false_positive_rate': 1.0, 'invalid_call_rate': 0.0,
          'counts': {'tool_selection_acc': [1, 1], 'args_exact_acc': [0, 1], 'false_positive_rate': [1, 1],
                     'invalid_call_rate': [0, 2]}}
    section = report.readme_results({**summary, 'per_language': {arm: {'zh': zh}}})
    row = next(line for line in section.splitlines() if line.startswith(f'| {arm} | zh |'))
    assert row == f'| {arm} | zh | 2 | 1/1 [0.21, 1.00] | 0/1 [0.00, 0.79] | 1/1 [0.21, 1.00] | 0/2 [0.00, 0.66] |'
    assert 'per language' not in report.readme_results({**summary, 'per_language': {}})


def test_one_generated_section_never_touches_another(tmp_path):
    readme = tmp_path / 'README.md'
    readme.write_text('intro\n<!-- results:begin — a -->\nold results\n<!-- results:end -->\nprose between\n'
                      '<!-- ablation:begin — b -->\nold table\n<!-- ablation:end -->\nend\n')
    assert report.replace_section(readme, '<!-- ablation:begin — b -->', '<!-- ablation:end -->', 'new table\n')
    assert readme.read_text() == ('intro\n<!-- results:begin — a -->\nold results\n<!-- results:end -->\nprose between\n'
                                  '<!-- ablation:begin — b -->\nnew table\n<!-- ablation:end -->\nend\n')
    with pytest.raises(ValueError, match='no section'):
        report.replace_section(readme, '<!-- other:begin — c -->', '<!-- other:end -->', 'x')


def test_a_section_is_found_by_its_key_and_added_under_a_title_when_missing(tmp_path):
    doc = tmp_path / 'results.md'
    doc.write_text('# Results\n\n<!-- results:begin — from results/a-run.json -->\nA\n<!-- results:end -->\n'
                   '<!-- results:begin — from results/b-run.json -->\nB\n<!-- results:end -->\n')
    assert report.replace_section(doc, '<!-- results:begin — from results/b-run.json -->', '<!-- results:end -->',
                                  'B2\n', key='results/b-run.json')
    assert doc.read_text().count('\nA\n') == 1 and '\nB2\n' in doc.read_text() and '\nB\n' not in doc.read_text()
    assert report.replace_section(doc, '<!-- results:begin — from results/c-run.json -->', '<!-- results:end -->',
                                  'C\n', key='results/c-run.json', title='The run of c')
    assert doc.read_text().endswith('## The run of c\n\n<!-- results:begin — from results/c-run.json -->\nC\n'
                                    '<!-- results:end -->\n')
    with pytest.raises(ValueError, match='no section'):  # without a title a missing section is an error
        report.replace_section(doc, '<!-- results:begin — d -->', '<!-- results:end -->', 'D\n', key='d-run')


def test_the_headline_counts_call_loops_when_the_summary_has_them():
    summary = json.loads(SUMMARY.read_text())
    arms = summary['arms']
    text = report.headline(summary, SUMMARY)
    row = next(line for line in text.splitlines() if line.startswith(f'| {report.LOOPS} |'))
    assert row.count('|') == len(arms) + 2
    first = next(iter(arms.values()))
    assert f"({first['n_stopped']}/{first['n_cases']})" in row
    older = {**summary, 'arms': {k: {f: v for f, v in a.items() if f != 'n_stopped'} for k, a in arms.items()}}
    assert report.LOOPS not in report.headline(older, SUMMARY)  # a summary made before loops were kept

