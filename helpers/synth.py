"""Synthetic data: a deterministic generator of AgentFabric conversations from the bundled tool catalog.

What a small model needs to learn, and what the generator therefore varies:

* Chinese and English (``p_zh`` of the conversations Chinese); one to several tools offered, with
  **distractors that share a parameter name** with the right tool (``location``, ``text``, ``date`` …),
  so the name must be read, not guessed;
* single calls, **multi-turn** conversations (a follow-up that changes one argument, a second tool,
  a thank-you), and conversations where **no tool** should be called: fixed ones (greetings, knowledge
  questions, requests no tool serves) and, ``p_near_miss`` of them, **near misses** built from templates
  and pool values ("What kind of climate does Kyoto have?") offered together with the tool they sit
  close to (a weather tool), never with a tool that could answer them (a search tool);
* varied role instructions; optional parameters **present exactly when the query states them**: some
  templates state them, and ``p_option`` (``p_option_train`` in the training split, when set) of the call turns
  whose template leaves one out get an *option clause* appended that states it ("… Make it 5 days."), the
  call following exactly; argument values that must be **copied verbatim** (multi-word spans, codes, dates,
  numbers, mixed scripts) with the JSON type of the schema (integers, numbers and booleans as JSON numbers
  and booleans);
* **function masking** (Hammer, arXiv 2410.04587), off by default: ``p_masked`` of the training
  conversations have every tool and parameter name replaced by an unfamiliar identifier, consistently in
  the system prompt, the query prefix and the calls, so the model must read the descriptions.

Splits never share a (tool, query template) or (tool, option clause) pair; string slot values, role
instructions, thank-yous and no-call queries (fixed ones, near-miss templates and their values) are split
as well, so no no-call query of one split appears in another, and a few *holdout* tools appear only in
the test split: the test set measures generalisation to new phrasings, new values and new tools.
"""
from __future__ import annotations

import hashlib
import json
import random
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from .agentfabric import Conversation, ConversationTurn, Tool, ToolCall, check_instruction, render, to_case
from .catalog import (CatalogTool, NoCallQuery, QueryTemplate, load_catalog, load_instructions, load_near_miss,
                      load_no_call, load_slot_values)
from .convert import ms_agent_rows
from .jsonl import write_json, write_jsonl

SPLITS = ('train', 'val', 'test')
MAX_CONVERSATIONS = 100_000  # one `synth` call: about 300 MB of JSON (the gpu profile uses 6,800)
OWNED_FILES = ('data/test_cases.jsonl',)  # repository files `synth` writes (README: how to regenerate them)
FOLLOW_UPS = {  # generic follow-ups that change the primary argument; split like the query templates
    'zh': ['那{value}呢？', '换成{value}再查一次', '{value}的情况呢？', '再帮我看看{value}', '如果是{value}呢？',
           '同样的，{value}怎么样？', '那改成{value}吧'],
    'en': ['What about {value}?', 'And for {value}?', 'Same again, but for {value}.', 'Now try {value}.',
           'How about {value} instead?', 'Could you do {value} too?', 'Switch it to {value}, please.'],
}
THANKS = {  # a thank-you after a call; split like the query templates
    'zh': [('谢谢！', '不客气，有需要随时找我。'), ('好的，明白了', '好的，还有其他需要请告诉我。'), ('太好了，谢谢你', '很高兴能帮到你！'),
           ('收到', '好的，祝你一切顺利！'), ('辛苦了', '不辛苦，随时为你服务。'), ('谢啦', '不用谢！'),
           ('行，就这样吧', '好的，有需要再叫我。'), ('非常感谢，帮大忙了', '能帮上忙就好，随时找我！'),
           ('好嘞，懂了', '好的，祝你顺利！'), ('OK，没问题了', '好的，有事随时叫我。')],
    'en': [('Thanks!', "You're welcome — ask me anytime."), ('Great, got it.', 'Glad it helps. Anything else?'),
           ('Perfect, thank you', 'Happy to help!'), ('OK, noted.', 'Sure. Let me know if you need more.'),
           ('Cheers', 'Any time!'), ('That is all, thanks.', "You're welcome, have a good day!"),
           ('Nice one, appreciate it.', 'My pleasure!'),
           ("Brilliant, that's what I needed.", 'Great, glad it helped.'), ('Got it, thank you so much.', 'Anytime!'),
           ("Okay, that's everything.", 'Great. Have a nice day!')],
}


