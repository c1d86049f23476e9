"""High-level causal models and the counterfactual datasets built from them.

This module owns `CausalModel` (a DAG of named variables computed by pure Python
functions, with interventions and interchange counterfactuals), the three task models of
causal-abstraction work (`ioi_model`, `arithmetic_model`, `mcqa_model`), and their
dataset builders (`ioi_pairs`, `arithmetic_pairs`, `mcqa_pairs`, and `pairs`, which picks
one by name). A builder draws (base, source) inputs, writes them as prompts, asks the
causal model for the counterfactual output (the base run with `variable` set to its value
on the source), and returns a `CounterfactualData` whose `labels` are that output as the
token the language model would write next after the base prompt.

Labels are read in context: the answer text is appended to the prompt and the token
after the prompt's tokens is the label, so a merge across the boundary or a leading-space
token is seen (such rows are dropped). Prompts are tokenized with the model's BOS
convention and right-padded; positions are per row (the last real token of each prompt).
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

import numpy as np

from mechjax.causal.data import CounterfactualData, pad_rows
from mechjax.errors import InputError
from mechjax.tasks.batch import _encode, _is_single
from mechjax.tasks.ioi import BABA_TEMPLATES, NAMES, OBJECTS, PLACES, _fill

__all__ = [
    "CausalModel",
    "MCQA_COLOURS",
    "MCQA_OBJECTS",
    "arithmetic_model",
    "arithmetic_pairs",
    "ioi_model",
    "ioi_pairs",
    "mcqa_model",
    "mcqa_pairs",
    "pairs",
]

Variables = Mapping[str, tuple[tuple[str, ...], Callable[..., Any]]]
_TRIES = 200  # draws per requested row before a builder gives up


# ------------------------------------------------------------------------- causal models


@dataclasses.dataclass(frozen=True, eq=False)  # holds functions: hashed by identity
class CausalModel:
    """A high-level causal model: inputs, then variables computed in order from parents.

    Attributes:
      name: the task's name (`CounterfactualData.task`).
      inputs: the names of the exogenous inputs.
      variables: ordered name -> (parent names, fn); `fn(*parent values)` is the value.
        Parents are inputs or earlier variables.
      output: the variable the model answers with.
    Inputs count as variables for interventions and counterfactuals.
    """

    name: str
    inputs: tuple[str, ...]
    variables: Variables
    output: str

    def __post_init__(self):
        object.__setattr__(self, "inputs", tuple(self.inputs))
        object.__setattr__(self, "variables", MappingProxyType(dict(self.variables)))
        seen = list(self.inputs)
        if len(set(seen)) != len(seen):
            raise InputError(f"causal model {self.name!r}: repeated input names {seen}")
        for var, spec in self.variables.items():
            if var in seen:
                raise InputError(f"causal model {self.name!r}: {var!r} is defined twice")
            if not (isinstance(spec, tuple) and len(spec) == 2 and callable(spec[1])):
                raise InputError(
                    f"causal model {self.name!r}: variable {var!r} must be (parents, fn), "
                    f"got {spec!r}"
                )
            missing = [p for p in spec[0] if p not in seen]
            if missing:
                raise InputError(
                    f"causal model {self.name!r}: parents {missing} of {var!r} are not inputs "
                    f"or earlier variables; valid: {seen}"
                )
            seen.append(var)
        if self.output not in self.variables:
            raise InputError(
                f"causal model {self.name!r}: output {self.output!r} is not a variable; "
                f"valid: {list(self.variables)}"
            )

    @property
    def names(self) -> tuple[str, ...]:
        """Every variable an intervention may set: the inputs, then the variables."""
        return self.inputs + tuple(self.variables)

    def check_variable(self, name: str) -> str:
        """`name` if it is an input or variable, else InputError listing the valid ones."""
        if name not in self.names:
            raise InputError(
                f"causal model {self.name!r} has no variable {name!r}; valid: {list(self.names)}"
            )
        return name

    def _check_inputs(self, inputs: Mapping[str, Any]) -> None:
        unknown = [k for k in inputs if k not in self.inputs]
        missing = [k for k in self.inputs if k not in inputs]
        if unknown or missing:
            what = f"unknown inputs {unknown}" if unknown else f"missing inputs {missing}"
            raise InputError(
                f"causal model {self.name!r}: {what}; valid inputs: {list(self.inputs)}"
            )

    def run(
        self, inputs: Mapping[str, Any], interventions: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """Every input and variable's value; an intervened one takes the given value (its
        fn is not called) and its children read that value."""
        self._check_inputs(inputs)
        fixed = dict(interventions or {})
        for k in fixed:
            self.check_variable(k)
        values = {k: fixed.get(k, inputs[k]) for k in self.inputs}
        for var, (parents, fn) in self.variables.items():
            values[var] = fixed[var] if var in fixed else fn(*(values[p] for p in parents))
        return values

    def counterfactual(
        self, base_inputs: Mapping[str, Any], source_inputs: Mapping[str, Any], variable: str
    ) -> Any:
        """The output on `base_inputs` with `variable` set to its value on `source_inputs`
        (an interchange intervention)."""
        self.check_variable(variable)
        value = self.run(source_inputs)[variable]
        return self.run(base_inputs, {variable: value})[self.output]


def ioi_model() -> CausalModel:
    """IOI: `name_1`, `name_2` are the first two names in text order; `io_first` is True
    for ABBA (the indirect object is `name_1`). `io_position` (0/1) picks the IO among
    the two names; `answer` = `io_name`."""
    return CausalModel(
        name="ioi",
        inputs=("name_1", "name_2", "io_first"),
        variables={
            "io_position": (("io_first",), lambda io_first: 0 if io_first else 1),
            "io_name": (("name_1", "name_2", "io_position"), lambda n1, n2, i: (n1, n2)[i]),
            "answer": (("io_name",), lambda io_name: io_name),
        },
        output="answer",
    )


def arithmetic_model() -> CausalModel:
    """Addition of non-negative ints `a`, `b` digit by digit: `ones`, `carry` (out of the
    ones), `tens` (everything above the ones, carry included), `sum` = tens * 10 + ones."""
    return CausalModel(
        name="arithmetic",
        inputs=("a", "b"),
        variables={
            "ones": (("a", "b"), lambda a, b: (a % 10 + b % 10) % 10),
            "carry": (("a", "b"), lambda a, b: int(a % 10 + b % 10 >= 10)),
            "tens": (("a", "b", "carry"), lambda a, b, carry: a // 10 + b // 10 + carry),
            "sum": (("tens", "ones"), lambda tens, ones: tens * 10 + ones),
        },
        output="sum",
    )


def _pointer(options: tuple[str, ...], correct: str) -> int:
    if correct not in options:
        raise InputError(f"the correct option {correct!r} is not one of {list(options)}")
    return list(options).index(correct)


def mcqa_model() -> CausalModel:
    """A four-option question: `pointer` = index of `correct` in `options`; `letter` =
    "ABCD"[pointer]."""
    return CausalModel(
        name="mcqa",
        inputs=("options", "correct"),
        variables={
            "pointer": (("options", "correct"), _pointer),
            "letter": (("pointer",), lambda pointer: "ABCD"[pointer]),
        },
        output="letter",
    )


# ------------------------------------------------------------------------------ helpers


@dataclasses.dataclass(frozen=True)
class _Pair:
    base_text: str
    source_text: str
    label: int
    base_label: int
    info: dict[str, Any]


def _next_token(tokenizer, prompt: str, answer: str, whole: bool = True) -> int | None:
    """The first token of `answer` written right after `prompt`, or None if the prompt's
    tokens are not a prefix of (prompt + answer)'s, the token is a bare space, or (with
    `whole`) the answer is not that one token."""
    p = _encode(tokenizer, prompt, add_bos=False)
    rest = _encode(tokenizer, prompt + answer, add_bos=False)
    if rest[: len(p)] != p or len(rest) == len(p):
        return None
    rest = rest[len(p) :]
    piece = tokenizer.decode(rest[:1]).strip()
    if not piece or not answer.strip().startswith(piece):
        return None  # a bare-space token, or an unknown-word token
    if whole and (len(rest) != 1 or piece != answer.strip()):
        return None
    return rest[0]


def _pair(
    tokenizer,
    model: CausalModel,
    variable: str,
    base: dict,
    source: dict,
    texts: tuple[str, str],
    say: Callable[[Any], str],
    whole: bool = True,
    info: dict | None = None,
) -> _Pair | None:
    """One row: `texts` = (base prompt, source prompt); `say(value)` is the answer text
    after the prompt. None if a label is not one token or the counterfactual is undefined."""
    try:
        cf = model.counterfactual(base, source, variable)
    except InputError:
        return None  # e.g. the base's correct option is not among the source's options
    own = model.run(base)[model.output]
    label = _next_token(tokenizer, texts[0], say(cf), whole)
    base_label = _next_token(tokenizer, texts[0], say(own), whole)
    if label is None or base_label is None:
        return None
    return _Pair(texts[0], texts[1], label, base_label, dict(info or {}))


def _collect(draw: Callable[[], _Pair | None], n: int, task: str, variable: str) -> list:
    """The first `n` rows `draw` gives, or InputError after `n * _TRIES` draws."""
    if not isinstance(n, int) or n < 1:
        raise InputError(f"n must be a positive int, got {n!r}")
    out = []
    for _ in range(n * _TRIES):
        if len(out) == n:
            break
        row = draw()
        if row is not None:
            out.append(row)
    if len(out) < n:
        raise InputError(
            f"{task} pairs for {variable!r}: only {len(out)} of the {n} requested rows have "
            "one-token labels for this tokenizer; ask for fewer rows or change the settings"
        )
    return out


def _pad_id(tokenizer) -> int:
    for attr in ("pad_token_id", "eos_token_id"):
        value = getattr(tokenizer, attr, None)
        if value is not None:
            return int(value)
    return 0


def _data(rows: list[_Pair], tokenizer, variable: str, task: str, **extra) -> CounterfactualData:
    """Tokenize with the model's BOS convention, right-pad, point at the last tokens."""
    base_ids = [_encode(tokenizer, r.base_text) for r in rows]
    source_ids = [_encode(tokenizer, r.source_text) for r in rows]
    base, base_mask = pad_rows(base_ids, _pad_id(tokenizer))
    source, source_mask = pad_rows(source_ids, _pad_id(tokenizer))
    labels = np.asarray([r.label for r in rows], np.int32)
    base_labels = np.asarray([r.base_label for r in rows], np.int32)
    info: dict[str, Any] = {
        "base_text": np.asarray([r.base_text for r in rows]),
        "source_text": np.asarray([r.source_text for r in rows]),
        "changes": labels != base_labels,
    }
    info.update({k: np.asarray([r.info[k] for r in rows]) for k in rows[0].info})
    info.update(extra)
    return CounterfactualData(
        base=base,
        source=source,
        base_mask=base_mask,
        source_mask=source_mask,
        base_positions=np.asarray([[len(x) - 1] for x in base_ids], np.int32),
        source_positions=np.asarray([[len(x) - 1] for x in source_ids], np.int32),
        labels=labels,
        base_labels=base_labels,
        variable=variable,
        task=task,
        info=info,
    )


