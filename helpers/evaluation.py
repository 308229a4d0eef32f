"""Evaluation: run cases through the real RolePlay loop against a server, and score predictions.

:func:`evaluate` runs every case (the evaluation case format of :mod:`helpers.agentfabric`) through
``RolePlay`` with offline tools that return the case's observation, several cases at a time against one
server, and writes ``predictions.jsonl`` and ``metrics.json``. :func:`score` computes the metrics for any
predictions, so runs can be rescored and compared. Whether a call is right is decided by the judge
(:func:`helpers.judge.judge`, its definitions in :mod:`helpers.judge`), the same one preference pairs and
rewards use. :data:`METRICS` defines every metric with its denominator and direction (notebook 05 prints
them). Definitions (exactly these):

* the call is the first match of RolePlay's ``Action: (.+)\\nAction Input: (.+)`` in ``output``; its Action
  Input is read strictly (one JSON object: no ``NaN``/``Infinity``, no key twice, no lone surrogate, at most
  64 KB and 32 levels deep);
* ``tool_selection_acc`` — over cases with an ``expected_call``: parsed name == expected name (spaces ignored);
* ``args_exact_acc`` (the headline) — same cases: name right and the arguments equal to the expected ones as
  JSON: exactly the expected keys, each value of the same JSON type and value (objects regardless of key order,
  numbers by value: ``1e16 == 10000000000000000``, but ``"5" != 5`` and ``true != 1``) and of the JSON type the
  AST check requires (``3.0`` is no integer), so it never exceeds ``args_ast_acc``;
* ``args_ast_acc`` — same cases, in the style of the Berkeley Function Calling Leaderboard's AST check: name
  right, Action Input a JSON object, no parameter the tool does not declare, every expected parameter present
  with a matching value, and every parameter the expected call leaves out absent or equal to its declared
  ``default``; an expected optional value equal to its default may also be left out. A value matches when
  it has the parameter's JSON type (BFCL checks types: ``"3"`` is not an integer, ``3.0`` is a number but no
  integer, ``true`` is no number) and is equal: strings ignoring case and surrounding spaces, numbers
  numerically (``200 == 200.0`` for a number parameter), the rest exactly.
  When the expected value itself does not fit the declared type (data converted without types), its own JSON
  type is required instead;
* ``args_f1`` — micro F1 over ``(key, value)`` pairs, predicted vs expected, over those cases, a pair matching
  when its value is equal as in ``args_exact_acc`` (no JSON object: no predicted pairs);
* ``false_positive_rate`` — over cases whose ``expected_call`` is null: share with a parsed call;
  ``irrelevance_detection`` — BFCL's name for the other side: 1 − ``false_positive_rate`` (share of those
  cases answered without a call);
* ``invalid_call_rate`` — over cases with a parsed call: share whose Action Input is not a JSON object;
* ``answer_rouge_l`` — mean ROUGE-L F1 of ``answer`` vs ``reference_answer`` over cases with a reference
  (a missing, null or blank reference leaves the case out): characters as tokens when either text has CJK
  characters, else lower-cased whitespace tokens; an empty answer scores 0. **Bound:** each text is cut to
  its first :data:`ROUGE_MAX_CHARS` (10,000) characters before tokenizing, and the longest common
  subsequence is computed bit-parallel, so even two texts at the bound score in well under a second
  (a 5 MB answer costs no more than a 10,000-character one).

Every case gets one call outcome (:data:`OUTCOMES`: right call, wrong tool, no call, …) and, apart from it,
whether its final answer is *weak* (ROUGE-L below ``summary_threshold`` after a right call or a right
no-call), so the outcome counts add up to the rates. A call that names the right tool with wrong arguments
gets one or more :data:`ARG_ERRORS` kinds (``CaseScore.arg_errors``: a required or a stated optional parameter
left out, an optional one nobody asked for, one the tool does not declare, a value of the wrong type, a changed
value). :func:`verdict` says the same in words for any shown output, and :func:`conclusion` writes what a
comparison of arms shows, from their numbers.

Scoring files (:func:`score_files`) refuses, by default, a case id or prediction id that appears twice
and a prediction whose id is not a case: each would silently change the metrics. Allowed explicitly, the
first of each id counts, and the output says how many were set aside.

:func:`breakdown` gives the metrics per group (:func:`per_language` per case language).

Before the first case, :func:`evaluate` checks that the server answers ``GET /models`` within a few
seconds (:class:`ServerUnavailable` otherwise); a server that answers but fails a few completions in a row
stops the run within seconds (:class:`ServerFailing`, naming the status and the server's log). Every case gets
a prediction row whatever the model emitted (text JSON or UTF-8 cannot hold is escaped, see :func:`evaluate`),
and a reply longer than 32,768 characters is cut (``n_outputs_cut``). Rates come with their count and a
Wilson 95% interval.
A model that keeps calling tools after the observation is stopped after ``max_llm_calls`` requests in a
case (RolePlay itself allows 10), which bounds the cost of a run; such cases are counted in ``n_stopped``.
New tokens per request are capped too: by default (:func:`reply_budget`) at what the longest expected call of
the cases takes in the served model's tokenizer plus a margin, so the cap never cuts a right call; a smaller
explicit cap is kept, with a warning naming the cases it makes impossible to get right.
"""
from __future__ import annotations

import json
import math
import time
import urllib.error
import urllib.request
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

from .agentfabric import DuplicateIdError, EvalCase, format_call, has_chinese, load_cases, parse_action
from .judge import ARG_ERRORS, OUTCOMES, judge, verdict  # noqa: F401  (verdict: the notebooks' evaluation.verdict)
from .jsonl import JsonlError, read_jsonl, storable, write_json, write_jsonl

ROUGE_MAX_CHARS = 10_000  # of each text, before tokenizing
HEALTH_TIMEOUT = 5.0  # seconds the server has to answer GET /models
MIN_REPLY_TOKENS, REPLY_MARGIN = 64, 16  # reply_budget: its floor, and tokens beyond the longest expected call


class ServerUnavailable(RuntimeError):
    """No OpenAI-compatible server answers at the base URL."""


class ServerFailing(RuntimeError):
    """The server answers, but fails its completions (HTTP errors, bodies that are no completion): the run stops."""


class UnknownIdError(ValueError):
    """A prediction whose id is not among the cases."""