@dataclass(frozen=True)
class SynthConfig:
    """How conversations are drawn. Shares are of all conversations of a split unless said otherwise."""
    langs: tuple[str, ...] = ('zh', 'en')
    p_zh: float = 0.5  # with both languages: share of Chinese conversations
    max_tools: int = 4  # tools offered: 1 … max_tools
    p_no_call: float = 0.15
    p_near_miss: float = 0.6  # share of no-call conversations that are near misses (the rest: fixed queries)
    p_multi_turn: float = 0.15
    p_option: float = 0.3  # share of call turns whose template leaves an optional value out that state it
    p_option_train: float | None = None  # train split only: p_option there (None: p_option, as in val and test)
    p_shared_slot_distractor: float = 0.7  # distractors chosen among tools sharing a parameter name
    p_holdout_tool: float = 0.25  # test split only: share of call conversations using a holdout tool
    p_session: float = 0.0  # train split only: share of conversations that are sessions of several queries
    session_turns: tuple[int, int] = (3, 5)  # queries per session
    p_masked: float = 0.0  # train split only: share of conversations with tool and parameter names masked
    split_ratios: tuple[float, float, float] = (0.8, 0.1, 0.1)

    def __post_init__(self) -> None:
        if not self.langs or not set(self.langs) <= {'zh', 'en'}:
            raise ValueError(f'langs must be some of zh, en; got {self.langs!r}')
        for name in ('p_zh', 'p_no_call', 'p_near_miss', 'p_multi_turn', 'p_option', 'p_option_train',
                     'p_shared_slot_distractor', 'p_holdout_tool', 'p_session', 'p_masked'):
            value = getattr(self, name)
            if name == 'p_option_train' and value is None:
                continue
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value <= 1:
                raise ValueError(f'{name} is a share between 0 and 1, got {value!r}')
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


def _expand(template: NoCallQuery, slots: dict, lang: str, split: str) -> list[NoCallQuery]:
    """A near-miss template filled with each value of its pool's share for ``split`` (itself without a pool)."""
    return [template.fill(v) for v in slots[template.slot][lang][split]] if template.slot else [template]


@dataclass
class Resources:
    """The catalog and pools, partitioned once into splits."""
    tools: list[CatalogTool]
    templates: dict  # (tool, lang) -> split -> [QueryTemplate]
    options: dict  # (tool, lang) -> split -> [QueryTemplate]: option clauses
    slots: dict  # slot -> lang -> split -> [values]
    no_call: dict  # lang -> split -> [NoCallQuery]: fixed queries
    near_miss: dict  # lang -> split -> [NoCallQuery]: the split's templates filled with the split's values
    instructions: dict  # lang -> split -> [instruction]
    follow_ups: dict  # lang -> split -> [text]
    thanks: dict  # lang -> split -> [(text, answer)]

    @classmethod
    def load(cls) -> 'Resources':
        tools = load_catalog()
        slot_values = load_slot_values()
        templates, options = {}, {}
        for t in tools:
            for lang in t.queries:
                for target, items, key in ((templates, t.queries[lang], f'{t.name}.{lang}'),
                                           (options, t.options.get(lang, []), f'{t.name}.opt.{lang}')):
                    target[(t.name, lang)] = ({s: items for s in SPLITS} if t.holdout else
                                              _split_items(items, key, ratios=(0.7, 0.15, 0.15)))
        enum_slots = {p.slot for t in tools for p in t.parameters if p.enum}
        pools = {(slot, lang): values for slot, by_lang in slot_values.items() for lang, values in by_lang.items()
                 if slot not in enum_slots and len(values) >= 9 and all(isinstance(v, str) for v in values)}
        slots = {slot: {lang: {s: values for s in SPLITS} for lang, values in by_lang.items()}
                 for slot, by_lang in slot_values.items()}
        for (slot, lang), parts in _split_values(pools).items():
            slots[slot][lang] = parts
        near_miss = {}
        for lang, temps in load_near_miss().items():  # test shares large enough for many distinct test queries
            parts = _split_items(temps, f'nearmiss.{lang}', ratios=(0.65, 0.1, 0.25))
            near_miss[lang] = {s: [q for t in parts[s] for q in _expand(t, slots, lang, s)] for s in SPLITS}
        return cls(tools=tools, templates=templates, options=options, slots=slots,
                   no_call={lang: _split_items(v, f'nocall.{lang}', ratios=(0.6, 0.1, 0.3))
                            for lang, v in load_no_call().items()},
                   near_miss=near_miss,
                   instructions={lang: _split_items(v, f'instr.{lang}') for lang, v in load_instructions().items()},
                   follow_ups={lang: _split_items(v, f'follow.{lang}') for lang, v in FOLLOW_UPS.items()},
                   thanks={lang: _split_items(v, f'thanks.{lang}') for lang, v in THANKS.items()})

    def eligible(self, split: str, lang: str, holdout: bool) -> list[CatalogTool]:
        return [t for t in self.tools if t.holdout == holdout and self.templates.get((t.name, lang), {}).get(split)]


