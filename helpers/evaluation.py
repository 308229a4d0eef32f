"""Evaluation: run cases through the real RolePlay loop against a server, and score predictions.

:func:`evaluate` runs every case (the evaluation case format of :mod:`helpers.agentfabric`) through
``RolePlay`` with offline tools that return the case's observation, several cases at a time against one
server, and writes ``predictions.jsonl`` and ``metrics.json``. :func:`score` computes the metrics for any
predictions, so runs can be rescored and compared. Definitions (exactly these):

* the call is the first match of RolePlay's ``Action: (.+)\\nAction Input: (.+)`` in ``output``;
* ``tool_selection_acc`` — over cases with an ``expected_call``: parsed name == expected name (spaces ignored);
* ``args_exact_acc`` (the headline) — same cases: name right and Action Input a JSON object with exactly the
  expected keys, each value equal as ``str(v).strip()``;
* ``args_ast_acc`` — same cases, in the style of the Berkeley Function Calling Leaderboard's AST check: name
  right, Action Input a JSON object, no parameter the tool does not declare, every expected parameter present
  with a matching value, and every parameter the expected call leaves out absent or equal to its declared
  ``default``; an expected optional value equal to its default may also be left out. A value matches when
  it has the parameter's JSON type (BFCL checks types: ``"3"`` is not an integer, ``3.0`` is a number but no
  integer, ``true`` is no number) and is equal: strings ignoring case and surrounding spaces, numbers
  numerically (``200 == 200.0`` for a number parameter), the rest exactly.
  When the expected value itself does not fit the declared type (data converted without types), its own JSON
  type is required instead;
* ``args_f1`` — micro F1 over ``(key, str(value).strip())`` pairs, predicted vs expected, over those cases
  (no JSON object: no predicted pairs);
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

Scoring files (:func:`score_files`) refuses, by default, a case id or prediction id that appears twice
and a prediction whose id is not a case: each would silently change the metrics. Allowed explicitly, the
first of each id counts, and the output says how many were set aside.

:func:`breakdown` gives the metrics per group (:func:`per_language` per case language).

Before the first case, :func:`evaluate` checks that the server answers ``GET /models`` within a few
seconds (:class:`ServerUnavailable` otherwise). Rates come with their count and a Wilson 95% interval.
A model that keeps calling tools after the observation is stopped after ``max_llm_calls`` requests in a
case (RolePlay itself allows 10), which bounds the cost of a run; such cases are counted in ``n_stopped``.
"""
from __future__ import annotations

import contextlib
import io
import json
import math
import time
import urllib.error
import urllib.request
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

from .agentfabric import DuplicateIdError, EvalCase, ToolParam, has_chinese, load_cases, parse_action
from .jsonl import JsonlError, read_jsonl, write_json, write_jsonl

RATES = ('tool_selection_acc', 'args_exact_acc', 'args_ast_acc', 'false_positive_rate', 'irrelevance_detection',
         'invalid_call_rate')
ROUGE_MAX_CHARS = 10_000  # of each text, before tokenizing
HEALTH_TIMEOUT = 5.0  # seconds the server has to answer GET /models


class ServerUnavailable(RuntimeError):
    """No OpenAI-compatible server answers at the base URL."""


class UnknownIdError(ValueError):
    """A prediction whose id is not among the cases."""


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


def _pairs(obj: dict) -> set[tuple[str, str]]:
    return {(str(k), str(v).strip()) for k, v in obj.items()}


_JSON_TYPES = {'string': (str,), 'integer': (int,), 'number': (int, float), 'boolean': (bool,), 'array': (list,),
               'object': (dict,), 'null': (type(None),)}


def _has_type(value: Any, kind: str) -> bool:
    """Whether ``value`` (parsed JSON) is of JSON schema type ``kind`` (a boolean is not a number);
    a type this check does not know accepts anything."""
    if kind not in _JSON_TYPES:
        return True
    if isinstance(value, bool) and kind in ('integer', 'number'):
        return False
    return isinstance(value, _JSON_TYPES[kind])


def _ast_value(value: Any, expected: Any, param: ToolParam | None) -> bool:
    """One value against the expected one, as :func:`ast_match` compares them."""
    declared = ([] if param is None else param.type if isinstance(param.type, list) else [param.type])
    kind = next((t for t in declared if _has_type(expected, t)),  # the expected value's own type otherwise
                next((t for t in ('boolean', 'integer', 'number', 'string', 'array', 'object', 'null')
                      if _has_type(expected, t)), None))
    if kind is None or not _has_type(value, kind):
        return False
    if kind == 'string':
        return value.strip().casefold() == expected.strip().casefold()
    return value == expected  # numbers compare numerically (200 == 200.0), exactly even beyond float range