@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    higher_is_better: bool
    definition: str
    denominator: str  # what the rate counts over; for a mean, what it averages over
    proportion: bool = True  # k of n, with a Wilson interval; False for F1 and mean ROUGE-L
    mirrors: str = ''  # the metric this one is 1 − of (the same finding, not counted twice)

    @property
    def arrow(self) -> str:
        return '↑' if self.higher_is_better else '↓'

    @property
    def heading(self) -> str:
        """The metric's name in a table: its label and which way is better (``false calls ↓``)."""
        return f'{self.label} {self.arrow}'


# The models a run evaluates: their role in serve/model.json and eval/<role>/ -> the arm's name in tables.
ARM_NAMES = {'base': 'base', 'ms_agent': 'trained on ms_agent prompts', 'early': 'finetuned, as few steps',
             'finetuned': 'finetuned', 'preference': 'finetuned + preference'}

METRICS = {m.key: m for m in (
    Metric('tool_selection_acc', 'tool selection', True, 'the first call names the expected tool',
           'cases that need a call'),
    Metric('args_exact_acc', 'arguments exact', True, 'right tool, and the Action Input is a JSON object with '
           'exactly the expected keys, each value equal as JSON (same type and value, numbers by value) and of the '
           'type the AST check requires', 'cases that need a call'),
    Metric('args_ast_acc', 'arguments, BFCL AST check', True, 'right tool; required parameters present, no unknown '
           'ones, optional ones absent or at their declared default; strings compared ignoring case and surrounding '
           'spaces, numbers numerically, JSON types strict', 'cases that need a call'),
    Metric('args_f1', 'arguments F1', True, 'micro F1 of (key, value) pairs, called vs expected, values equal as '
           'for arguments exact (no JSON object: no pairs called)',
           'the expected argument pairs of the cases that need a call', proportion=False),
    Metric('false_positive_rate', 'false calls', False, 'a tool is called although the question needs none',
           'cases that need no call'),
    Metric('irrelevance_detection', 'irrelevance detection (BFCL)', True, '1 − false calls: no tool is called when the '
           'question needs none', 'cases that need no call', mirrors='false_positive_rate'),
    Metric('invalid_call_rate', 'invalid Action Input', False, 'the Action Input is not a JSON object',
           'cases where the model called a tool'),
    Metric('answer_rouge_l', 'answer ROUGE-L', True, 'mean ROUGE-L F1 of the final answer against the reference',
           'cases with a reference answer', proportion=False),
    Metric('weak_answer_rate', 'weak answers', False, 'final answer with ROUGE-L below 0.2 although the call '
           '(or the decision not to call) was right', 'right calls and right no-calls with a reference answer'),
)}


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float] | None:
    """Wilson score interval for k successes out of n."""
    if n == 0:
        return None
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return round(max(0.0, centre - half), 4), round(min(1.0, centre + half), 4)


def _tokens(text: str, cjk: bool) -> list[str]:
    return [c for c in text if not c.isspace()] if cjk else text.lower().split()


def lcs_length(a: list[str], b: list[str]) -> int:
    """Length of the longest common subsequence, bit-parallel over ``b`` (Allison–Dix / Crochemore et al.):
    one pass over ``a`` with big-integer operations on ``len(b)`` bits."""
    masks: dict[str, int] = {}
    for j, y in enumerate(b):
        masks[y] = masks.get(y, 0) | 1 << j
    full = (1 << len(b)) - 1
    row = full
    for x in a:
        match = row & masks.get(x, 0)
        row = ((row + match) | (row - match)) & full
    return len(b) - row.bit_count()


def rouge_l(answer: str, reference: str) -> float:
    """ROUGE-L F1 (β = 1) on characters when either text has CJK characters, else on lower-cased words;
    each text is cut to its first :data:`ROUGE_MAX_CHARS` characters."""
    answer, reference = answer[:ROUGE_MAX_CHARS], reference[:ROUGE_MAX_CHARS]
    if not answer.strip() or not reference.strip():
        return 0.0
    cjk = has_chinese(answer) or has_chinese(reference)
    a, r = _tokens(answer, cjk), _tokens(reference, cjk)
    if not a or not r:
        return 0.0
    lcs = lcs_length(a, r)
    if lcs == 0:
        return 0.0
    p, rec = lcs / len(a), lcs / len(r)
    return 2 * p * rec / (p + rec)


@dataclass
class CaseScore:
    """How one prediction fared against its case: the judge's decision (:class:`helpers.judge.Judgement`) in
    flat fields, and the answer's ROUGE-L."""
    id: str
    expected: str | None  # expected tool name
    predicted: str | None  # parsed action name (stripped)
    args: dict | None  # parsed Action Input when it is a JSON object
    selection: bool | None  # None when no call is expected
    exact: bool | None
    ast: bool | None  # the args_ast_acc check; None when no call is expected
    false_call: bool | None  # None when a call is expected
    invalid: bool | None  # None when no call was parsed
    rouge: float | None
    kind: str  # the call outcome, a key of OUTCOMES
    weak_answer: bool | None = None  # ROUGE-L below the threshold after a right outcome; None otherwise
    raw_args: str | None = None  # the Action Input as written; None when no call was parsed
    arg_errors: tuple[str, ...] = ()  # ARG_ERRORS kinds of a right-tool call that is not exact
    pairs: tuple[int, int, int] = (0, 0, 0)  # argument pairs matched, extra, missing (args_f1)


def score_case(case: EvalCase, pred: dict, summary_threshold: float = 0.2) -> CaseScore:
    """One prediction row against its case: :func:`helpers.judge.judge` on its first output, ROUGE-L on its
    answer."""
    exp = case.expected_call
    j = judge(exp, pred.get('output') or '', pred.get('error'), case.tools)
    rouge = rouge_l(pred.get('answer') or '', case.reference_answer) if case.reference_answer.strip() else None
    weak = (rouge < summary_threshold) if j.kind == 'ok' and rouge is not None else None
    return CaseScore(case.id, exp['name'] if exp else None, j.name, j.arguments, j.selection, j.exact, j.ast,
                     j.false_call, j.invalid, rouge, j.kind, weak, j.call.action_input if j.call else None,
                     j.arg_errors, j.pairs)


