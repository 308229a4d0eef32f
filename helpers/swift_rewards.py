"""ms-swift reward plugin (``--external_plugins helpers/swift_rewards.py --reward_funcs aft_judge``): the judge of
notebook 05 as a GRPO reward, so that reinforcement learning pays exactly for what the evaluation counts as right.

A completion earns 1.0 when :func:`helpers.judge.judge` finds it right for its turn — the expected call with the
expected arguments, or no call where none is needed (a reward that paid only for calls would teach the model to
call tools on every question) — and 0.0 otherwise: no partial credit for a call with a changed value. ms-swift
passes every extra column of the dataset to the reward: ``expected_call`` (the call as JSON, empty when none is
needed) and ``offered_tools`` (the offered tools as JSON, whose declared types the judge checks; not ``tools``,
which ms-swift reads as function-calling tools to render into the prompt); rows are written by
:func:`helpers.preference.grpo_rows`.
"""
import json

from swift.rewards import ORM, orms

from helpers.agentfabric import Tool
from helpers.judge import judge


class JudgeReward(ORM):

    def __call__(self, completions, expected_call=None, offered_tools=None, **kwargs) -> list[float]:
        rewards = []
        for i, completion in enumerate(completions):
            expected = json.loads(expected_call[i]) if expected_call and expected_call[i] else None
            offered = [Tool.from_dict(t) for t in json.loads(offered_tools[i])] if offered_tools and offered_tools[i] \
                else ()
            rewards.append(1.0 if judge(expected, completion or '', tools=offered).kind == 'ok' else 0.0)
        return rewards


orms['aft_judge'] = JudgeReward
