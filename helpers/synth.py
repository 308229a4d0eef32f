"""Synthetic data: a deterministic generator of AgentFabric conversations from the bundled tool catalog.

What a small model needs to learn, and what the generator therefore varies:

* Chinese and English; one to several tools offered, with **distractors that share a parameter
  name** with the right tool (``location``, ``text``, ``date`` …), so the name must be read, not guessed;
* single calls, **multi-turn** conversations (a follow-up that changes one argument, a second tool,
  a thank-you), and conversations where **no tool** should be called;
* varied role instructions; optional parameters **given and left out**; argument values that must be
  **copied verbatim** (multi-word spans, codes, numbers, non-ASCII), typed values (numbers, booleans).

Splits never share a (tool, query template) pair; string slot values, role instructions and
no-call queries are split as well, and a few *holdout* tools appear only in the test split, so the
test set measures generalisation to new phrasings, new values and new tools.
"""
from __future__ import annotations

import hashlib
import json
import random
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from .agentfabric import Call, Conversation, Turn, check_instruction, render, to_case
from .catalog import CatalogTool, load_catalog, load_instructions, load_no_call, load_slot_values
from .jsonl import write_json, write_jsonl

SPLITS = ('train', 'val', 'test')
FOLLOW_UPS = {  # generic follow-ups that change the primary argument; split like the query templates
    'zh': ['那{value}呢？', '换成{value}再查一次', '{value}的情况呢？', '再帮我看看{value}', '如果是{value}呢？',
           '同样的，{value}怎么样？', '那改成{value}吧'],
    'en': ['What about {value}?', 'And for {value}?', 'Same again, but for {value}.', 'Now try {value}.',
           'How about {value} instead?', 'Could you do {value} too?', 'Switch it to {value}, please.'],
}
THANKS = {
    'zh': [('谢谢！', '不客气，有需要随时找我。'), ('好的，明白了', '好的，还有其他需要请告诉我。'), ('太好了，谢谢你', '很高兴能帮到你！'),
           ('收到', '好的，祝你一切顺利！'), ('辛苦了', '不辛苦，随时为你服务。'), ('谢啦', '不用谢！')],
    'en': [('Thanks!', "You're welcome — ask me anytime."), ('Great, got it.', 'Glad it helps. Anything else?'),
           ('Perfect, thank you', 'Happy to help!'), ('OK, noted.', 'Sure. Let me know if you need more.'),
           ('Cheers', 'Any time!'), ('That is all, thanks.', "You're welcome, have a good day!")],
}


@dataclass(frozen=True)
class SynthConfig:
    """How conversations are drawn. Shares are of all conversations of a split."""
    langs: tuple[str, ...] = ('zh', 'en')
    max_tools: int = 4  # tools offered: 1 … max_tools
    p_no_call: float = 0.15
    p_multi_turn: float = 0.15
    p_shared_slot_distractor: float = 0.7  # distractors chosen among tools sharing a parameter name
    p_holdout_tool: float = 0.25  # test split only: share of call conversations using a holdout tool
    p_session: float = 0.0  # train split only: share of conversations that are sessions of several queries
    session_turns: tuple[int, int] = (3, 5)  # queries per session
    split_ratios: tuple[float, float, float] = (0.8, 0.1, 0.1)

    def __post_init__(self) -> None:
        if not self.langs or not set(self.langs) <= {'zh', 'en'}:
            raise ValueError(f'langs must be some of zh, en; got {self.langs!r}')
        if not isinstance(self.max_tools, int) or self.max_tools < 1:
            raise ValueError(f'max_tools must be a whole number of at least 1, got {self.max_tools!r}')
        low, high = self.session_turns
        if not 1 <= low <= high:
            raise ValueError(f'session_turns must be (low, high) with 1 <= low <= high, got {self.session_turns!r}')


def _rng(*parts) -> random.Random:
    """A random stream keyed by strings, stable across runs and Python versions."""
    return random.Random(int(hashlib.sha256('|'.join(map(str, parts)).encode()).hexdigest()[:16], 16))