def aggregate(cases: list[EvalCase], scores: list[CaseScore]) -> dict:
    """The metrics of the module docstring, plus counts and Wilson intervals of the rates."""
    with_call = [(c, s) for c, s in zip(cases, scores) if c.expected_call is not None]
    without = [s for c, s in zip(cases, scores) if c.expected_call is None]
    parsed = [s for s in scores if s.invalid is not None]
    tp, fp, fn = (sum(s.pairs[i] for _, s in with_call) for i in range(3))
    false_calls = sum(s.false_call for s in without)
    counts = {
        'tool_selection_acc': (sum(s.selection for _, s in with_call), len(with_call)),
        'args_exact_acc': (sum(s.exact for _, s in with_call), len(with_call)),
        'args_ast_acc': (sum(s.ast for _, s in with_call), len(with_call)),
        'false_positive_rate': (false_calls, len(without)),
        'irrelevance_detection': (len(without) - false_calls, len(without)),
        'invalid_call_rate': (sum(s.invalid for s in parsed), len(parsed)),
        'weak_answer_rate': (sum(bool(s.weak_answer) for s in scores),
                             sum(s.weak_answer is not None for s in scores)),
    }
    metrics: dict = {k: (round(k_ / n, 4) if n else None) for k, (k_, n) in counts.items()}
    prec = tp / (tp + fp) if tp + fp else 0.0
    rec = tp / (tp + fn) if tp + fn else 0.0
    metrics['args_f1'] = None if tp + fp + fn == 0 else round(2 * prec * rec / (prec + rec), 4) if tp else 0.0
    rouges = [s.rouge for s in scores if s.rouge is not None]
    metrics['answer_rouge_l'] = round(sum(rouges) / len(rouges), 4) if rouges else None
    metrics.update(n_cases=len(cases), n_with_call=len(with_call), n_without_call=len(without))
    metrics['counts'] = {k: list(v) for k, v in counts.items()}
    metrics['ci95'] = {k: wilson(*v) for k, v in counts.items()}
    return metrics


def _prediction_rows(path: str | Path) -> Iterator[tuple[int, str, dict]]:
    """``(line, id, row)`` for every prediction; a row that is not one raises ValueError naming the line."""
    for n, row in read_jsonl(path):
        where = f'{path}:{n}'
        if not isinstance(row, dict) or 'id' not in row:
            raise ValueError(f'{where}: not a prediction row (a JSON object with an "id"); fix or remove that line')
        if not isinstance(row['id'], (str, int)) or isinstance(row['id'], bool):
            raise ValueError(f'{where}: the prediction "id" must be a string or an integer')
        for key in ('output', 'answer'):
            if row.get(key) is not None and not isinstance(row[key], str):
                raise ValueError(f'{where}: "{key}" must be a string or null, got {type(row[key]).__name__}')
        yield n, str(row['id']), row


def _first_of_each(rows: Iterable[tuple[int, str, dict]], path, allow_duplicates: bool) -> tuple[dict, int]:
    """Predictions by id (the first of each) and how many repeats were set aside."""
    preds: dict[str, dict] = {}
    lines: dict[str, int] = {}
    repeats = 0
    for n, pid, row in rows:
        if pid in preds:
            if not allow_duplicates:
                raise DuplicateIdError(f'{path}:{n}: prediction id {pid!r} repeats line {lines[pid]}; '
                                       'keep one prediction per case')
            repeats += 1
            continue
        preds[pid], lines[pid] = row, n
    return preds, repeats


def load_predictions(path: str | Path, allow_duplicates: bool = False) -> dict[str, dict]:
    """Predictions by id; a repeated id is a ValueError unless ``allow_duplicates`` (the first counts)."""
    try:
        return _first_of_each(_prediction_rows(path), path, allow_duplicates)[0]
    except JsonlError as e:
        raise ValueError(str(e)) from None


def score(cases: list[EvalCase], predictions: dict[str, dict]) -> tuple[dict, list[CaseScore]]:
    """Metrics for ``predictions`` (by id); a case without a prediction counts as an empty output."""
    missing = [c.id for c in cases if c.id not in predictions]
    scores = [score_case(c, predictions.get(c.id, {'id': c.id, 'output': '', 'answer': '',
                                                  'error': 'no prediction'})) for c in cases]
    metrics = aggregate(cases, scores)
    metrics['n_missing_predictions'] = len(missing)
    metrics['n_errors'] = sum(s.kind == 'error' for s in scores)
    return metrics, scores


def breakdown(cases: list[EvalCase], scores: list[CaseScore], key) -> dict[str, dict]:
    """Metrics per group, ``key(case) -> label`` (e.g. expected tool, language, holdout)."""
    groups: dict[str, list[int]] = defaultdict(list)
    for i, c in enumerate(cases):
        groups[str(key(c))].append(i)
    return {g: aggregate([cases[i] for i in idx], [scores[i] for i in idx]) for g, idx in sorted(groups.items())}


def per_language(cases: list[EvalCase], scores: list[CaseScore]) -> dict[str, dict]:
    """Metrics per case language (``zh``, ``en``), with their counts and intervals."""
    return breakdown(cases, scores, lambda c: c.lang)


def predict_case(case: EvalCase, llm: dict, max_tokens: int, max_llm_calls: int = 4, guard=None) -> dict:
    """One case through RolePlay: the raw first output, the final answer, the calls that really ran.

    A model that keeps calling tools is stopped after ``max_llm_calls`` requests (RolePlay would go on
    to 10): the case keeps what it produced and is marked ``stopped``. Completions go through ``guard``
    (:class:`helpers.agent_tools.ServerGuard`, shared by the run): ``n_cut`` counts the outputs it cut.
    """
    from .agent_tools import LoopLimit, case_turn, completion_failure
    start = time.time()
    row = {'id': case.id, 'output': '', 'answer': '', 'call': None, 'calls_executed': [], 'error': None,
           'stopped': None}
    turn = None
    try:
        turn, chunks = case_turn(case, llm, max_llm_calls=max_llm_calls, guard=guard, max_tokens=max_tokens,
                                 temperature=0)
        for _ in chunks:
            pass
    except LoopLimit as e:
        row['stopped'] = str(e)
    except Exception as e:  # a failing case is recorded, the run goes on
        failed = completion_failure(e)
        row['error'] = (f'completion failed: {failed}' if failed else f'{type(e).__name__}: {e}')[:500]
    if turn is not None:
        outputs = [o for o in turn.outputs if o] or turn.outputs
        row['output'] = turn.outputs[0] if turn.outputs else ''
        row['answer'] = outputs[-1].strip() if outputs else ''
        row['n_llm_calls'] = len(turn.outputs)
        row['n_cut'] = turn.n_cut
        row['calls_executed'] = [{'name': c.name, 'arguments': c.action_input, 'parsed': c.arguments,
                                  'observation': None if c.observation is None else str(c.observation)[:2000]}
                                 for c in turn.calls]
    call = parse_action(row['output'])
    if call:
        row['call'] = {'name': call.name, 'arguments': call.action_input}
    row['latency_s'] = round(time.time() - start, 2)
    return row