_SYLLABLES = [c + v for c in 'bdfgklmnprstvz' for v in 'aeiou']


def mask_names(conv: Conversation, rng: random.Random) -> Conversation:
    """The conversation with every tool and parameter name replaced by an unfamiliar identifier (the same
    one everywhere: tool list, query prefix, calls and history), descriptions and values untouched."""
    taken = {t.name for t in conv.tools} | {p.name for t in conv.tools for p in t.parameters}

    def fresh(words: int) -> str:
        while True:
            name = '_'.join(''.join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 3))) for _ in range(words))
            if name not in taken:
                taken.add(name)
                return name

    tools = {t.name: fresh(2) for t in conv.tools}
    params: dict[str, str] = {}
    for t in conv.tools:
        for p in t.parameters:
            params.setdefault(p.name, fresh(rng.randint(1, 2)))
    return Conversation(
        id=conv.id, instruction=conv.instruction, lang=conv.lang, meta={**conv.meta, 'masked': True},
        tools=[Tool(tools[t.name], t.description, [replace(p, name=params[p.name]) for p in t.parameters])
               for t in conv.tools],
        turns=[ConversationTurn(turn.query, [ToolCall(tools[c.name], {params.get(k, k): v
                                                                      for k, v in c.arguments.items()},
                                                      observation=c.observation) for c in turn.calls], turn.answer)
               for turn in conv.turns])