def ast_match(case: EvalCase, name: str | None, args: dict | None) -> bool:
    """The ``args_ast_acc`` check of one call (tool ``name``, parsed ``args``) against the case's expected call."""
    exp = case.expected_call
    if exp is None or args is None or name != exp['name'].strip():
        return False
    tool = next((t for t in case.tools if t.name == exp['name']), None)
    params = {p.name: p for p in tool.parameters} if tool else {}
    expected = exp['arguments']
    if set(args) - set(params) - set(expected):
        return False  # a parameter the tool does not have
    for key in set(params) | set(expected):
        p = params.get(key)
        default = p.default if p is not None else None
        if key in expected:
            if key in args:
                if not _ast_value(args[key], expected[key], p):
                    return False
            elif p is None or p.required or default is None or not _ast_value(default, expected[key], p):
                return False  # missing, unless it is optional and what was asked for is its default
        elif key in args and (default is None or not _ast_value(args[key], default, p)):
            return False  # given though nobody asked for it, and not its default either
    return True


@dataclass
class CaseScore:
    """How one prediction fared against its case."""
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
    kind: str  # ok | no_call | wrong_tool | invalid_json | wrong_arguments | false_call | bad_summary | error


def score_case(case: EvalCase, pred: dict, summary_threshold: float = 0.2) -> CaseScore:
    output = pred.get('output') or ''
    call = parse_action(output)
    name = call.name.strip() if call else None
    args = call.json_arguments() if call else None
    exp = case.expected_call
    selection = exact = ast = false_call = None
    if exp is not None:
        selection = name == exp['name'].strip()
        exact = bool(selection and args is not None and _pairs(args) == _pairs(exp['arguments']))
        ast = ast_match(case, name, args)
    else:
        false_call = call is not None
    invalid = (args is None) if call else None
    rouge = rouge_l(pred.get('answer') or '', case.reference_answer) if case.reference_answer.strip() else None
    if pred.get('error'):
        kind = 'error'
    elif exp is None:
        kind = 'false_call' if false_call else 'ok'
    elif call is None:
        kind = 'no_call'
    elif not selection:
        kind = 'wrong_tool'
    elif args is None:
        kind = 'invalid_json'
    elif not exact:
        kind = 'wrong_arguments'
    else:
        kind = 'ok'
    if kind == 'ok' and rouge is not None and rouge < summary_threshold:
        kind = 'bad_summary'
    return CaseScore(case.id, exp['name'] if exp else None, name, args, selection, exact, ast, false_call, invalid,
                     rouge, kind)