# ------------------------------------------------------------------------------ IOI


def _ioi_orders(template: str) -> tuple[str, str]:
    """(ABBA, BABA) forms of an IOI template: the first [A] and the first [B] swapped."""
    if template.count("[A]") != 1 or template.count("[B]") != 2:
        raise InputError(
            f"IOI template {template!r} must have one [A] (IO) and two [B] (S1, S2), and "
            "may have [PLACE] and [OBJECT]"
        )
    swapped = template.replace("[B]", "[X]", 1).replace("[A]", "[B]", 1).replace("[X]", "[A]", 1)
    abba_first = template.index("[A]") < template.index("[B]")
    return (template, swapped) if abba_first else (swapped, template)


def ioi_pairs(
    tokenizer,
    variable: str = "io_position",
    n: int = 128,
    seed: int = 0,
    template: str | None = None,
) -> CounterfactualData:
    """IOI interchange pairs of one template, base and source independently ABBA or BABA.

    The four names of a pair (base IO, S; source IO, S) are distinct single-token names
    (with their leading space). For `io_position` about half the pairs change the label
    (the orders differ: the answer becomes the base's S); for `io_name` every pair does
    (the source's IO). labels = " " + counterfactual name, base_labels = " " + base IO.
    Positions: the last token of each prompt (k = 1).

    Args:
      template: an IOI template with [A] (IO), [B] twice (S1, S2), [PLACE], [OBJECT];
        default "Then, [B] and [A] went to the [PLACE]. [B] gave a [OBJECT] to". Its
        other order is made by swapping the first [A] and [B].
    info: base_text, source_text, changes, and per side io, s, io_first.
    """
    model = ioi_model()
    model.check_variable(variable)
    template = BABA_TEMPLATES[0] if template is None else template
    abba, baba = _ioi_orders(template)
    names = [x for x in NAMES if _is_single(tokenizer, " " + x)]
    if len(names) < 4:
        raise InputError(f"ioi_pairs: the tokenizer has {len(names)} single-token names, need 4")
    rng = random.Random(seed)

    def side(io: str, s: str) -> tuple[dict, str, dict]:
        io_first = rng.random() < 0.5
        text, _ = _fill(abba if io_first else baba, io, s, rng.choice(PLACES), rng.choice(OBJECTS))
        inputs = {"name_1": io if io_first else s, "name_2": s if io_first else io}
        return {**inputs, "io_first": io_first}, text, {"io": io, "s": s, "io_first": io_first}

    def draw() -> _Pair | None:
        b_io, b_s, s_io, s_s = rng.sample(names, 4)
        (base, b_text, b_info), (source, s_text, s_info) = side(b_io, b_s), side(s_io, s_s)
        info = {f"base_{k}": v for k, v in b_info.items()}
        info.update({f"source_{k}": v for k, v in s_info.items()})
        texts = (b_text, s_text)
        return _pair(tokenizer, model, variable, base, source, texts, lambda x: " " + x, True, info)

    rows = _collect(draw, n, "ioi", variable)
    return _data(rows, tokenizer, variable, model.name, template=template)