def check_server(base_url: str, timeout: float = HEALTH_TIMEOUT) -> None:
    """Raise :class:`ServerUnavailable` unless ``GET {base_url}/models`` answers within ``timeout`` seconds
    (ValueError for a base URL that is not http:// or https://)."""
    from .environment import check_base_url
    check_base_url(base_url)
    url = f'{base_url.rstrip("/")}/models'
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            r.read(2 ** 16)
        return
    except urllib.error.HTTPError as e:
        reason = f'HTTP {e.code}'
    except (urllib.error.URLError, OSError, ValueError) as e:  # refused, timed out, not a URL
        reason = str(getattr(e, 'reason', e))
    raise ServerUnavailable(f'no server answers GET {url} ({reason}); start the model server (notebook 03 '
                            'serves one) or fix the base URL')


def evaluate(cases: list[EvalCase], base_url: str, model: str, out_dir: str | Path, workers: int = 8,
             max_tokens: int = 96, progress: bool = True, max_llm_calls: int = 4,
             server_log: str | Path | None = None) -> dict:
    """Run all cases against ``base_url`` (one server, ``workers`` at a time); write predictions and metrics
    (atomically). Raises :class:`ServerUnavailable` within seconds when no server answers, and
    :class:`ServerFailing` (writing nothing) as soon as the server fails a few completions in a row
    (``server_log``: its log, named in the message).

    Every case gets a prediction row whatever the model emitted: what JSON or UTF-8 cannot hold is made
    storable first (:func:`helpers.jsonl.storable`: lone surrogates escaped as ``\\udXXXX``, ``NaN`` named),
    and the metrics are computed from the rows as written, so rescoring ``predictions.jsonl`` gives them
    again; such an Action Input is an invalid call. A reply longer than
    :data:`helpers.agent_tools.MAX_REPLY_CHARS` is cut there; ``n_outputs_cut`` counts the cut outputs.
    """
    for name, value in (('workers', workers), ('max_tokens', max_tokens), ('max_llm_calls', max_llm_calls)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f'{name} must be a whole number of at least 1, got {value!r}')
    ids = [c.id for c in cases]
    if len(set(ids)) != len(ids):
        raise ValueError('case ids must be unique: predictions are matched to cases by id')
    check_server(base_url)
    from .agent_tools import MAX_REPLY_CHARS, ServerGuard, llm_config, modelscope_agent
    modelscope_agent()  # import once here, before the worker threads start
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    llm = llm_config(base_url, model, stream=False)  # whole replies: less client work, same requests
    guard = ServerGuard()
    rows: dict[str, dict] = {}
    start = time.time()
    countdown = None
    if progress:  # a few plain lines (every quarter of the cases or two minutes), not a bar redrawn per case
        from .narrate import Countdown
        countdown = Countdown(f'evaluating {model}', len(cases), 'cases', step=0.25, every=120)
    pool = ThreadPoolExecutor(max_workers=workers)
    try:
        futures = {pool.submit(predict_case, c, llm, max_tokens, max_llm_calls, guard): c.id for c in cases}
        for fut in as_completed(futures):
            rows[futures[fut]] = fut.result()
            if guard.failing:
                break
            if countdown:
                countdown.update(len(rows))
    finally:  # on Ctrl-C or a failing server, cases not yet started are dropped: only those running finish
        pool.shutdown(wait=True, cancel_futures=True)
    if guard.failing:
        log = f'read {server_log}' if server_log else "read the server's log"
        raise ServerFailing(f'the server at {base_url} fails its completions ({guard.failing}); {log}, fix the '
                            'server and run again (nothing was written)')
    wall = time.time() - start
    stored = [storable(rows[c.id]) for c in cases]
    write_jsonl(out / 'predictions.jsonl', stored)
    metrics, _ = score(cases, {row['id']: row for row in stored})
    metrics['n_stopped'] = sum(bool(r.get('stopped')) for r in stored)
    metrics['n_outputs_cut'] = sum(r.get('n_cut') or 0 for r in stored)
    metrics['eval'] = {'model': model, 'wall_seconds': round(wall, 1),
                       'cases_per_second': round(len(cases) / wall, 3) if wall else None,
                       'workers': workers, 'max_tokens': max_tokens, 'max_llm_calls': max_llm_calls,
                       'max_reply_chars': MAX_REPLY_CHARS}
    write_json(out / 'metrics.json', metrics)
    return metrics


def score_files(cases_path: str | Path, predictions_path: str | Path, allow_duplicates: bool = False,
                allow_unknown: bool = False) -> dict:
    """Metrics for a predictions file against a cases file. Repeated ids and predictions for ids that are
    not cases raise ValueError naming the line, unless allowed; allowed, the first of each id counts and
    ``n_duplicate_cases``, ``n_duplicate_predictions`` and ``n_unknown_predictions`` say how many were set aside."""
    all_cases = load_cases(cases_path, allow_duplicates=allow_duplicates)
    if not all_cases:
        raise ValueError(f'{cases_path} holds no cases; give a JSONL file of evaluation cases')
    cases, seen = [], set()
    for c in all_cases:  # the first of each id
        if c.id not in seen:
            seen.add(c.id)
            cases.append(c)
    try:
        preds, repeats = _first_of_each(_prediction_rows(predictions_path), predictions_path, allow_duplicates)
    except JsonlError as e:
        raise ValueError(str(e)) from None
    ids = {c.id for c in cases}
    unknown = [pid for pid in preds if pid not in ids]
    if unknown and not allow_unknown:
        raise UnknownIdError(f'{predictions_path}: {len(unknown)} prediction id(s) are not cases in {cases_path} '
                             f'(first: {unknown[0]!r}); check that the two files belong together')
    metrics, _ = score(cases, {pid: row for pid, row in preds.items() if pid in ids})
    metrics.update(n_duplicate_cases=len(all_cases) - len(cases), n_duplicate_predictions=repeats,
                   n_unknown_predictions=len(unknown))
    return metrics


def failures(cases: list[EvalCase], scores: list[CaseScore], predictions: dict[str, dict],
             kinds: Iterable[str] | None = None) -> list[dict]:
    """Failed cases with what was expected and what came back, grouped by kind."""
    by_id = {c.id: c for c in cases}
    rows = []
    for s in scores:
        if s.kind == 'ok' or (kinds and s.kind not in kinds):
            continue
        c, p = by_id[s.id], predictions.get(s.id, {})
        rows.append({'kind': s.kind, 'id': s.id, 'query': c.query, 'expected': c.expected_call,
                     'output': p.get('output', ''), 'answer': p.get('answer', ''), 'error': p.get('error')})
    return sorted(rows, key=lambda r: r['kind'])