def _split_items(items: list, key: str, ratios=(0.7, 0.15, 0.15), min_each: int = 1) -> dict[str, list]:
    """Deterministically partition ``items`` into train/val/test (each non-empty when possible)."""
    items = list(items)
    _rng('split', key).shuffle(items)
    n = len(items)
    if n < 3:
        return {s: items for s in SPLITS}  # too few to split: shared (only enums and small numbers)
    n_val = max(min_each, round(n * ratios[1]))
    n_test = max(min_each, round(n * ratios[2]))
    return {'test': items[:n_test], 'val': items[n_test:n_test + n_val], 'train': items[n_test + n_val:]}


def _split_values(pools: dict[tuple, list[str]], min_held_out: int = 2) -> dict[tuple, dict[str, list[str]]]:
    """Split slot values by the value itself, so a value shared by two pools (a city that is also a
    location) lands in the same split everywhere. A pool whose val or test share came out smaller than
    ``min_held_out`` (two slots of one kind, origin and destination, need two different values) moves
    train values there, in every pool that holds them."""
    where = {v: _value_split(v) for values in pools.values() for v in values}
    for key in sorted(pools, key=str):
        values = pools[key]
        for split in ('test', 'val'):
            spare = sorted((v for v in values if where[v] == 'train'), key=lambda v: _rng('move', v).random())
            while sum(where[v] == split for v in values) < min_held_out and len(spare) > 4:
                where[spare.pop()] = split
    out = {}
    for key, values in pools.items():
        parts = {s: [v for v in values if where[v] == s] for s in SPLITS}
        out[key] = parts if all(parts.values()) else {s: values for s in SPLITS}
    return out


def _value_split(value: str) -> str:
    r = _rng('value', value).random()
    return 'test' if r < 0.15 else 'val' if r < 0.3 else 'train'


@dataclass
class Resources:
    """The catalog and pools, partitioned once into splits."""
    tools: list[CatalogTool]
    templates: dict  # (tool, lang) -> split -> [QueryTemplate]
    slots: dict  # slot -> lang -> split -> [values]
    no_call: dict  # lang -> split -> [items]
    instructions: dict  # lang -> split -> [instruction]
    follow_ups: dict  # lang -> split -> [text]

    @classmethod
    def load(cls) -> 'Resources':
        tools = load_catalog()
        slot_values = load_slot_values()
        templates = {}
        for t in tools:
            for lang, temps in t.queries.items():
                templates[(t.name, lang)] = ({s: temps for s in SPLITS} if t.holdout else
                                             _split_items(temps, f'{t.name}.{lang}', ratios=(0.7, 0.15, 0.15)))
        enum_slots = {p.slot for t in tools for p in t.parameters if p.enum}
        pools = {(slot, lang): values for slot, by_lang in slot_values.items() for lang, values in by_lang.items()
                 if slot not in enum_slots and len(values) >= 9 and all(isinstance(v, str) for v in values)}
        slots = {slot: {lang: {s: values for s in SPLITS} for lang, values in by_lang.items()}
                 for slot, by_lang in slot_values.items()}
        for (slot, lang), parts in _split_values(pools).items():
            slots[slot][lang] = parts
        return cls(tools=tools, templates=templates, slots=slots,
                   no_call={lang: _split_items(v, f'nocall.{lang}') for lang, v in load_no_call().items()},
                   instructions={lang: _split_items(v, f'instr.{lang}') for lang, v in load_instructions().items()},
                   follow_ups={lang: _split_items(v, f'follow.{lang}') for lang, v in FOLLOW_UPS.items()})

    def eligible(self, split: str, lang: str, holdout: bool) -> list[CatalogTool]:
        return [t for t in self.tools if t.holdout == holdout and self.templates.get((t.name, lang), {}).get(split)]


