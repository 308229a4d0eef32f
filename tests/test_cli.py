import json
import subprocess
import sys

from helpers.agentfabric import EvalCase

CASE = {'id': 'c1', 'lang': 'zh', 'instruction': '你是天气助手',
        'tools': [{'name': 'amap_weather', 'description': '获取天气',
                   'parameters': [{'name': 'location', 'type': 'string', 'description': '地点', 'required': True}]}],
        'query': '朝阳区天气怎样？', 'expected_call': {'name': 'amap_weather', 'arguments': {'location': '朝阳区'}},
        'observation': '晴', 'reference_answer': '晴天'}


def run(*args):
    return subprocess.run([sys.executable, '-m', 'helpers', *args], capture_output=True, text=True, timeout=120)


def test_prompt_prints_only_the_messages_json(tmp_path):
    path = tmp_path / 'case.json'
    path.write_text(json.dumps(CASE, ensure_ascii=False))
    res = run('prompt', '--case', str(path))
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout) == EvalCase.from_dict(CASE).messages()
    out = 'Action: amap_weather\nAction Input: {"location": "朝阳区"}\n'
    res = run('prompt', '--case', str(path), '--model-output', out, '--observation', '多云')
    msgs = json.loads(res.stdout)
    assert msgs[-1]['content'].endswith(out + '\nObservation: <result>多云</result>\nAnswer:')


def test_prompt_rejects_bad_input(tmp_path):
    path = tmp_path / 'case.json'
    path.write_text(json.dumps({**CASE, 'lang': 'de'}))
    res = run('prompt', '--case', str(path))
    assert res.returncode == 2 and res.stdout == '' and 'lang' in res.stderr
    path.write_text(json.dumps(CASE))
    res = run('prompt', '--case', str(path), '--model-output', 'x')
    assert res.returncode == 2 and 'together' in res.stderr
    assert run('prompt', '--case', str(tmp_path / 'missing.json')).returncode == 2