# -- Cached predictions: a model's predictions depend only on what is hashed into their key. ------------------

PROMPT_SOURCES = ('agentfabric.py', 'agent_tools.py')  # the prompt format and the RolePlay loop around it


def content_hash(folder: str | Path) -> str:
    """SHA-256 over a folder's files (relative path and bytes). Remembered per folder in the cache, keyed by
    every file's size and modification time, so an unchanged 500 MB model is not read again."""
    import hashlib
    from .environment import cache_dir
    root = Path(folder).resolve()
    files = sorted(p for p in root.rglob('*') if p.is_file() and p.name != '.complete')
    stats = [[str(p.relative_to(root)), p.stat().st_size, p.stat().st_mtime_ns] for p in files]
    memo = cache_dir() / 'content_hashes' / (hashlib.sha256(str(root).encode()).hexdigest()[:32] + '.json')
    try:
        known = json.loads(memo.read_text())
        if known['stats'] == stats:
            return known['sha256']
    except (OSError, ValueError, KeyError, TypeError):
        pass
    digest = hashlib.sha256()
    for p, (rel, _, _) in zip(files, stats):
        digest.update(rel.encode() + b'\0')
        with open(p, 'rb') as f:
            for block in iter(lambda: f.read(1 << 20), b''):
                digest.update(block)
        digest.update(b'\0')
    memo.parent.mkdir(parents=True, exist_ok=True)
    write_json(memo, {'folder': str(root), 'stats': stats, 'sha256': digest.hexdigest()})
    return digest.hexdigest()


def prediction_key(model_dir: str | Path, cases: list[EvalCase], settings: dict) -> tuple[str, dict]:
    """The cache key of a model's predictions on ``cases``, and what went into it: the model files, the cases,
    the prompt format (this series' rendering and RolePlay loop, the modelscope-agent release) and the
    generation settings (``settings``: backend, precision, token and call limits). Any change gives a new key."""
    import hashlib
    import importlib.metadata as md
    here = Path(__file__).resolve().parent
    sha = lambda data: hashlib.sha256(data).hexdigest()  # noqa: E731
    parts = {
        'model': content_hash(model_dir),
        'cases': sha(json.dumps([c.to_dict() for c in cases], ensure_ascii=False, sort_keys=True).encode()),
        'prompt': sha(b''.join((here / name).read_bytes() for name in PROMPT_SOURCES)),
        'modelscope-agent': md.version('modelscope-agent'),
        'settings': settings,
    }
    return sha(json.dumps(parts, sort_keys=True).encode())[:40], parts


def expected_call_tokens(cases: list[EvalCase], model_dir: str | Path) -> dict[str, int]:
    """Tokens of each expected call, written as the model must write it (``Action: …\nAction Input: …``), in
    the tokenizer of ``model_dir``, by case id (cases that need no call are left out)."""
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    return {c.id: len(tok(format_call(c.expected_call['name'], c.expected_call['arguments']),
                          add_special_tokens=False)['input_ids'])
            for c in cases if c.expected_call}


def reply_budget(cases: list[EvalCase], model_dir: str | Path, max_tokens: int | None = None,
                 log=print) -> int:
    """New tokens per request: ``max_tokens`` as given, or by default the longest expected call of ``cases``
    plus :data:`REPLY_MARGIN`, at least :data:`MIN_REPLY_TOKENS` (a Chinese value costs about two tokens a
    character in some tokenizers: a fixed cap would cut right calls). A given cap shorter than an expected
    call is kept, with a warning naming how many cases it makes impossible to get right."""
    lengths = expected_call_tokens(cases, model_dir)
    longest = max(lengths.values(), default=0)
    if max_tokens is None:
        return max(MIN_REPLY_TOKENS, longest + REPLY_MARGIN)
    if not isinstance(max_tokens, int) or max_tokens < 1:
        raise ValueError(f'max_tokens must be a whole number of at least 1 or None, got {max_tokens!r}')
    cut = sorted(cid for cid, n in lengths.items() if n > max_tokens)
    if cut:
        log(f'warning: max_tokens={max_tokens} is shorter than the expected call of {len(cut)} case(s) '
            f'(longest {longest} tokens, e.g. {cut[0]}): they cannot be answered right; max_tokens=None fits them')
    return max_tokens


def evaluate_model(spec, cases: list[EvalCase], out_dir: str | Path, workers: int | None = None,
                   max_tokens: int | None = None, max_llm_calls: int = 4, use_cache: bool = True,
                   progress: bool = True, log=print, while_served=None) -> dict:
    """Serve ``spec`` (a :class:`serving.ServerSpec`), run ``cases`` through RolePlay against it and stop it;
    with ``use_cache``, predictions made before under the same :func:`prediction_key` are reused without
    starting a server (``metrics['eval']['cached']`` says so), and new ones are stored for next time.
    ``max_tokens``: new tokens per request, :func:`reply_budget` (None: fitted to the longest expected call).
    ``while_served(server)`` runs after the cases while the server is still up (not when the cache answers)."""
    import shutil
    from .environment import cache_dir
    from .serving import Server, package_version
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    max_tokens = reply_budget(cases, spec.model_dir, max_tokens, log)
    settings = {'backend': spec.backend, 'engine': package_version(spec.backend), 'precision': spec.precision,
                'max_model_len': spec.max_model_len, 'max_tokens': max_tokens, 'max_llm_calls': max_llm_calls,
                'temperature': 0}
    key, parts = prediction_key(spec.model_dir, cases, settings) if use_cache else (None, None)
    stored = cache_dir() / 'predictions' / key if key else None
    if stored and (stored / 'predictions.jsonl').exists() and (stored / 'metrics.json').exists():
        shutil.copyfile(stored / 'predictions.jsonl', out / 'predictions.jsonl')
        before = json.loads((stored / 'metrics.json').read_text())
        metrics, _ = score(cases, load_predictions(out / 'predictions.jsonl'))
        metrics['n_stopped'] = before.get('n_stopped')
        metrics['n_outputs_cut'] = before.get('n_outputs_cut')
        metrics['eval'] = {**before['eval'], 'model': spec.served_name, 'cached': True, 'cache_key': key}
        write_json(out / 'metrics.json', metrics)
        log(f'{spec.served_name}: predictions reused from the cache ({stored}); same model files, cases, '
            'prompt format and settings')
        return metrics
    with Server(spec, out / 'server.log') as srv:
        metrics = evaluate(cases, srv.base_url, spec.served_name, out, workers=workers or spec.workers,
                           max_tokens=max_tokens, progress=progress, max_llm_calls=max_llm_calls,
                           server_log=srv.log_path)
        counters = srv.counters()
        if while_served:
            while_served(srv)
    metrics['eval'].update(server_start_seconds=srv.ready_seconds, backend=spec.backend, precision=spec.precision,
                           cached=False, cache_key=key, server=counters)
    write_json(out / 'metrics.json', metrics)
    if stored and not metrics.get('n_errors'):  # a run with failed cases is not worth remembering
        stored.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(out / 'predictions.jsonl', stored / 'predictions.jsonl')
        write_json(stored / 'key.json', parts)
        write_json(stored / 'metrics.json', metrics)
    return metrics


