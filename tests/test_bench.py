"""The conversion bench: the guide's script is found in a seed document and timed next to ``helpers convert``.

The seed documents are not part of the repository, so these tests write a stand-in document of their own.
"""
import json

from helpers.bench import GUIDE_SEEDS_ENV, bench_convert, find_guide_script, run_guide_script

STAND_IN = '''# A guide

Some prose, then an unrelated block:

```python
print('not the conversion')
```

```python
import json
def _process_system(text):
    return text.upper()
src = 'data/in.jsonl'
with open(src, 'r', encoding='utf-8') as f, open('converted.jsonl', 'w', encoding='utf-8') as out:
    for line in f:
        obj = json.loads(line)
        obj['conversations'][0]['value'] = _process_system(obj['conversations'][0]['value'])
        out.write(json.dumps(obj, ensure_ascii=False) + '\\n')
```
'''


def test_the_script_is_found_in_a_document_or_its_folder(tmp_path, monkeypatch):
    doc = tmp_path / 'seeds' / 'guide.txt'
    doc.parent.mkdir()
    (doc.parent / 'other.md').write_text('```python\nprint(1)\n```\n')
    doc.write_text(STAND_IN)
    for where in (doc, doc.parent):
        script = find_guide_script(where)
        assert script.source == doc and script.code.startswith('import json\ndef _process_system(')
        assert (script.input_path, script.output_path) == ('data/in.jsonl', 'converted.jsonl')
    monkeypatch.setenv(GUIDE_SEEDS_ENV, str(doc))
    assert find_guide_script().source == doc
    assert find_guide_script(tmp_path / 'missing') is None and find_guide_script(doc.parent / 'other.md') is None


def test_the_script_runs_on_a_copy_and_is_timed_next_to_ours(tmp_path, monkeypatch):
    doc = tmp_path / 'guide.txt'
    doc.write_text(STAND_IN)
    raw = tmp_path / 'raw.jsonl'
    text = json.dumps({'conversations': [{'from': 'system', 'value': 'sys'}]}) + '\n'
    raw.write_text(text, encoding='utf-8')
    secs, lines = run_guide_script(find_guide_script(doc), raw, tmp_path)
    assert secs > 0 and lines == 1 and raw.read_text(encoding='utf-8') == text  # the input itself is untouched
    assert not list(tmp_path.glob('guide-*'))  # its folder is removed

    monkeypatch.setenv(GUIDE_SEEDS_ENV, str(doc))
    (tmp_path / 'with').mkdir()
    rows = bench_convert(tmp_path / 'with', n=20, runs=1)
    ours = {r['converter']: r for r in rows}
    assert ours['helpers convert --to messages']['records'] == 20 and ours["the guide's script"]['samples'] == 20
    assert ours['helpers convert --to messages']['vs guide'] > 0 and ours["the guide's script"]['vs guide'] == 1.0

    monkeypatch.setenv(GUIDE_SEEDS_ENV, str(tmp_path / 'nowhere'))
    (tmp_path / 'without').mkdir()
    rows = bench_convert(tmp_path / 'without', n=5, runs=1)
    assert rows[-1]['note'].startswith('not run: no seed document') and GUIDE_SEEDS_ENV in rows[-1]['note']
    assert rows[0]['vs guide'] == '' and rows[0]['records'] == 5