class Generator:
    """``Generator(config, seed).conversations(split, n)``: the same arguments give the same data."""

    def __init__(self, config: SynthConfig = SynthConfig(), seed: int = 0, resources: Resources | None = None):
        self.cfg = config
        self.seed = seed
        self.res = resources or Resources.load()

    # -- pieces
    def _fill(self, rng, tool: CatalogTool, template, lang: str, split: str) -> tuple[str, dict]:
        """Draw a value for each placeholder from the split's pool: the query text and the call arguments."""
        slot = {p.name: p.slot for p in tool.parameters}
        values: dict = {}
        for name in template.args:  # two slots of one kind (origin, destination) never get the same value
            pool = self.res.slots[slot[name]][lang][split]
            taken = [*values.values(), *template.fixed.values()]
            values[name] = rng.choice([v for v in pool if v not in taken] or pool)
        return tool.fill(template, values)

    def _offered(self, rng, main: CatalogTool, lang: str, split: str) -> list[CatalogTool]:
        """The main tool plus distractors (never holdout tools outside the test split)."""
        k = rng.randint(1, self.cfg.max_tools)
        pool = [t for t in self.res.tools if t.name != main.name and (split == 'test' or not t.holdout)
                and lang in t.queries]
        names = {p.name for p in main.parameters}
        sharing = [t for t in pool if names & {p.name for p in t.parameters}]
        chosen: list[CatalogTool] = []
        while len(chosen) < k - 1 and pool:
            source = sharing if sharing and rng.random() < self.cfg.p_shared_slot_distractor else pool
            pick = rng.choice(source)
            chosen.append(pick)
            pool = [t for t in pool if t.name != pick.name]
            sharing = [t for t in sharing if t.name != pick.name]
        tools = chosen + [main]
        rng.shuffle(tools)
        return tools

    def _call_turn(self, rng, tool: CatalogTool, lang: str, split: str) -> tuple[Turn, str]:
        template = rng.choice(self.res.templates[(tool.name, lang)][split])
        query, args = self._fill(rng, tool, template, lang, split)
        result = tool.run(args)
        call = Call(tool.name, args, json.dumps(result, ensure_ascii=False))
        return Turn(query, [call], tool.answer_text(lang, args, result)), template.id

    def _follow_up(self, rng, tool: CatalogTool, prev: Call, lang: str, split: str) -> Turn | None:
        param = next(p for p in tool.parameters if p.name == tool.primary)
        options = [v for v in self.res.slots[param.slot][lang][split] if v not in prev.arguments.values()]
        if not options or not isinstance(options[0], str):
            return None
        value = rng.choice(options)
        args = {**prev.arguments, param.name: value}
        result = tool.run(args)
        query = rng.choice(self.res.follow_ups[lang][split]).format(value=value)
        return Turn(query, [Call(tool.name, args, json.dumps(result, ensure_ascii=False))],
                    tool.answer_text(lang, args, result))

    # -- conversations
    def conversation(self, split: str, index: int) -> Conversation:
        rng = _rng(self.seed, split, index)
        cfg = self.cfg
        lang = rng.choice(cfg.langs)
        instruction = check_instruction(rng.choice(self.res.instructions[lang][split]))
        meta = {'split': split, 'lang': lang}
        if split == 'train' and cfg.p_session and rng.random() < cfg.p_session:
            tools, turns, pairs = self._session(rng, lang, split)
            last = turns[-1].calls[0].name if turns[-1].calls else None
            meta.update(kind='session', template=pairs[-1][1] if pairs else None, tool=last, holdout=False,
                        pairs=pairs)
            return Conversation(id=f'{split}-{self.seed}-{index}', instruction=instruction,
                                tools=[t.as_tool(lang) for t in tools], turns=turns, lang=lang, meta=meta)
        roll = rng.random()
        if roll < cfg.p_no_call:
            item = rng.choice(self.res.no_call[lang][split])
            main = rng.choice(self.res.eligible(split, lang, False) or self.res.eligible('train', lang, False))
            tools = self._offered(rng, main, lang, split)
            if rng.random() < 0.5 and len(tools) > 1:  # the main tool is only a distractor here
                tools = [t for t in tools if t.name != main.name]
            turns = [Turn(item['text'], [], item['answer'])]
            meta.update(kind='no_call', template=item['id'], tool=None, holdout=False)
        else:
            holdout = split == 'test' and rng.random() < cfg.p_holdout_tool and self.res.eligible(split, lang, True)
            main = rng.choice(self.res.eligible(split, lang, bool(holdout)))
            tools = self._offered(rng, main, lang, split)
            first, template_id = self._call_turn(rng, main, lang, split)
            turns, kind, pairs = [first], 'single', [[main.name, template_id]]
            if roll < cfg.p_no_call + cfg.p_multi_turn:
                turn, kind, second_id = self._second_turn(rng, main, tools, first, lang, split)
                turns.append(turn)
                if second_id:
                    template_id = second_id
                    pairs.append([turn.calls[0].name, second_id])
            meta.update(kind=kind, template=template_id, tool=turns[-1].calls[0].name if turns[-1].calls else None,
                        holdout=bool(holdout), pairs=pairs)
        return Conversation(id=f'{split}-{self.seed}-{index}', instruction=instruction,
                            tools=[t.as_tool(lang) for t in tools], turns=turns, lang=lang, meta=meta)

    def _session(self, rng, lang, split):
        """An agent used for several queries in a row: fixed tools and role, each query a call to one of
        them (or none). Earlier queries become the history of the last, as AgentFabric keeps them."""
        main = rng.choice(self.res.eligible(split, lang, False))
        tools = self._offered(rng, main, lang, split)
        usable = [t for t in tools if self.res.templates.get((t.name, lang), {}).get(split)]
        turns, pairs = [], []
        for _ in range(rng.randint(*self.cfg.session_turns)):
            if rng.random() < self.cfg.p_no_call:
                item = rng.choice(self.res.no_call[lang][split])
                turns.append(Turn(item['text'], [], item['answer']))
            else:
                tool = rng.choice(usable)
                turn, template_id = self._call_turn(rng, tool, lang, split)
                turns.append(turn)
                pairs.append([tool.name, template_id])
        return tools, turns, pairs

    def _second_turn(self, rng, main, tools, first: Turn, lang, split):
        """(turn, kind, template id or None): a follow-up, another tool, or a thank-you with no call."""
        others = [t for t in tools if t.name != main.name and self.res.templates.get((t.name, lang), {}).get(split)]
        choice = rng.random()
        if choice < 0.45:
            turn = self._follow_up(rng, main, first.calls[0], lang, split)
            if turn:
                return turn, 'follow_up', None
        if choice < 0.8 and others:
            turn, template_id = self._call_turn(rng, rng.choice(others), lang, split)
            return turn, 'second_tool', template_id
        text, answer = rng.choice(THANKS[lang])
        return Turn(text, [], answer), 'thanks', None

    def conversations(self, split: str, n: int) -> list[Conversation]:
        if split not in SPLITS:
            raise ValueError(f'split must be one of {SPLITS}')
        if n < 0:
            raise ValueError(f'the number of conversations cannot be negative, got {n}')
        return [self.conversation(split, i) for i in range(n)]


