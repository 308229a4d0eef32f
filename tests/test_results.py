"""The README's results come from a committed run summary, and a summary comes from a run's own files."""
import json
import re
import shutil

import pytest

from helpers import report
from helpers.environment import repo_root

ROOT = repo_root()
SUMMARY = ROOT / 'results' / 'cpu-run.json'


def readme_section(text: str) -> str:
    m = re.search(r'<!-- results:begin[^\n]*-->\n(.*?)<!-- results:end -->', text, re.S)
    assert m, 'README.md has no generated results section'
    return m.group(1)


def test_the_readme_results_are_the_committed_summary():
    readme = (ROOT / 'README.md').read_text()
    assert 'from results/cpu-run.json; do not edit' in readme
    assert readme_section(readme) == report.readme_results(json.loads(SUMMARY.read_text())), \
        'regenerate it: python -m helpers results --readme'


def test_a_summary_is_made_from_a_run_and_rewrites_the_readme(tiny_run, tmp_path):
    run_dir, _ = tiny_run
    summary = report.results_summary(run_dir, 'notebooks 00-05 by hand')
    metrics = json.loads((run_dir / 'eval' / 'metrics.json').read_text())
    assert set(summary['arms']) == set(metrics['models']) and summary['baseline'] == metrics['baseline']
    for arm, m in summary['arms'].items():
        assert m['counts'] == metrics['models'][arm]['counts'] and m['n_cases'] == metrics['n_cases']
    assert summary['command'] == 'notebooks 00-05 by hand' and summary['commit']
    assert summary['training']['steps'] == json.loads((run_dir / 'run_summary.json').read_text())['steps']
    path = tmp_path / 'tiny-run.json'
    path.write_text(json.dumps(summary))
    readme = tmp_path / 'README.md'
    shutil.copy(ROOT / 'README.md', readme)
    assert report.update_readme(path, readme) is True
    section = readme_section(readme.read_text())
    assert section == report.readme_results(summary) and '| tool selection ↑ |' in section
    assert report.update_readme(path, readme) is False  # a second time changes nothing
    link = tmp_path / 'latest-tiny'
    link.symlink_to(run_dir)
    assert report.results_summary(link, 'x')['note'] == f'measured run {run_dir.resolve().name}'


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