def format_rate(k: int, n: int) -> str:
    """A rate for a table: ``0.67 [0.55, 0.77] (40/60)``; below 10 cases only the count and its interval,
    ``2/3 [0.21, 0.94]`` (a rate on a handful of cases says little); ``–`` without cases."""
    if not n:
        return '–'
    lo, hi = wilson(k, n)
    return f'{k / n:.2f} [{lo:.2f}, {hi:.2f}] ({k}/{n})' if n >= 10 else f'{k}/{n} [{lo:.2f}, {hi:.2f}]'


def metric_cell(metrics: dict, key: str) -> str:
    """One metric of an arm for a table: a rate with its interval and count, or a mean to two decimals."""
    if METRICS[key].proportion:
        k, n = (metrics.get('counts') or {}).get(key, (0, 0))
        return format_rate(k, n)
    v = metrics.get(key)
    return '–' if v is None else f'{v:.2f}'


GROUP_METRICS = ('tool_selection_acc', 'args_exact_acc', 'false_positive_rate')  # notebook 05's per-group tables


def group_column(arm: str, key: str) -> str:
    """The column of metric ``key`` of ``arm`` in a per-group table (:func:`group_rows`)."""
    return f'{arm} · {METRICS[key].heading}'


def group_rows(cases: list[EvalCase], scores: Mapping[str, list[CaseScore]], key) -> dict[str, dict]:
    """Per group (``key(case) -> label``): its number of cases and, for every arm of ``scores``, the cells of
    :data:`GROUP_METRICS`, one row per group."""
    rows: dict[str, dict] = {}
    for arm, arm_scores in scores.items():
        for group, m in breakdown(cases, arm_scores, key).items():
            row = rows.setdefault(group, {'cases': m['n_cases']})
            row.update({group_column(arm, k): metric_cell(m, k) for k in GROUP_METRICS})
    return rows


def difference_rows(comparisons: Mapping[str, list[Change]], baseline: str) -> list[dict]:
    """One table row per arm and metric of ``comparisons`` (arm → :func:`compare` against ``baseline``)."""
    return [{'arm': arm, 'metric': METRICS[c.key].heading, baseline: c.base,
             'arm value': c.value, 'Δ (arm − baseline)': c.delta, '95% interval of Δ': c.interval_text,
             'verdict': c.verdict} for arm, changes in comparisons.items() for c in changes]


def diff_interval(k1: int, n1: int, k2: int, n2: int, z: float = 1.96) -> tuple[float, float] | None:
    """95% interval of p1 − p2 for two proportions (Newcombe's hybrid score method, from the two Wilson
    intervals; it treats the samples as independent, which is cautious for two models on the same cases)."""
    if not (n1 and n2):
        return None
    p1, p2 = k1 / n1, k2 / n2
    (l1, u1), (l2, u2) = wilson(k1, n1, z), wilson(k2, n2, z)
    d = p1 - p2
    return round(d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2), 4), round(d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2), 4)


@dataclass
class Change:
    """One metric of an arm against the baseline arm: delta = arm − baseline, with its interval."""
    key: str
    base: float | None
    value: float | None
    delta: float | None
    interval: tuple[float, float] | None  # None for means (no interval)

    @property
    def verdict(self) -> str:
        """better | worse | unclear (the interval includes 0) | same | n/a; for a mean, which has no interval,
        higher | lower (untested): the cases cannot say whether such a difference is real."""
        if self.delta is None:
            return 'n/a'
        if self.interval is not None and self.interval[0] <= 0 <= self.interval[1]:
            return 'unclear'
        if self.delta == 0:
            return 'same'
        if self.interval is None:
            return f"{'higher' if self.delta > 0 else 'lower'} (untested)"
        return 'better' if (self.delta > 0) == METRICS[self.key].higher_is_better else 'worse'

    @property
    def interval_text(self) -> str:
        """The interval of Δ to three decimals (two would show a bound of +0.003 as +0.00 beside "better")."""
        return f'[{self.interval[0]:+.3f}, {self.interval[1]:+.3f}]' if self.interval else '–'

    def text(self) -> str:
        m = METRICS[self.key]
        if self.delta is None:
            return f'{m.heading}: not measured'
        ci = f' {self.interval_text}' if self.interval else ''
        return f'{m.heading} {self.base:.2f} → {self.value:.2f} (Δ {self.delta:+.2f}{ci})'


def compare(arm: dict, baseline: dict) -> list[Change]:
    """Every metric of ``arm`` against ``baseline`` (metrics as :func:`aggregate` returns them)."""
    out = []
    for key, m in METRICS.items():
        a, b = arm.get(key), baseline.get(key)
        if a is None or b is None:
            out.append(Change(key, b, a, None, None))
            continue
        ci = diff_interval(*arm['counts'][key], *baseline['counts'][key]) if m.proportion else None
        out.append(Change(key, b, a, round(a - b, 4), ci))
    return out


RIGHT_CALL, RIGHT_NO_CALL = f'needs a call: {OUTCOMES["ok"]}', 'needs no call: no call (right)'  # the right outcomes


def outcome_counts(cases: list[EvalCase], scores: list[CaseScore]) -> dict[str, int]:
    """How many cases ended in each call outcome, cases that need a call first, then those that need none,
    then weak answers (counted apart: a right call with a weak answer is still a right call)."""
    need = [s for c, s in zip(cases, scores) if c.expected_call is not None]
    none = [s for c, s in zip(cases, scores) if c.expected_call is None]
    rows = {f'needs a call: {OUTCOMES[k]}': sum(s.kind == k for s in need)
            for k in ('ok', 'wrong_arguments', 'invalid_json', 'wrong_tool', 'no_call', 'error')}
    rows.update({RIGHT_NO_CALL: sum(s.kind == 'ok' for s in none),
                 f'needs no call: {OUTCOMES["false_call"]}': sum(s.kind == 'false_call' for s in none),
                 'needs no call: error': sum(s.kind == 'error' for s in none)})
    rows['weak answer after a right outcome (apart)'] = sum(bool(s.weak_answer) for s in scores)
    return rows