@dataclass
class DataPlan:
    """What one profile trains and evaluates on."""
    config: SynthConfig
    n_train: int
    n_val: int
    n_test: int
    answer_share: float = 1.0  # share of answer samples kept (call samples are always kept)
    train_history: bool = False  # sessions: train the earlier turns too (needs --loss_scale agentfabric)
    why: str = ''


PROFILE_DATA = {
    'tiny': DataPlan(SynthConfig(), n_train=24, n_val=8, n_test=12, why='just enough to exercise every step'),
    'cpu': DataPlan(SynthConfig(langs=('en',), max_tools=3, p_no_call=0.25, p_session=0.5), n_train=120, n_val=12,
                    n_test=150, answer_share=0.5, train_history=True,
                    why='English only and at most 3 tools: SmolLM2 spends several tokens per Chinese character, and '
                        'the 2-core training budget is about 12 minutes. Half the conversations are sessions of 3-5 '
                        'queries to one agent whose earlier turns are trained too: one long sample then teaches '
                        'several calls, which is what a CPU can afford'),
    'gpu': DataPlan(SynthConfig(), n_train=6000, n_val=300, n_test=500,
                    why='both languages, up to 4 tools, thousands of conversations'),
}


def training_rows(conversations: list[Conversation], answer_share: float = 1.0, seed: int = 0,
                  train_history: bool = False) -> list[dict]:
    """ms-swift ``messages`` rows, one per RolePlay request; answer samples thinned to ``answer_share``.

    A *session* contributes only the requests of its last query, and with ``train_history`` its earlier
    turns are trained too: their calls and answers carry loss while the observations RolePlay inserted
    stay masked (this needs ``--loss_scale agentfabric``). One long sample then teaches several calls.
    """
    rows = []
    for conv in conversations:
        samples = render(conv)
        last = len(conv.turns) - 1
        for i, s in enumerate(samples):
            if conv.meta.get('kind') == 'session' and s.meta['turn'] != last:
                continue
            if s.kind == 'answer' and _rng(seed, conv.id, i).random() >= answer_share:
                continue
            history = train_history and conv.meta.get('kind') == 'session'
            rows.append({**s.to_messages(train_history=history),
                         'meta': {**s.meta, 'kind': s.kind, 'history_trained': history}})
    return rows