# ------------------------------------------------------------------------- arithmetic


def _arith_spacing(tokenizer, template: str, space: bool | None) -> tuple[str, str]:
    """(suffix added to every prompt, prefix of the answer text).

    Default (`space=None`): the answer follows a glued "=" ("{a}+{b}=") or trailing
    whitespace with no space, anything else ("{a} + {b} =", "A:") with one. A tokenizer
    that writes " 5" as ' ', '5' (digits split, SmolLM2) gets the space in the prompt and
    the bare digits as the answer, as `mechjax.tasks.arithmetic` does.
    """
    if space is None:
        glued = template.endswith("=") and not template.endswith(" =")
        space = not (glued or template[-1:].isspace())
    if not space:
        return "", ""
    probe = template.format(a=1, b=2)
    ids = _encode(tokenizer, probe + " 3", add_bos=False)[len(_encode(tokenizer, probe, False)) :]
    if ids and not tokenizer.decode(ids[:1]).strip():
        return " ", ""
    return "", " "


def arithmetic_pairs(
    tokenizer,
    variable: str = "a",
    n: int = 128,
    seed: int = 0,
    max_operand: int = 9,
    template: str = "{a}+{b}=",
    space: bool | None = None,
) -> CounterfactualData:
    """Addition interchange pairs: operands drawn uniformly from 0..max_operand, the
    source's operands differing from the base's.

    Labels: with one-digit operands (`max_operand <= 9`) the base sum and the
    counterfactual sum are both single-digit (< 10) and one token, rows otherwise are
    redrawn; `carry` and `tens` are then 0 in every pair, so they need `max_operand >= 10`.
    With `max_operand >= 10` (two-digit operands, any variable) a label is the FIRST token
    of the answer: on a digit-per-token tokenizer (SmolLM2) the leading digit of the sum,
    so a `ones` swap changes it only where the sums have one digit (see info["changes"]).
    The answer is written as the model would continue the prompt: no space after a glued
    "=" (the default "{a}+{b}=" -> "5"), one space after "... =" or "A:" (moved into the
    prompt when the tokenizer writes the space as its own token; `_arith_spacing`);
    `space` overrides the choice. Positions: the last token of each prompt (k = 1);
    base and source lengths may differ ("12+3=" vs "4+5=").
    info: base_text, source_text, changes, base_a, base_b, source_a, source_b.
    """
    model = arithmetic_model()
    model.check_variable(variable)
    if "{a}" not in template or "{b}" not in template:
        raise InputError(f"arithmetic template {template!r} must contain {{a}} and {{b}}")
    if not isinstance(max_operand, int) or max_operand < 1:
        raise InputError(f"max_operand must be an int >= 1, got {max_operand!r}")
    whole = max_operand <= 9
    if whole and variable in ("carry", "tens"):
        raise InputError(
            f"variable {variable!r} is 0 in every pair of one-digit operands with a one-digit "
            "sum, so swapping it changes nothing; pass max_operand >= 10 (two-digit operands, "
            "labelled by the answer's first token)"
        )
    suffix, lead = _arith_spacing(tokenizer, template, space)
    rng = random.Random(seed)

    def draw() -> _Pair | None:
        ba, bb, sa, sb = (rng.randint(0, max_operand) for _ in range(4))
        if (ba, bb) == (sa, sb):
            return None
        base, source = {"a": ba, "b": bb}, {"a": sa, "b": sb}
        if whole and max(ba + bb, model.counterfactual(base, source, variable)) >= 10:
            return None
        texts = (template.format(a=ba, b=bb) + suffix, template.format(a=sa, b=sb) + suffix)
        info = {"base_a": ba, "base_b": bb, "source_a": sa, "source_b": sb}
        return _pair(
            tokenizer, model, variable, base, source, texts, lambda x: f"{lead}{x}", whole, info
        )

    rows = _collect(draw, n, "arithmetic", variable)
    return _data(rows, tokenizer, variable, model.name, template=template)