class Generator:
    """``Generator(config, seed).conversations(split, n)``: the same arguments give the same data."""

    def __init__(self, config: SynthConfig = SynthConfig(), seed: int = 0, resources: Resources | None = None):
        self.cfg = config
        self.seed = seed
        self.res = resources or Resources.load()
        self._orders: dict[tuple, list] = {}  # (kind, lang, split) -> a pool in its fixed shuffled order
        self._plans: dict[str, list[tuple[tuple[str, str], int]]] = {}  # split -> ((lang, kind), ordinal) by index
        self._counts: dict[str, Counter] = {}

    # -- pieces
    def _fill(self, rng, tool: CatalogTool, template: QueryTemplate, option: QueryTemplate | None, lang: str,
              split: str) -> tuple[str, dict]:
        """Draw a value for each placeholder from the split's pool: the query text and the call arguments."""
        slot = {p.name: p.slot for p in tool.parameters}
        values: dict = {}
        fixed = {**template.fixed, **(option.fixed if option else {})}
        for name in [*template.args, *(option.args if option else [])]:  # two slots of one kind never share a value
            pool = self.res.slots[slot[name]][lang][split]
            taken = [*values.values(), *fixed.values()]
            values[name] = rng.choice([v for v in pool if v not in taken] or pool)
        return tool.fill(template, values, option, lang)

    def _offered(self, rng, main: CatalogTool, lang: str, split: str, avoid: tuple[str, ...] = ()) -> list[CatalogTool]:
        """The main tool plus distractors (never holdout tools outside the test split, never a tool of an
        ``avoid`` category)."""
        k = rng.randint(1, self.cfg.max_tools)
        pool = [t for t in self.res.tools if t.name != main.name and (split == 'test' or not t.holdout)
                and lang in t.queries and t.category not in avoid]
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

    def _call_turn(self, rng, tool: CatalogTool, lang: str, split: str) -> tuple[ConversationTurn, list[str]]:
        """A query to ``tool`` and its call; the ids of the template and of the option clause appended, if any."""
        template = rng.choice(self.res.templates[(tool.name, lang)][split])
        left_out = {p.name for p in tool.parameters if not p.required} - {*template.args, *template.fixed}
        options = [o for o in self.res.options.get((tool.name, lang), {}).get(split, [])
                   if {*o.args, *o.fixed} <= left_out]
        p_option = self.cfg.p_option_train if split == 'train' and self.cfg.p_option_train is not None \
            else self.cfg.p_option
        option = rng.choice(options) if options and rng.random() < p_option else None
        query, args = self._fill(rng, tool, template, option, lang, split)
        result = tool.run(args)
        call = ToolCall(tool.name, args, observation=json.dumps(result, ensure_ascii=False))
        ids = [template.id] + ([option.id] if option else [])
        return ConversationTurn(query, [call], tool.answer_text(lang, args, result)), ids

    def _follow_up(self, rng, tool: CatalogTool, prev: ToolCall, lang: str, split: str) -> ConversationTurn | None:
        param = next(p for p in tool.parameters if p.name == tool.primary)
        options = [v for v in self.res.slots[param.slot][lang][split] if v not in prev.arguments.values()]
        if not options or not isinstance(options[0], str):
            return None
        value = rng.choice(options)
        args = {**prev.arguments, param.name: value}
        result = tool.run(args)
        query = rng.choice(self.res.follow_ups[lang][split]).format(value=value)
        call = ToolCall(tool.name, args, observation=json.dumps(result, ensure_ascii=False))
        return ConversationTurn(query, [call], tool.answer_text(lang, args, result))

    def _distinct(self, kind: str, pool: list, lang: str, split: str, ordinal: int):
        """The ``ordinal``-th item of ``pool`` in a fixed shuffled order: no two no-call conversations of one
        kind, language and split share a query until the pool is used up."""
        key = (kind, lang, split)
        if key not in self._orders:
            self._orders[key] = list(pool)
            _rng(self.seed, 'order', *key).shuffle(self._orders[key])
        order = self._orders[key]
        return order[ordinal % len(order)]

    def _no_call(self, rng, kind: str, lang: str, split: str, ordinal: int) -> tuple[NoCallQuery, list[CatalogTool]]:
        """The ``ordinal``-th query that needs no tool (``near_miss`` or ``fixed``) and the tools offered with
        it: a tool it sits close to when it names one, otherwise a random one that is left out half the time;
        never a tool of a category it avoids."""
        pool = self.res.near_miss[lang][split] if kind == 'near_miss' else self.res.no_call[lang][split]
        item = self._distinct(kind, pool, lang, split, ordinal)
        near = [t for t in self.res.tools if t.name in item.near and (split == 'test' or not t.holdout)
                and lang in t.queries]
        if near:
            return item, self._offered(rng, rng.choice(near), lang, split, item.avoid)
        candidates = [t for t in self.res.eligible(split, lang, False) or self.res.eligible('train', lang, False)
                      if t.category not in item.avoid]
        main = rng.choice(candidates)
        tools = self._offered(rng, main, lang, split, item.avoid)
        if rng.random() < 0.5 and len(tools) > 1:  # the main tool is only a distractor here
            tools = [t for t in tools if t.name != main.name]
        return item, tools

    # -- conversations
    def conversation(self, split: str, index: int) -> Conversation:
        conv = self._conversation(split, index)
        masked = self.cfg.p_masked and _rng(self.seed, split, index, 'mask').random() < self.cfg.p_masked
        if split == 'train' and masked:
            conv = mask_names(conv, _rng(self.seed, split, index, 'names'))
        return conv

    def _plan(self, split: str, index: int) -> tuple[str, str]:
        """The language and kind of conversation ``index``: session, near_miss, fixed (no call), multi_turn or
        single. They come from a random stream of their own, so no-call conversations can be numbered."""
        r = _rng(self.seed, split, index, 'plan')
        cfg = self.cfg
        lang = cfg.langs[0] if len(cfg.langs) == 1 else 'zh' if r.random() < cfg.p_zh else 'en'
        if split == 'train' and cfg.p_session and r.random() < cfg.p_session:
            return lang, 'session'
        roll = r.random()
        if roll < cfg.p_no_call:
            return lang, 'near_miss' if self.res.near_miss[lang][split] and r.random() < cfg.p_near_miss else 'fixed'
        return lang, 'multi_turn' if roll < cfg.p_no_call + cfg.p_multi_turn else 'single'

    def _planned(self, split: str, index: int) -> tuple[str, str, int]:
        """``(lang, kind, ordinal)``: the plan of conversation ``index`` and how many before it share it."""
        plans, counts = self._plans.setdefault(split, []), self._counts.setdefault(split, Counter())
        while len(plans) <= index:
            plan = self._plan(split, len(plans))
            plans.append((plan, counts[plan]))
            counts[plan] += 1
        (lang, kind), ordinal = plans[index]
        return lang, kind, ordinal

    def _conversation(self, split: str, index: int) -> Conversation:
        rng = _rng(self.seed, split, index)
        cfg = self.cfg
        lang, plan, ordinal = self._planned(split, index)
        instruction = check_instruction(rng.choice(self.res.instructions[lang][split]))
        meta = {'split': split, 'lang': lang}
        if plan == 'session':
            tools, turns, pairs = self._session(rng, lang, split)
            last = turns[-1].calls[0].name if turns[-1].calls else None
            meta.update(kind='session', template=pairs[-1][1] if pairs else None, tool=last, holdout=False,
                        pairs=pairs)
            return Conversation(id=f'{split}-{self.seed}-{index}', instruction=instruction,
                                tools=[t.as_tool(lang) for t in tools], turns=turns, lang=lang, meta=meta)
        if plan in ('near_miss', 'fixed'):
            item, tools = self._no_call(rng, plan, lang, split, ordinal)
            turns = [ConversationTurn(item.text, [], item.answer)]
            meta.update(kind='no_call', no_call=plan, template=item.id, tool=None, holdout=False)
        else:
            holdout = split == 'test' and rng.random() < cfg.p_holdout_tool and self.res.eligible(split, lang, True)
            main = rng.choice(self.res.eligible(split, lang, bool(holdout)))
            tools = self._offered(rng, main, lang, split)
            first, ids = self._call_turn(rng, main, lang, split)
            turns, kind, pairs = [first], 'single', [[main.name, i] for i in ids]
            template_id = ids[0]
            if plan == 'multi_turn':
                turn, kind, second_ids = self._second_turn(rng, main, tools, first, lang, split)
                turns.append(turn)
                if second_ids:
                    template_id = second_ids[0]
                    pairs += [[turn.calls[0].name, i] for i in second_ids]
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
        categories = {t.category for t in tools}
        no_call = [q for q in [*self.res.no_call[lang][split], *self.res.near_miss[lang][split]]
                   if not categories & set(q.avoid)]
        turns, pairs = [], []
        for _ in range(rng.randint(*self.cfg.session_turns)):
            if rng.random() < self.cfg.p_no_call:
                item = rng.choice(no_call)
                turns.append(ConversationTurn(item.text, [], item.answer))
            else:
                tool = rng.choice(usable)
                turn, ids = self._call_turn(rng, tool, lang, split)
                turns.append(turn)
                pairs += [[tool.name, i] for i in ids]
        return tools, turns, pairs

    def _second_turn(self, rng, main, tools, first: ConversationTurn, lang, split):
        """(turn, kind, template/option ids): a follow-up, another tool, or a thank-you with no call."""
        others = [t for t in tools if t.name != main.name and self.res.templates.get((t.name, lang), {}).get(split)]
        choice = rng.random()
        if choice < 0.45:
            turn = self._follow_up(rng, main, first.calls[0], lang, split)
            if turn:
                return turn, 'follow_up', []
        if choice < 0.8 and others:
            turn, ids = self._call_turn(rng, rng.choice(others), lang, split)
            return turn, 'second_tool', ids
        text, answer = rng.choice(self.res.thanks[lang][split])
        return ConversationTurn(text, [], answer), 'thanks', []

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
    why: tuple[str, ...] = ()  # the reasons for this mix, one sentence each (notebook 01 lists them)


