"""Instruction checkers in the style of IFEval, in pure Python (standard library only).

IFEval (Zhou et al. 2023, "Instruction-Following Evaluation for Large Language Models",
arXiv:2311.07911) scores a response by "verifiable instructions": each instruction id
(e.g. ``punctuation:no_comma``) comes with keyword arguments (e.g. ``{"num_bullets": 3}``)
and a deterministic check. This module re-implements those checks from their published
definitions, so that steering experiments can be scored offline:

- `check` is IFEval's *strict* test of one instruction (an empty or all-whitespace
  response never passes, as in IFEval's evaluation loop);
- `check_loose` is IFEval's *loose* test: the strict check on any of eight variants of the
  response (as is, without its first line, without its last line, without both, and each
  of these with every ``*`` removed);
- `follow_all` is IFEval's "follow all instructions" for one response.

What is not checked offline:

- ``language:response_language`` needs a language identifier (IFEval uses ``langdetect``),
  which is not available offline; it is listed in `UNCHECKABLE` and raises
  `InstructionError`.
- ``change_case:english_lowercase`` / ``change_case:english_capital`` ask for an English
  response in lower / upper case. Only the case is checked (``str.islower`` /
  ``str.isupper``, as in IFEval: at least one cased character, none of the other case);
  the "English" part is not.

Tokenisation, where IFEval uses nltk:

- words (`count_words`, ``length_constraints:number_words``) are runs of ``\\w`` characters,
  as nltk's ``RegexpTokenizer(r"\\w+")`` that IFEval uses;
- ``change_case:capital_word_frequency`` counts tokens with ``str.isupper``; IFEval
  tokenises with ``nltk.word_tokenize``, approximated here by runs of ``\\w`` joined by
  internal hyphens, apostrophes or periods ("WELL-KNOWN", "U.S", "DON'T" are one token
  each; nltk splits "DON'T" into "DO" and "N'T");
- sentences (`split_sentences`, ``length_constraints:number_sentences``) use this
  module's own rule: a sentence ends at a run of ``.``, ``!`` or ``?`` (optionally followed
  by closing quotes or brackets) that is followed by the end of the text, or by whitespace
  and then an uppercase letter, a digit, or an opening quote or bracket. A ``.`` does not
  end a sentence after a common abbreviation (Mr. Mrs. Ms. Dr. Prof. St. Jr. Sr. vs. etc.
  e.g. i.e. ...) or after single-letter initials and dotted acronyms ("J.", "U.S.").
  A blank line also ends a sentence (headings and bullet lines without punctuation).

Keywords, forbidden words and section splitters are matched literally (``re.escape``),
where IFEval interpolates them into regular expressions unescaped; the two agree on plain
words. As in IFEval, the postscript pattern (e.g. ``\\s*p\\.\\s?s\\..*$``) is not anchored to a
line start: a marker in mid-line counts too.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from mechjax.errors import InputError

__all__ = [
    "CHECKABLE",
    "UNCHECKABLE",
    "InstructionError",
    "check",
    "check_loose",
    "count_words",
    "follow_all",
    "require_checkable",
    "split_sentences",
]


class InstructionError(InputError):
    """An instruction id without a checker, or keyword arguments that do not fit it."""


RELATIONS: tuple[str, ...] = ("less than", "at least")

UNCHECKABLE: dict[str, str] = {
    "language:response_language": "needs a language identifier, not available offline",
}

# --------------------------------------------------------------------------------------
# Tokenisation
# --------------------------------------------------------------------------------------

_WORD = re.compile(r"\w+")
_NLTK_LIKE_TOKEN = re.compile(r"\w+(?:[-'’.]\w+)*")

_ABBREVIATIONS = frozenset(
    "mr mrs ms dr prof st jr sr vs etc e.g i.e cf al approx no fig inc ltd co corp dept est "
    "jan feb mar apr jun jul aug sep sept oct nov dec mt ave".split()
)
_TERMINATOR = re.compile(r"[.!?]+[\"'”’)\]]*")
_OPENERS = "\"'“‘([{"
_BLANK_LINE = re.compile(r"\n[ \t]*\n\s*")


def count_words(text: str) -> int:
    """The number of words in `text`: runs of ``\\w`` characters (IFEval's ``\\w+``)."""
    return len(_WORD.findall(text))


def _ends_in_abbreviation(text: str, dot: int) -> bool:
    """Whether the ``.`` at index `dot` closes an abbreviation, an initial or an acronym."""
    start = dot
    while start > 0 and not text[start - 1].isspace():
        start -= 1
    word = text[start : dot + 1].lower().lstrip("\"'“‘([{")
    if word[:-1] in _ABBREVIATIONS:
        return True
    return re.fullmatch(r"(?:[^\W\d_]\.)+", word) is not None  # "j.", "u.s.", "e.g."


def _split_block(block: str) -> list[str]:
    """Split one block (no blank lines inside) into sentences at terminators."""
    out: list[str] = []
    start = 0
    for m in _TERMINATOR.finditer(block):
        end = m.end()
        rest = block[end:]
        if rest.strip():
            if not rest[:1].isspace():
                continue
            nxt = rest.lstrip()[0]
            if not (nxt.isupper() or nxt.isdigit() or nxt in _OPENERS):
                continue
        if m.group().startswith(".") and not set("!?") & set(m.group()):
            if _ends_in_abbreviation(block, m.start()):
                continue
        piece = block[start:end].strip()
        if piece:
            out.append(piece)
        start = end
    tail = block[start:].strip()
    if tail:
        out.append(tail)
    return out


def split_sentences(text: str) -> list[str]:
    """Split `text` into sentences (stripped, none empty); see the module docstring's rule.

    >>> split_sentences("Dr. Smith arrived. He sat down! Did he eat? Yes.")
    ['Dr. Smith arrived.', 'He sat down!', 'Did he eat?', 'Yes.']
    """
    sentences: list[str] = []
    for block in _BLANK_LINE.split(text):
        sentences.extend(_split_block(block))
    return sentences


# --------------------------------------------------------------------------------------
# Checkers: each takes the response and its validated keyword arguments
# --------------------------------------------------------------------------------------


def _compare(count: int, relation: str, target: int) -> bool:
    return count < target if relation == "less than" else count >= target


def _english_lowercase(r: str) -> bool:
    return r.islower()


def _english_capital(r: str) -> bool:
    return r.isupper()


def _capital_word_frequency(r: str, capital_frequency: int, capital_relation: str) -> bool:
    n = sum(1 for tok in _NLTK_LIKE_TOKEN.findall(r) if tok.isupper())
    return _compare(n, capital_relation, capital_frequency)


def _end_checker(r: str, end_phrase: str) -> bool:
    return r.strip().strip('"').lower().endswith(end_phrase.strip().lower())


def _quotation(r: str) -> bool:
    s = r.strip()
    return len(s) > 1 and s[0] == '"' and s[-1] == '"'


def _no_comma(r: str) -> bool:
    return "," not in r


def _json_format(r: str) -> bool:
    s = r.strip()
    for fence in ("```json", "```Json", "```JSON", "```"):
        if s.startswith(fence):
            s = s[len(fence) :]
            break
    if s.endswith("```"):
        s = s[:-3]
    try:
        json.loads(s.strip())
    except ValueError:
        return False
    return True


def _title(r: str) -> bool:
    return any(t[2:-2].strip() for t in re.findall(r"<<[^\n]+>>", r))


def _number_highlighted_sections(r: str, num_highlights: int) -> bool:
    single = [h for h in re.findall(r"\*[^\n*]*\*", r) if h.strip("*").strip()]
    double = [h for h in re.findall(r"\*\*[^\n*]*\*\*", r) if h[2:-2].strip()]
    return len(single) + len(double) >= num_highlights


def _number_bullet_lists(r: str, num_bullets: int) -> bool:
    stars = re.findall(r"^\s*\*[^*].*$", r, flags=re.MULTILINE)
    dashes = re.findall(r"^\s*-.*$", r, flags=re.MULTILINE)
    return len(stars) + len(dashes) == num_bullets


def _multiple_sections(r: str, section_spliter: str, num_sections: int) -> bool:
    parts = re.split(r"\s?" + re.escape(section_spliter) + r"\s?\d+\s?", r)
    return len(parts) - 1 >= num_sections


_CONSTRAINED = ("My answer is yes.", "My answer is no.", "My answer is maybe.")


def _constrained_response(r: str) -> bool:
    s = r.strip()
    return any(option in s for option in _CONSTRAINED)


def _existence(r: str, keywords: list[str]) -> bool:
    return all(re.search(re.escape(k), r, flags=re.IGNORECASE) for k in keywords)


def _forbidden_words(r: str, forbidden_words: list[str]) -> bool:
    return not any(
        re.search(r"\b" + re.escape(w) + r"\b", r, flags=re.IGNORECASE) for w in forbidden_words
    )


def _keyword_frequency(r: str, keyword: str, frequency: int, relation: str) -> bool:
    n = len(re.findall(re.escape(keyword), r, flags=re.IGNORECASE))
    return _compare(n, relation, frequency)


def _letter_frequency(r: str, letter: str, let_frequency: int, let_relation: str) -> bool:
    return _compare(r.lower().count(letter.lower()), let_relation, let_frequency)


def _number_words(r: str, num_words: int, relation: str) -> bool:
    return _compare(count_words(r), relation, num_words)


def _number_sentences(r: str, num_sentences: int, relation: str) -> bool:
    return _compare(len(split_sentences(r)), relation, num_sentences)


def _count_nonempty_parts(parts: Sequence[str]) -> int | None:
    """Non-empty parts, or None if an empty part sits anywhere but first or last."""
    n = len(parts)
    for i, part in enumerate(parts):
        if not part.strip():
            if i in (0, len(parts) - 1):
                n -= 1
            else:
                return None
    return n


def _number_paragraphs(r: str, num_paragraphs: int) -> bool:
    n = _count_nonempty_parts(re.split(r"\s?\*\*\*\s?", r))
    return n == num_paragraphs


def _nth_paragraph_first_word(
    r: str, num_paragraphs: int, nth_paragraph: int, first_word: str
) -> bool:
    paragraphs = r.split("\n\n")
    n = sum(1 for p in paragraphs if p.strip())
    if not 1 <= nth_paragraph <= n:
        return False
    paragraph = paragraphs[nth_paragraph - 1].strip()
    if not paragraph:
        return False
    word = paragraph.split()[0].lstrip("'").lstrip('"')
    head = re.match(r"[^.,?!'\"]*", word)
    found = head.group().lower() if head else ""
    return n == num_paragraphs and found == first_word.strip().lower()


def _postscript(r: str, postscript_marker: str) -> bool:
    marker = postscript_marker.strip()
    if marker == "P.P.S":
        pattern = r"\s*p\.\s?p\.\s?s.*$"
    elif marker == "P.S.":
        pattern = r"\s*p\.\s?s\..*$"
    else:
        pattern = r"\s*" + re.escape(marker.lower()) + r".*$"
    return bool(re.findall(pattern, r.lower(), flags=re.MULTILINE))


def _number_placeholders(r: str, num_placeholders: int) -> bool:
    return len(re.findall(r"\[.*?\]", r)) >= num_placeholders


def _repeat_prompt(r: str, prompt_to_repeat: str) -> bool:
    return r.strip().lower().startswith(prompt_to_repeat.strip().lower())


def _two_responses(r: str) -> bool:
    parts = r.split("******")
    if _count_nonempty_parts(parts) is None:
        return False
    answers = [p.strip() for p in parts if p.strip()]
    return len(answers) == 2 and answers[0] != answers[1]


# --------------------------------------------------------------------------------------
# Registry and keyword validation
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Spec:
    fn: Callable[..., bool]
    args: Mapping[str, type] = field(default_factory=dict)  # name -> int | str | list


_SPECS: dict[str, _Spec] = {
    "change_case:english_lowercase": _Spec(_english_lowercase),
    "change_case:english_capital": _Spec(_english_capital),
    "change_case:capital_word_frequency": _Spec(
        _capital_word_frequency, {"capital_frequency": int, "capital_relation": str}
    ),
    "startend:end_checker": _Spec(_end_checker, {"end_phrase": str}),
    "startend:quotation": _Spec(_quotation),
    "punctuation:no_comma": _Spec(_no_comma),
    "detectable_format:json_format": _Spec(_json_format),
    "detectable_format:title": _Spec(_title),
    "detectable_format:number_highlighted_sections": _Spec(
        _number_highlighted_sections, {"num_highlights": int}
    ),
    "detectable_format:number_bullet_lists": _Spec(_number_bullet_lists, {"num_bullets": int}),
    "detectable_format:multiple_sections": _Spec(
        _multiple_sections, {"section_spliter": str, "num_sections": int}
    ),
    "detectable_format:constrained_response": _Spec(_constrained_response),
    "keywords:existence": _Spec(_existence, {"keywords": list}),
    "keywords:forbidden_words": _Spec(_forbidden_words, {"forbidden_words": list}),
    "keywords:frequency": _Spec(
        _keyword_frequency, {"keyword": str, "frequency": int, "relation": str}
    ),
    "keywords:letter_frequency": _Spec(
        _letter_frequency, {"letter": str, "let_frequency": int, "let_relation": str}
    ),
    "length_constraints:number_words": _Spec(_number_words, {"num_words": int, "relation": str}),
    "length_constraints:number_sentences": _Spec(
        _number_sentences, {"num_sentences": int, "relation": str}
    ),
    "length_constraints:number_paragraphs": _Spec(_number_paragraphs, {"num_paragraphs": int}),
    "length_constraints:nth_paragraph_first_word": _Spec(
        _nth_paragraph_first_word,
        {"num_paragraphs": int, "nth_paragraph": int, "first_word": str},
    ),
    "detectable_content:postscript": _Spec(_postscript, {"postscript_marker": str}),
    "detectable_content:number_placeholders": _Spec(
        _number_placeholders, {"num_placeholders": int}
    ),
    "combination:repeat_prompt": _Spec(_repeat_prompt, {"prompt_to_repeat": str}),
    "combination:two_responses": _Spec(_two_responses),
}

CHECKABLE: tuple[str, ...] = tuple(sorted(_SPECS))

_RELATION_KEYS = frozenset({"relation", "capital_relation", "let_relation"})


def _unknown_message(instruction_id: object) -> str:
    listing = f"checkable ids: {', '.join(CHECKABLE)}"
    reason = UNCHECKABLE.get(instruction_id) if isinstance(instruction_id, str) else None
    if reason is not None:
        return f"instruction {instruction_id!r} cannot be checked: {reason}; {listing}"
    near = difflib.get_close_matches(str(instruction_id), CHECKABLE, n=1)
    hint = f" (did you mean {near[0]!r}?)" if near else ""
    return f"unknown instruction id {instruction_id!r}{hint}; {listing}"


def require_checkable(instruction_ids: str | Iterable[str]) -> None:
    """Raise `InstructionError` for the first id without a checker.

    The message names the id, the reason when it is known to be uncheckable (see
    `UNCHECKABLE`), and lists `CHECKABLE`. Call this before generating any response.
    """
    ids = [instruction_ids] if isinstance(instruction_ids, str) else list(instruction_ids)
    for instruction_id in ids:
        if instruction_id not in _SPECS:
            raise InstructionError(_unknown_message(instruction_id))


def _coerce(instruction_id: str, key: str, value: object, kind: type) -> object:
    bad = f"instruction {instruction_id!r}: kwarg {key!r} must be"
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InstructionError(f"{bad} an integer, got {value!r}")
        if isinstance(value, float) and not value.is_integer():
            raise InstructionError(f"{bad} an integer, got {value!r}")
        return int(value)
    if kind is str:
        if not isinstance(value, str):
            raise InstructionError(f"{bad} a string, got {value!r}")
        if key in _RELATION_KEYS and value not in RELATIONS:
            raise InstructionError(
                f"{bad} one of {', '.join(repr(r) for r in RELATIONS)}, got {value!r}"
            )
        if key == "letter" and len(value.strip()) != 1:
            raise InstructionError(f"{bad} a single character, got {value!r}")
        return value
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise InstructionError(f"{bad} a list of strings, got {value!r}")
    if not all(isinstance(v, str) for v in value):
        raise InstructionError(f"{bad} a list of strings, got {value!r}")
    return list(value)


def _prepare(instruction_id: str, kwargs: Mapping[str, object] | None) -> tuple[_Spec, dict]:
    """The checker of `instruction_id` and its validated kwargs (None-valued keys dropped)."""
    require_checkable([instruction_id])
    spec = _SPECS[instruction_id]
    given = {k: v for k, v in (kwargs or {}).items() if v is not None}
    expected = ", ".join(spec.args) or "none"
    extra = sorted(set(given) - set(spec.args))
    if extra:
        raise InstructionError(
            f"instruction {instruction_id!r}: unexpected kwarg(s) {', '.join(extra)}; "
            f"expected: {expected}"
        )
    missing = [k for k in spec.args if k not in given]
    if missing:
        raise InstructionError(
            f"instruction {instruction_id!r}: missing kwarg(s) {', '.join(missing)}; "
            f"expected: {expected}"
        )
    values = {k: _coerce(instruction_id, k, given[k], kind) for k, kind in spec.args.items()}
    return spec, values


def _check_response(response: object) -> str:
    if not isinstance(response, str):
        raise InstructionError(f"response must be a string, got {type(response).__name__}")
    return response


def check(instruction_id: str, response: str, kwargs: dict | None = None) -> bool:
    """Strict IFEval check of one instruction.

    `kwargs` are the instruction's IFEval keyword arguments; keys whose value is None are
    ignored. An empty or all-whitespace response fails every instruction (as in IFEval).
    Raises `InstructionError` for an id without a checker or kwargs that do not fit it.
    """
    spec, values = _prepare(instruction_id, kwargs)
    response = _check_response(response)
    return bool(response.strip()) and spec.fn(response, **values)


def _loose_variants(response: str) -> list[str]:
    """IFEval's loose variants: as is, minus first / last / both lines, each without '*'."""
    lines = response.split("\n")
    trimmed = [
        response,
        "\n".join(lines[1:]).strip(),
        "\n".join(lines[:-1]).strip(),
        "\n".join(lines[1:-1]).strip(),
    ]
    return trimmed + [t.replace("*", "") for t in trimmed]


def check_loose(instruction_id: str, response: str, kwargs: dict | None = None) -> bool:
    """IFEval's loose variant: True if the strict check passes on any of the response
    variants IFEval tries (remove first line, remove last line, both; and each with all '*'
    removed)."""
    spec, values = _prepare(instruction_id, kwargs)
    response = _check_response(response)
    return any(v.strip() and spec.fn(v, **values) for v in _loose_variants(response))


def follow_all(
    instruction_ids: Sequence[str],
    response: str,
    kwargs_list: Sequence[dict | None] | None = None,
    *,
    loose: bool = False,
) -> bool:
    """IFEval's follow_all_instructions for one response (kwargs_list aligned with ids;
    None -> {} each). Every id is validated before any is checked."""
    ids = [instruction_ids] if isinstance(instruction_ids, str) else list(instruction_ids)
    kws = [None] * len(ids) if kwargs_list is None else list(kwargs_list)
    if len(kws) != len(ids):
        raise InstructionError(
            f"kwargs_list has {len(kws)} entries for {len(ids)} instruction ids; "
            "give one dict (or None) per id"
        )
    prepared = [_prepare(i, k) for i, k in zip(ids, kws)]
    response = _check_response(response)
    variants = _loose_variants(response) if loose else [response]
    return all(
        any(v.strip() and spec.fn(v, **values) for v in variants) for spec, values in prepared
    )