def argument_error_counts(cases: list[EvalCase], scores: list[CaseScore]) -> dict[str, int]:
    """Of the calls that named the right tool: how many, how many exact, and how many show each
    :data:`ARG_ERRORS` kind (keys are its labels; a call can count under several kinds)."""
    right = [(c, s) for c, s in zip(cases, scores) if s.selection]
    rows = {'right-tool calls': len(right), 'arguments exact': sum(bool(s.exact) for _, s in right)}
    found = [s.arg_errors for _, s in right]
    rows.update({label: sum(key in kinds for kinds in found) for key, label in ARG_ERRORS.items()})
    return rows


def argument_error_examples(cases: list[EvalCase], scores: list[CaseScore], per_kind: int = 1) -> list[dict]:
    """Up to ``per_kind`` cases of each :data:`ARG_ERRORS` kind: the query, the expected arguments and the
    model's (its raw Action Input when it is not a JSON object)."""
    rows, seen = [], Counter()
    for c, s in zip(cases, scores):
        for kind in s.arg_errors:
            if seen[kind] < per_kind:
                seen[kind] += 1
                rows.append({'kind': ARG_ERRORS[kind], 'lang': c.lang, 'query': c.query,
                             'expected': json.dumps(c.expected_call['arguments'], ensure_ascii=False),
                             'got': json.dumps(s.args, ensure_ascii=False) if s.args is not None else s.raw_args})
    order = list(ARG_ERRORS.values())
    return sorted(rows, key=lambda r: order.index(r['kind']))


# What each failure usually means for a model in RolePlay, and what to try (used by :func:`conclusion`).
ADVICE = {
    'no_call': ('it often answers directly instead of calling', 'more call samples, or a higher '
                '`decision_weight` in notebook 02\'s overrides so the call-or-answer token weighs more'),
    'wrong_tool': ('it confuses tools offered together', 'more conversations with look-alike tools (a shared '
                   'parameter name) and more tools per prompt'),
    'wrong_arguments': ('it picks the right tool but invents, drops or paraphrases argument values',
                        'more samples with optional parameters given and left out, and values to copy verbatim'),
    'invalid_json': ('its Action Input is not a JSON object', 'more training steps: the format is the first '
                     'thing a model learns'),
    'false_call': ('it calls tools for questions that need none', 'a larger share of no-call conversations '
                   '(`python -m helpers ablate` measures what the share changes)'),
    'error': ('cases crashed', 'read the errors in predictions.jsonl'),
}


def conclusion(arms: dict[str, dict], baseline: str, kinds: dict[str, dict[str, int]] | None = None,
               seen_vs_holdout: dict[str, dict[str, dict]] | None = None,
               recalls: dict[str, dict[str, int]] | None = None) -> str:
    """A written conclusion (markdown) of a comparison, from the numbers only.

    ``arms``: name → metrics (:func:`aggregate`), ``baseline`` one of them; ``kinds``: name → call outcome
    counts (``Counter`` of :attr:`CaseScore.kind`); ``seen_vs_holdout``: name → {'seen tool': metrics,
    'holdout tool': metrics}. Every other arm is compared with the baseline: what improved, what got worse,
    what the test cannot tell apart (the 95% interval of the difference includes 0), the most frequent
    remaining failure and what to try.
    """
    lines = ['Δ = arm − baseline, with its 95% interval (Newcombe); ↑ higher is better, ↓ lower is better. '
             '"Unclear" means the interval of the difference includes 0: these cases cannot tell the two apart.', '']
    base = arms[baseline]
    for name, m in arms.items():
        if name == baseline:
            continue
        changes = compare(m, base)
        lines.append(f'**{name} vs {baseline}** ({m.get("n_cases")} cases: {m.get("n_with_call")} need a call, '
                     f'{m.get("n_without_call")} need none)')
        rates = [c for c in changes if METRICS[c.key].proportion]
        for label, want in (('Better', 'better'), ('Worse', 'worse'), ('Unclear', 'unclear')):
            got = [c.text() for c in rates if c.verdict == want]
            if got:
                lines.append(f'- {label}: ' + '; '.join(got) + '.')
        means = [c.text() for c in changes if not METRICS[c.key].proportion and c.delta is not None]
        if means:
            lines.append('- Means, without an interval: ' + '; '.join(means) + '.')
        k = dict((kinds or {}).get(name) or {})
        fails = {f: n for f, n in k.items() if f != 'ok' and n}
        if fails:
            worst, n = max(fails.items(), key=lambda kv: (kv[1], kv[0]))
            why, todo = ADVICE[worst]
            total = m.get('n_cases') or sum(k.values())
            lines.append(f'- Most frequent failure: {OUTCOMES[worst]} in {n} of {total} cases — {why}. '
                         f'To try: {todo}.')
        r = (recalls or {}).get(name)
        if r and r['ran']:
            lines.append(f"- Loops: after the tool's result it called again in {format_rate(r['recalled'], r['ran'])} "
                         f"of the turns where a call ran ({r['stopped']} stopped at the call limit); the rates above "
                         'score the first output only.')
        split = (seen_vs_holdout or {}).get(name) or {}
        seen, hold = split.get('seen tool'), split.get('holdout tool')
        if seen and hold and seen.get('counts') and hold.get('counts'):
            ks, ns = seen['counts']['tool_selection_acc']
            kh, nh = hold['counts']['tool_selection_acc']
            if ns and nh:
                ci = diff_interval(kh, nh, ks, ns)
                gap = 'a real gap: it learned the training tools more than tool use' if ci[1] < 0 else \
                    'no clear gap at this number of cases'
                lines.append(f'- Tools never seen in training: selection {format_rate(kh, nh)} vs '
                             f'{format_rate(ks, ns)} on seen tools ({gap}).')
        widest = max((c.interval[1] - c.interval[0] for c in changes if c.interval), default=0)
        if widest > 0.3:
            lines.append(f'- The widest difference interval spans {widest:.2f}: more test cases would '
                         'narrow it (roughly halved by four times as many).')
        lines.append('')
    return '\n'.join(lines).strip() + '\n'