PROFILE_DATA = {
    'tiny': DataPlan(SynthConfig(), n_train=24, n_val=8, n_test=12, why=('Just enough to exercise every step.',)),
    'cpu': DataPlan(SynthConfig(langs=('zh', 'en'), p_zh=0.5, max_tools=3, p_no_call=0.3, p_session=0.9,
                                session_turns=(4, 6), p_option_train=0.1),
                    n_train=120, n_val=12, n_test=150, answer_share=0.5, train_history=True,
                    why=('Both languages, half the conversations Chinese, at most 3 tools offered.',
                         "Chinese costs SmolLM2's tokenizer more tokens per sample than English (section 5 measures "
                         'how many), so the number of conversations is what the 2-core time budget affords.',
                         'Nine in ten are sessions of several queries to one agent, whose earlier turns are trained '
                         'too: one long sample teaches several decisions.',
                         'Three in ten queries need no tool. With sessions, this cut false calls and call loops in '
                         'the ablations (docs/ablations.md).',
                         'An option clause (a query that states an optional parameter) is in one call turn in ten '
                         'in training and three in ten in the held-out data: with more of them in training, the '
                         'model filled in optional parameters nobody asked for (docs/ablations.md).')),
    'gpu': DataPlan(SynthConfig(), n_train=6000, n_val=300, n_test=500,
                    why=('Both languages, up to 4 tools, thousands of conversations.',)),
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
    """Write ``train.jsonl`` / ``val.jsonl`` (samples), ``test_cases.jsonl`` and the conversations, and
    ``train_ms_agent.jsonl`` / ``val_ms_agent.jsonl``: the same conversations in the original ms_agent prompt
    format (:func:`~helpers.convert.ms_agent_rows`, one row per conversation, for ``--loss_scale react``)."""
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
            ms_agent = ms_agent_rows(convs)
            write_jsonl(out / f'{split}_ms_agent.jsonl', ms_agent)
            summary[split] = {'conversations': len(convs), 'samples': len(rows),
                              'kinds': dict(Counter(r['meta']['kind'] for r in rows)),
                              'langs': dict(Counter(r['meta']['lang'] for r in rows)),
                              'masked_conversations': sum(bool(c.meta.get('masked')) for c in convs),
                              'ms_agent_rows': len(ms_agent)}
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


def plan_cost(plan: DataPlan, tokenizer, seed: int = 0, resources: Resources | None = None) -> dict:
    """What one epoch of ``plan``'s training split costs with ``tokenizer``'s chat template: samples per
    language, mean tokens per sample and tokens per epoch, for the AgentFabric rows and the ms_agent rows
    of the same conversations."""
    convs = Generator(plan.config, seed, resources).conversations('train', plan.n_train)
    out = {'conversations': len(convs), 'conversation_langs': dict(Counter(c.lang for c in convs))}
    for name, rows in (('agentfabric', training_rows(convs, plan.answer_share, seed, plan.train_history)),
                       ('ms_agent', ms_agent_rows(convs))):
        lengths = token_lengths(rows, tokenizer)
        out[name] = {'samples': len(rows), 'langs': dict(Counter(r['meta']['lang'] for r in rows)),
                     'mean_tokens': round(sum(lengths) / max(len(lengths), 1), 1), 'tokens_per_epoch': sum(lengths),
                     'max_tokens': max(lengths, default=0)}
    return out