def aggregate(cases: list[EvalCase], scores: list[CaseScore]) -> dict:
    """The metrics of the module docstring, plus counts and Wilson intervals of the rates."""
    with_call = [(c, s) for c, s in zip(cases, scores) if c.expected_call is not None]
    without = [s for c, s in zip(cases, scores) if c.expected_call is None]
    parsed = [s for s in scores if s.invalid is not None]
    tp = fp = fn = 0
    for c, s in with_call:
        exp = _pairs(c.expected_call['arguments'])
        got = _pairs(s.args) if s.args is not None else set()
        tp += len(exp & got)
        fp += len(got - exp)
        fn += len(exp - got)
    false_calls = sum(s.false_call for s in without)
    counts = {
        'tool_selection_acc': (sum(s.selection for _, s in with_call), len(with_call)),
        'args_exact_acc': (sum(s.exact for _, s in with_call), len(with_call)),
        'args_ast_acc': (sum(s.ast for _, s in with_call), len(with_call)),
        'false_positive_rate': (false_calls, len(without)),
        'irrelevance_detection': (len(without) - false_calls, len(without)),
        'invalid_call_rate': (sum(s.invalid for s in parsed), len(parsed)),
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


def predict_case(case: EvalCase, llm: dict, max_tokens: int, max_llm_calls: int = 4) -> dict:
    """One case through RolePlay: the raw first output, the final answer, the calls that really ran.

    A model that keeps calling tools is stopped after ``max_llm_calls`` requests (RolePlay would go on
    to 10): the case keeps what it produced and is marked ``stopped``.
    """
    from .agent_tools import LoopLimit, case_turn
    start = time.time()
    row = {'id': case.id, 'output': '', 'answer': '', 'call': None, 'calls_executed': [], 'error': None,
           'stopped': None}
    turn = None
    try:
        turn, chunks = case_turn(case, llm, max_llm_calls=max_llm_calls, max_tokens=max_tokens, temperature=0)
        for _ in chunks:
            pass
    except LoopLimit as e:
        row['stopped'] = str(e)
    except Exception as e:  # a failing case is recorded, the run goes on
        row['error'] = f'{type(e).__name__}: {e}'[:500]
    if turn is not None:
        outputs = [o for o in turn.outputs if o] or turn.outputs
        row['output'] = turn.outputs[0] if turn.outputs else ''
        row['answer'] = outputs[-1].strip() if outputs else ''
        row['n_llm_calls'] = len(turn.outputs)
        row['calls_executed'] = [{'name': c.name, 'arguments': c.arguments, 'parsed': c.parsed} for c in turn.calls]
    call = parse_action(row['output'])
    if call:
        row['call'] = {'name': call.name, 'arguments': call.arguments}
    row['latency_s'] = round(time.time() - start, 2)
    return row


def check_server(base_url: str, timeout: float = HEALTH_TIMEOUT) -> None:
    """Raise :class:`ServerUnavailable` unless ``GET {base_url}/models`` answers within ``timeout`` seconds."""
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
             max_tokens: int = 96, progress: bool = True, max_llm_calls: int = 4) -> dict:
    """Run all cases against ``base_url`` (one server, ``workers`` at a time); write predictions and metrics
    (atomically). Raises :class:`ServerUnavailable` within seconds when no server answers."""
    for name, value in (('workers', workers), ('max_tokens', max_tokens), ('max_llm_calls', max_llm_calls)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f'{name} must be a whole number of at least 1, got {value!r}')
    ids = [c.id for c in cases]
    if len(set(ids)) != len(ids):
        raise ValueError('case ids must be unique: predictions are matched to cases by id')
    check_server(base_url)
    from .agent_tools import llm_config, modelscope_agent
    modelscope_agent()  # import once here, before the worker threads start
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    llm = llm_config(base_url, model, stream=False)  # whole replies: less client work, same requests
    rows: dict[str, dict] = {}
    start = time.time()
    bar = None
    if progress:
        from tqdm import tqdm  # text bar: readable in notebooks, papermill logs and terminals alike
        bar = tqdm(total=len(cases), desc=f'evaluating {model}', unit='case', mininterval=5)
    # RolePlay prints a traceback to stdout for every tool call with bad arguments; the prediction
    # already records it, so it is kept out of the notebook.
    pool = ThreadPoolExecutor(max_workers=workers)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            futures = {pool.submit(predict_case, c, llm, max_tokens, max_llm_calls): c.id for c in cases}
            for fut in as_completed(futures):
                rows[futures[fut]] = fut.result()
                if bar:
                    bar.update(1)
    finally:  # on Ctrl-C, cases not yet started are dropped: only those running finish
        pool.shutdown(wait=True, cancel_futures=True)
    if bar:
        bar.close()
    wall = time.time() - start
    write_jsonl(out / 'predictions.jsonl', (rows[c.id] for c in cases))
    metrics, _ = score(cases, rows)
    metrics['n_stopped'] = sum(bool(r.get('stopped')) for r in rows.values())
    metrics['eval'] = {'model': model, 'wall_seconds': round(wall, 1),
                       'cases_per_second': round(len(cases) / wall, 3) if wall else None,
                       'workers': workers, 'max_tokens': max_tokens, 'max_llm_calls': max_llm_calls}
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


def evaluate_model(spec, cases: list[EvalCase], out_dir: str | Path, workers: int | None = None,
                   max_tokens: int = 64, max_llm_calls: int = 4, use_cache: bool = True,
                   progress: bool = True, log=print) -> dict:
    """Serve ``spec`` (a :class:`serving.ServerSpec`), run ``cases`` through RolePlay against it and stop it;
    with ``use_cache``, predictions made before under the same :func:`prediction_key` are reused without
    starting a server (``metrics['eval']['cached']`` says so), and new ones are stored for next time."""
    import shutil
    from .environment import cache_dir
    from .serving import Server, package_version
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
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
        metrics['eval'] = {**before['eval'], 'model': spec.served_name, 'cached': True, 'cache_key': key}
        write_json(out / 'metrics.json', metrics)
        log(f'{spec.served_name}: predictions reused from the cache ({stored}); same model files, cases, '
            'prompt format and settings')
        return metrics
    with Server(spec, out / 'server.log') as srv:
        metrics = evaluate(cases, srv.base_url, spec.served_name, out, workers=workers or spec.workers,
                           max_tokens=max_tokens, progress=progress, max_llm_calls=max_llm_calls)
    metrics['eval'].update(server_start_seconds=srv.ready_seconds, backend=spec.backend, precision=spec.precision,
                           cached=False, cache_key=key)
    write_json(out / 'metrics.json', metrics)
    if stored and not metrics.get('n_errors'):  # a run with failed cases is not worth remembering
        stored.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(out / 'predictions.jsonl', stored / 'predictions.jsonl')
        write_json(stored / 'key.json', parts)
        write_json(stored / 'metrics.json', metrics)
    return metrics