# ------------------------------------------------------------------------------ MCQA

MCQA_OBJECTS = ("ball", "car", "shirt", "hat", "cup", "book", "chair", "bike", "door", "box")
MCQA_COLOURS = tuple("red blue green yellow black white purple orange pink brown".split())


def _mcqa_prompt(obj: str, colour: str, options: tuple[str, ...]) -> str:
    lines = "".join(f"{letter}. {opt}\n" for letter, opt in zip("ABCD", options))
    return f"The {obj} is {colour}. What colour is the {obj}?\n{lines}Answer:"


def mcqa_pairs(
    tokenizer, variable: str = "pointer", n: int = 128, seed: int = 0
) -> CounterfactualData:
    """Colour questions, base and source drawn independently (object, colour, options):

        The ball is red. What colour is the ball?
        A. blue
        B. red
        C. green
        D. yellow
        Answer:

    The correct option's letter is uniform over ABCD. labels = " " + counterfactual letter
    (" A" is one token after "Answer:" for SmolLM2), base_labels = " " + base letter; a
    `pointer` swap changes the label in about 3/4 of the pairs. Swapping `options` or
    `correct` keeps only pairs where the counterfactual is defined (the correct colour is
    among the options). Positions: the last token of each prompt (k = 1).
    info: base_text, source_text, changes, and per side object, colour, options, pointer.
    """
    model = mcqa_model()
    model.check_variable(variable)
    rng = random.Random(seed)

    def side() -> tuple[dict, str, dict]:
        obj, colour = rng.choice(MCQA_OBJECTS), rng.choice(MCQA_COLOURS)
        options = rng.sample([c for c in MCQA_COLOURS if c != colour], 3)
        pointer = rng.randrange(4)
        options.insert(pointer, colour)
        opts = tuple(options)
        info = {"object": obj, "colour": colour, "options": opts, "pointer": pointer}
        return {"options": opts, "correct": colour}, _mcqa_prompt(obj, colour, opts), info

    def draw() -> _Pair | None:
        (base, b_text, b_info), (source, s_text, s_info) = side(), side()
        info = {f"base_{k}": v for k, v in b_info.items()}
        info.update({f"source_{k}": v for k, v in s_info.items()})
        texts = (b_text, s_text)
        return _pair(tokenizer, model, variable, base, source, texts, lambda x: " " + x, True, info)

    rows = _collect(draw, n, "mcqa", variable)
    return _data(rows, tokenizer, variable, model.name)


# ------------------------------------------------------------------------------ dispatch

_BUILDERS: dict[str, Callable[..., CounterfactualData]] = {
    "ioi": ioi_pairs,
    "arithmetic": arithmetic_pairs,
    "mcqa": mcqa_pairs,
}


def pairs(
    task: str,
    tokenizer,
    variable: str | None = None,
    n: int = 128,
    seed: int = 0,
    **kw,
) -> CounterfactualData:
    """The counterfactual dataset of `task` ("ioi", "arithmetic", "mcqa"); `variable`
    None is the builder's default; `kw` go to the builder."""
    if task not in _BUILDERS:
        raise InputError(f"unknown causal task {task!r}; valid: {list(_BUILDERS)}")
    if variable is not None:
        kw["variable"] = variable
    return _BUILDERS[task](tokenizer, n=n, seed=seed, **kw)