def write_splits(out_dir: str | Path, plan: DataPlan, seed: int = 0, resources: Resources | None = None) -> dict:
    """Write ``train.jsonl`` / ``val.jsonl`` (samples), ``test_cases.jsonl`` and the conversations."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    gen = Generator(plan.config, seed, resources)
    summary = {'seed': seed, 'plan': {**asdict(plan), 'config': asdict(plan.config)}}
    for split, n in (('train', plan.n_train), ('val', plan.n_val), ('test', plan.n_test)):
        convs = gen.conversations(split, n)
        write_jsonl(out / f'{split}_conversations.jsonl', (c.to_dict() for c in convs))
        if split == 'test':
            cases = [to_case(c) for c in convs]
            write_jsonl(out / 'test_cases.jsonl', (c.to_dict() for c in cases))
            summary['test'] = {'cases': len(cases), 'with_call': sum(c.expected_call is not None for c in cases)}
        else:
            rows = training_rows(convs, plan.answer_share if split == 'train' else 1.0, seed,
                                 train_history=plan.train_history and split == 'train')
            write_jsonl(out / f'{split}.jsonl', rows)
            summary[split] = {'conversations': len(convs), 'samples': len(rows),
                              'kinds': dict(Counter(r['meta']['kind'] for r in rows))}
    write_json(out / 'data_summary.json', summary)
    return summary


def leakage(train: list[Conversation], other: list[Conversation]) -> set:
    """(tool, template) pairs that appear in both lists — empty by construction."""
    def pairs(convs):
        return {tuple(p) for c in convs for p in c.meta.get('pairs', [])}
    return pairs(train) & pairs(other)


def token_lengths(rows: list[dict], tokenizer) -> list[int]:
    """Tokens per training row (prompt + target) with the model's own chat template."""
    lengths = []
    for r in rows:
        msgs = [{'role': m['role'], 'content': m['content']} for m in r['messages']]
        lengths.append(len(tokenizer.apply_chat_template(msgs, tokenize=True, return_dict=True)['input_ids']))
    return lengths


def language_cost(tokenizer, n: int = 40, seed: int = 0, resources: Resources | None = None) -> dict[str, dict]:
    """Mean tokens per training sample and per character, for Chinese and for English data."""
    out = {}
    for lang in ('zh', 'en'):
        rows = training_rows(Generator(SynthConfig(langs=(lang,)), seed, resources).conversations('train', n))
        lengths = token_lengths(rows, tokenizer)
        chars = sum(len(m['content']) for r in rows for m in r['messages'])
        out[lang] = {'samples': len(rows), 'mean_tokens': round(sum(lengths) / len(lengths), 1),
                     'tokens_per_char': round(sum(lengths) / chars, 3)}
    return out