# Kinds of test case worth reading one by one (notebook 04's gallery): title → test on a case.
SHOWCASE = {
    'a tool seen in training': lambda c: c.expected_call and not c.history and not c.meta.get('holdout'),
    'a tool never seen in training': lambda c: c.expected_call and not c.history and c.meta.get('holdout'),
    'a question that needs no tool': lambda c: c.expected_call is None and not c.history,
    'a follow-up, earlier turns as history': lambda c: c.expected_call and c.history,
    'a thank-you after a call (no tool)': lambda c: c.expected_call is None and c.history,
}


def showcase(cases: list[EvalCase]) -> dict[str, EvalCase]:
    """The first case of each :data:`SHOWCASE` kind (a kind the cases lack is left out)."""
    out = {}
    for title, test in SHOWCASE.items():
        case = next((c for c in cases if test(c)), None)
        if case:
            out[title] = case
    return out


def contrasts(cases: list[EvalCase], scores: dict[str, list[CaseScore]], arm: str,
              baseline: str) -> dict[str, EvalCase]:
    """Three cases to read ``arm`` and ``baseline`` side by side: a right call of ``arm`` (one the baseline
    got wrong when there is one), a wrong tool of ``arm`` (else its most frequent other failure of a case
    that needs a call), and a case that needs no call (one where the two differ when there is one)."""
    rows = list(zip(cases, scores[arm], scores[baseline]))
    need = [r for r in rows if r[0].expected_call is not None]
    none = [r for r in rows if r[0].expected_call is None]
    out = {}
    right = [r for r in need if r[1].kind == 'ok']
    if right:
        c, _, b = next((r for r in right if r[2].kind != 'ok'), right[0])
        out[f'a right call of {arm}' + (f' ({baseline}: {OUTCOMES[b.kind]})' if b.kind != 'ok' else '')] = c
    failed = [r for r in need if r[1].kind not in ('ok', 'error')]
    if failed:
        counts = defaultdict(int)
        for r in failed:
            counts[r[1].kind] += 1
        kind = 'wrong_tool' if counts['wrong_tool'] else max(counts, key=counts.get)
        out[f'{OUTCOMES[kind]} by {arm}'] = next(r[0] for r in failed if r[1].kind == kind)
    if none:
        out['a question that needs no tool'] = next((r for r in none if r[1].kind != r[2].kind), none[0])[0]
    return out


def shown_reply(case: EvalCase, row: dict) -> str:
    """What AgentFabric showed for a prediction row: the first output, and when the tool ran, what it returned
    (recorded with the prediction: another tool than the case expects answers with an error), a line for any
    further calls, and the last output."""
    output = row.get('output') or ''
    executed = row.get('calls_executed') or []
    if executed and (row.get('n_llm_calls') or 1) > 1:
        from .agentfabric import transcript
        if 'observation' not in executed[0]:
            return output + ('\n(what the tool returned is not in these predictions: they were made before it was '
                             'kept)')
        last, more = row.get('answer') or '', (row.get('n_llm_calls') or 2) - 2
        if more:
            last = f'[… {more} more model {"output" if more == 1 else "outputs"}, each after a tool result …]\n' + last
        return transcript([output, last], [executed[0]['observation']])
    return output or f'(no output: {row.get("error")})'


def summarize(profile: str, cases: list[EvalCase], results: dict[str, dict], scores: dict[str, list[CaseScore]],
              baseline: str, shown: str, hub: dict | None = None,
              recalls: dict[str, dict[str, int]] | None = None) -> dict:
    """The run's evaluation summary (``eval/metrics.json``, read by the report and the README generator): every
    arm's metrics, its comparison with ``baseline``, outcome counts, per-language metrics, argument errors (per
    language for the ``shown`` arm), the loops of each arm (``recalls``: :func:`helpers.narrate.recall_rate` of its
    predictions) and the written :func:`conclusion`. Notebook 05 writes it; notebook 06 writes it again with its
    arm added."""
    holdout = {arm: breakdown(cases, s, lambda c: 'holdout tool' if c.meta.get('holdout') else 'seen tool')
               for arm, s in scores.items()}
    kinds = {arm: Counter(x.kind for x in s) for arm, s in scores.items()}
    arg_errors = {arm: argument_error_counts(cases, s) for arm, s in scores.items()}
    for lang in sorted({c.lang for c in cases}):
        idx = [i for i, c in enumerate(cases) if c.lang == lang]
        arg_errors[f'{shown} · {lang}'] = argument_error_counts([cases[i] for i in idx], [scores[shown][i] for i in idx])
    return {'profile': profile, 'n_cases': len(cases), 'baseline': baseline, 'models': results,
            'comparisons': {arm: [{'key': c.key, 'base': c.base, 'value': c.value, 'delta': c.delta,
                                   'interval': c.interval, 'verdict': c.verdict} for c in compare(m, results[baseline])]
                            for arm, m in results.items() if arm != baseline},
            'outcomes': {arm: outcome_counts(cases, s) for arm, s in scores.items()},
            'conclusion': conclusion(results, baseline, kinds, holdout, recalls),
            **({'recalls': recalls} if recalls else {}),
            'per_language': {arm: per_language(cases, s) for arm, s in scores.items()},
            'argument_errors': arg_errors, 'hub': hub or None}


def add_arm(run_dir: str | Path, role: str, metrics: dict) -> dict:
    """Add the arm of ``role`` (its metrics; its predictions in ``eval/<role>/``) to the run's evaluation summary
    and write it again from every arm's predictions (:func:`summarize`); returns the new summary."""
    from .environment import write_text_atomic
    run = Path(run_dir)
    path = run / 'eval' / 'metrics.json'
    summary = json.loads(path.read_text())
    roles = {name: r for r, name in ARM_NAMES.items()}
    results = {**summary['models'], ARM_NAMES[role]: metrics}
    cases = load_cases(run / 'data' / 'test_cases.jsonl')[:summary['n_cases']]
    from .narrate import recall_rate
    preds = {arm: load_predictions(run / 'eval' / roles[arm] / 'predictions.jsonl') for arm in results}
    scores = {arm: score(cases, p)[1] for arm, p in preds.items()}
    new = summarize(summary['profile'], cases, results, scores, summary['baseline'], ARM_NAMES[role],
                    summary.get('hub'), {arm: recall_rate(p) for arm, p in preds.items()})
    write_text_atomic(path, json.dumps(new, indent=2, ensure_ascii=False))
    return new
