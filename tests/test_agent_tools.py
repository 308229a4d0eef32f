"""The offline tools of an evaluation case: the expected tool returns the case's recorded observation, any other
tool it offers answers with an error through RolePlay's own failure observation, and scoring is unchanged."""
import pytest

from helpers.agent_tools import ToolRefused, case_runners, llm_config, run_case
from helpers.agentfabric import EvalCase, format_call
from helpers.evaluation import evaluate, load_predictions, score
from helpers.scripted_server import ScriptedServer

CALORIES = '{"portion_g": 80, "calories": 326}'
TOOLS = [{'name': 'calorie_lookup', 'description': 'Calories of a food.',
          'parameters': [{'name': 'food', 'type': 'string', 'description': 'food', 'required': True}]},
         {'name': 'unit_convert', 'description': 'Convert a value between units.',
          'parameters': [{'name': 'value', 'type': 'number', 'description': 'value', 'required': True},
                         {'name': 'from_unit', 'type': 'string', 'description': 'from', 'required': True},
                         {'name': 'to_unit', 'type': 'string', 'description': 'to', 'required': True}]}]
CONVERT = {'value': 80, 'from_unit': 'kg', 'to_unit': 'celsius'}


def case(cid='a', call=None, lang='en'):
    return EvalCase.from_dict({'id': cid, 'lang': lang, 'instruction': 'a nutrition helper', 'tools': TOOLS,
                               'query': 'How many calories are in 80 g of braised pork?', 'expected_call': call,
                               'observation': CALORIES, 'reference_answer': 'About 326 kcal.'})


EXPECTED = {'name': 'calorie_lookup', 'arguments': {'food': 'braised pork'}}


def test_only_the_expected_tool_returns_the_recorded_observation():
    runners = case_runners(case(call=EXPECTED))
    assert runners['calorie_lookup']({'food': 'anything'}) == CALORIES
    with pytest.raises(ToolRefused, match='unit_convert is not the tool this case expects \\(calorie_lookup\\)'):
        runners['unit_convert'](CONVERT)
    no_call = case_runners(case(call=None))  # a question that needs no tool: every tool refuses
    for name in ('calorie_lookup', 'unit_convert'):
        with pytest.raises(ToolRefused, match=f'needs no tool.*{name}'):
            no_call[name]({})


@pytest.mark.parametrize('lang', ['en', 'zh'])
def test_an_unexpected_tool_answers_with_an_error_inside_roleplay(lang):
    """The model calls a tool the case offers but does not expect: RolePlay shows a failure, never the calorie data
    under the unit converter's name; the call is still recorded with its arguments."""
    replies = [format_call('unit_convert', CONVERT), 'Sorry, I could not convert that.']
    with ScriptedServer(replies) as srv:
        turn = run_case(case(call=EXPECTED, lang=lang), llm_config(srv.base_url, 'scripted'))
        second = srv.chat_requests()[1]['messages'][-1]['content']
    assert 'failed to call' in second and 'not the tool this case expects' in second and CALORIES not in second
    assert CALORIES not in turn.text and 'not the tool this case expects' in turn.text
    assert [(c.name, c.arguments) for c in turn.calls] == [('unit_convert', CONVERT)]
    assert turn.calls[0].observation.startswith('error: unit_convert is not the tool')


def test_arguments_the_tool_rejects_are_recorded_with_the_reason():
    """A call without a required parameter never reaches the tool: RolePlay shows the model its failure, and the
    record says why instead of an empty result."""
    replies = [format_call('calorie_lookup', {'grams': 80}), 'Sorry.']
    with ScriptedServer(replies) as srv:
        turn = run_case(case(call=EXPECTED), llm_config(srv.base_url, 'scripted'))
        second = srv.chat_requests()[1]['messages'][-1]['content']
    assert 'failed to call' in second and CALORIES not in second
    (call,) = turn.calls
    assert call.arguments is None and call.observation.startswith('error: the arguments were rejected (')


def test_the_expected_tool_still_gets_its_observation_and_scoring_is_unchanged(tmp_path):
    """Metrics score the first output: an unexpected tool's error changes what follows it, not the score."""
    cases = [case('right', EXPECTED), case('wrong', EXPECTED), case('none', None)]
    script = {'right': format_call('calorie_lookup', EXPECTED['arguments']),
              'wrong': format_call('unit_convert', CONVERT), 'none': format_call('unit_convert', CONVERT)}

    def reply(body):
        user = body['messages'][-1]['content']
        if 'Observation:' in user:
            return 'About 326 kcal.' if CALORIES in user else 'I could not do that.'
        return next(v for k, v in script.items() if f'ID: {k}.' in body['messages'][0]['content'])

    cases = [EvalCase.from_dict({**c.to_dict(), 'instruction': f'a nutrition helper, ID: {c.id}.'}) for c in cases]
    with ScriptedServer(reply) as srv:
        metrics = evaluate(cases, srv.base_url, 'scripted', tmp_path, workers=1, progress=False)
    preds = load_predictions(tmp_path / 'predictions.jsonl')
    assert preds['right']['answer'] == 'About 326 kcal.'  # the expected tool ran with the case's observation
    assert preds['wrong']['calls_executed'][0]['name'] == 'unit_convert'
    assert preds['wrong']['answer'] == 'I could not do that.' and preds['none']['answer'] == 'I could not do that.'
    rescored, _ = score(cases, preds)  # the first outputs decide: one right call, one wrong tool, one false call
    assert metrics['counts']['tool_selection_acc'] == [1, 2] and metrics['counts']['false_positive_rate'] == [1, 1]
    assert rescored['counts'] == metrics['counts']
