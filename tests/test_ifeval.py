"""IFEval-style instruction checkers: each checker on hand-written responses that pass and
that fail, the loose variant, the sentence splitter and word counter, and the errors."""

import pytest

from mechjax.errors import InputError
from mechjax.steering import ifeval
from mechjax.steering.ifeval import (
    CHECKABLE,
    UNCHECKABLE,
    InstructionError,
    check,
    check_loose,
    count_words,
    follow_all,
    require_checkable,
    split_sentences,
)

AT_LEAST, LESS = "at least", "less than"
_CW = {"capital_frequency": 3, "capital_relation": AT_LEAST}

# (instruction id, response, kwargs, expected strict result)
CASES: list[tuple[str, str, dict, bool]] = [
    # change_case
    ("change_case:english_lowercase", "all lower, 3 words.", {}, True),
    ("change_case:english_lowercase", "one Capital here", {}, False),
    ("change_case:english_lowercase", "1234 !!", {}, False),  # no cased character at all
    ("change_case:english_capital", "ALL CAPS, 100%!", {}, True),
    ("change_case:english_capital", "ALL CAPS but one", {}, False),
    ("change_case:capital_word_frequency", "THE BIG dog ate A bone", _CW, True),
    ("change_case:capital_word_frequency", "THE BIG dog", _CW, False),
    (
        "change_case:capital_word_frequency",
        "THE BIG dog",
        {"capital_frequency": 3, "capital_relation": LESS},
        True,
    ),
    (
        "change_case:capital_word_frequency",
        "THE BIG RED dog",
        {"capital_frequency": 3, "capital_relation": LESS},
        False,
    ),
    (
        "change_case:capital_word_frequency",
        "A WELL-KNOWN fact",
        {"capital_frequency": 3, "capital_relation": LESS},
        True,
    ),  # one hyphenated token
    # startend
    (
        "startend:end_checker",
        "Text.\nIs there anything else I can help with?  ",
        {"end_phrase": "is there anything else I can help with?"},
        True,
    ),
    (
        "startend:end_checker",
        '"Quoted. Any other questions?"',
        {"end_phrase": "Any other questions?"},
        True,
    ),  # surrounding quotes are stripped
    (
        "startend:end_checker",
        "Any other questions? Bye.",
        {"end_phrase": "Any other questions?"},
        False,
    ),
    ("startend:quotation", '  "a quoted answer"\n', {}, True),
    ("startend:quotation", '"unterminated', {}, False),
    ("startend:quotation", '"', {}, False),
    # punctuation
    ("punctuation:no_comma", "No commas here.", {}, True),
    ("punctuation:no_comma", "One, comma.", {}, False),
    # detectable_format
    ("detectable_format:json_format", '{"a": [1, 2]}', {}, True),
    ("detectable_format:json_format", '```json\n{"a": 1}\n```', {}, True),
    ("detectable_format:json_format", '```JSON\n{"a": 1}\n```', {}, True),
    ("detectable_format:json_format", "```\n[1, 2]\n```", {}, True),
    ("detectable_format:json_format", 'Here: {"a": 1}', {}, False),
    ("detectable_format:json_format", "{'a': 1}", {}, False),
    ("detectable_format:title", "<<A Poem of Joy>>\nRoses.", {}, True),
    ("detectable_format:title", "<<  >>\nRoses.", {}, False),
    ("detectable_format:title", "<A Poem>", {}, False),
    (
        "detectable_format:number_highlighted_sections",
        "*one* and **two**",
        {"num_highlights": 2},
        True,
    ),
    (
        "detectable_format:number_highlighted_sections",
        "**bold** only",
        {"num_highlights": 2},
        False,
    ),
    (
        "detectable_format:number_highlighted_sections",
        "** ** and * *",
        {"num_highlights": 1},
        False,
    ),
    (
        "detectable_format:number_bullet_lists",
        "Intro\n* one\n* two\n- three",
        {"num_bullets": 3},
        True,
    ),
    ("detectable_format:number_bullet_lists", "* one\n* two", {"num_bullets": 3}, False),
    (
        "detectable_format:number_bullet_lists",
        "* one\n**bold** line\n* two",
        {"num_bullets": 2},
        True,
    ),
    ("detectable_format:number_bullet_lists", "* a\n* b\n* c\n* d", {"num_bullets": 3}, False),
    (
        "detectable_format:multiple_sections",
        "Section 1\nfoo\nSection 2\nbar",
        {"section_spliter": "Section", "num_sections": 2},
        True,
    ),
    (
        "detectable_format:multiple_sections",
        "SECTION 1\nfoo\nSection 2\nbar",
        {"section_spliter": "Section", "num_sections": 2},
        False,
    ),  # the spliter is case-sensitive
    (
        "detectable_format:multiple_sections",
        "SECTION 1\nfoo\nSECTION 2\nbar",
        {"section_spliter": "SECTION", "num_sections": 2},
        True,
    ),
    (
        "detectable_format:multiple_sections",
        "Section one\nfoo",
        {"section_spliter": "Section", "num_sections": 1},
        False,
    ),
    ("detectable_format:constrained_response", "Hmm. My answer is maybe.", {}, True),
    ("detectable_format:constrained_response", "My answer is yes", {}, False),
    # keywords
    ("keywords:existence", "The Moon and the SUN.", {"keywords": ["moon", "sun"]}, True),
    ("keywords:existence", "The Moon only.", {"keywords": ["moon", "sun"]}, False),
    ("keywords:existence", "I code in C++ daily.", {"keywords": ["c++"]}, True),
    ("keywords:forbidden_words", "A catalog of dogs.", {"forbidden_words": ["cat"]}, True),
    ("keywords:forbidden_words", "A dog and a Cat.", {"forbidden_words": ["cat"]}, False),
    (
        "keywords:frequency",
        "Tea, tea and TEA.",
        {"keyword": "tea", "frequency": 3, "relation": AT_LEAST},
        True,
    ),
    (
        "keywords:frequency",
        "Tea, tea and TEA.",
        {"keyword": "tea", "frequency": 3, "relation": LESS},
        False,
    ),
    ("keywords:frequency", "Tea once.", {"keyword": "tea", "frequency": 3, "relation": LESS}, True),
    (
        "keywords:letter_frequency",
        "Banana",
        {"letter": "A", "let_frequency": 3, "let_relation": AT_LEAST},
        True,
    ),
    (
        "keywords:letter_frequency",
        "Banana",
        {"letter": "a", "let_frequency": 3, "let_relation": LESS},
        False,
    ),
    # length_constraints
    (
        "length_constraints:number_words",
        "one two, three-four",
        {"num_words": 4, "relation": AT_LEAST},
        True,
    ),
    (
        "length_constraints:number_words",
        "one two three",
        {"num_words": 4, "relation": AT_LEAST},
        False,
    ),
    ("length_constraints:number_words", "one two three", {"num_words": 4, "relation": LESS}, True),
    (
        "length_constraints:number_words",
        "one two three four",
        {"num_words": 4, "relation": LESS},
        False,
    ),
    (
        "length_constraints:number_sentences",
        "Mr. Li came. He left.",
        {"num_sentences": 3, "relation": LESS},
        True,
    ),
    (
        "length_constraints:number_sentences",
        "One. Two. Three.",
        {"num_sentences": 3, "relation": LESS},
        False,
    ),
    (
        "length_constraints:number_sentences",
        "One. Two. Three.",
        {"num_sentences": 3, "relation": AT_LEAST},
        True,
    ),
    (
        "length_constraints:number_paragraphs",
        "First.\n***\nSecond.\n***\n",
        {"num_paragraphs": 2},
        True,
    ),
    (
        "length_constraints:number_paragraphs",
        "First.\n***\n***\nThird.",
        {"num_paragraphs": 2},
        False,
    ),
    ("length_constraints:number_paragraphs", "Only one.", {"num_paragraphs": 2}, False),
    (
        "length_constraints:nth_paragraph_first_word",
        'Intro.\n\n"Summer, at last."',
        {"num_paragraphs": 2, "nth_paragraph": 2, "first_word": "summer"},
        True,
    ),
    (
        "length_constraints:nth_paragraph_first_word",
        "Intro.\n\nWinter came.",
        {"num_paragraphs": 2, "nth_paragraph": 2, "first_word": "summer"},
        False,
    ),
    (
        "length_constraints:nth_paragraph_first_word",
        "Intro.\n\nSummer came.\n\nEnd.",
        {"num_paragraphs": 2, "nth_paragraph": 2, "first_word": "summer"},
        False,
    ),
    # detectable_content
    (
        "detectable_content:postscript",
        "Body.\n\nP.S. See you.",
        {"postscript_marker": "P.S."},
        True,
    ),
    ("detectable_content:postscript", "Body.\n\nPS see you.", {"postscript_marker": "P.S."}, False),
    (
        "detectable_content:postscript",
        "Body.\np. p. s. later",
        {"postscript_marker": "P.P.S"},
        True,
    ),
    ("detectable_content:postscript", "Body.\nP.S. later", {"postscript_marker": "P.P.S"}, False),
    (
        "detectable_content:number_placeholders",
        "Dear [name], at [address].",
        {"num_placeholders": 2},
        True,
    ),
    ("detectable_content:number_placeholders", "Dear [name].", {"num_placeholders": 2}, False),
    # combination
    (
        "combination:repeat_prompt",
        "  write a POEM. Roses are red.",
        {"prompt_to_repeat": "Write a poem."},
        True,
    ),
    (
        "combination:repeat_prompt",
        "Roses are red. Write a poem.",
        {"prompt_to_repeat": "Write a poem."},
        False,
    ),
    ("combination:two_responses", "First answer.\n******\nSecond answer.", {}, True),
    ("combination:two_responses", "Same.\n******\nSame.", {}, False),
    ("combination:two_responses", "A.\n******\n******\nB.", {}, False),
    ("combination:two_responses", "Just one.", {}, False),
]


@pytest.mark.parametrize(("instruction_id", "response", "kwargs", "expected"), CASES)
def test_checker_on_hand_written_response(
    instruction_id: str, response: str, kwargs: dict, expected: bool
) -> None:
    """Each strict check gives the hand-derived IFEval outcome."""
    assert check(instruction_id, response, kwargs) is expected


def test_every_checker_is_exercised_with_both_outcomes() -> None:
    """The table above covers each checkable id with at least one pass and one fail."""
    outcomes: dict[str, set[bool]] = {}
    for instruction_id, _, _, expected in CASES:
        outcomes.setdefault(instruction_id, set()).add(expected)
    assert set(outcomes) == set(CHECKABLE)
    assert all(v == {True, False} for v in outcomes.values()), outcomes


def test_empty_response_fails_every_instruction_strict_and_loose() -> None:
    """IFEval skips empty responses: even no_comma and forbidden_words fail on ''."""
    for response in ("", "  \n "):
        assert not check("punctuation:no_comma", response)
        assert not check("keywords:forbidden_words", response, {"forbidden_words": ["x"]})
        assert not check_loose("punctuation:no_comma", response)


def test_none_valued_kwargs_are_ignored() -> None:
    """Data files carry every kwarg key, set to None where it does not apply."""
    kwargs = {"num_bullets": 2, "keywords": None, "relation": None, "end_phrase": None}
    assert check("detectable_format:number_bullet_lists", "* a\n* b", kwargs)
    assert check("punctuation:no_comma", "ok", {"num_words": None})


def test_loose_passes_where_strict_fails() -> None:
    """A capitalised, comma-bearing preamble line fails strict; loose drops the first line."""
    response = "Sure, here it is:\nthe answer is all lowercase"
    for instruction_id in ("change_case:english_lowercase", "punctuation:no_comma"):
        assert not check(instruction_id, response)
        assert check_loose(instruction_id, response)
    bold_quote = '**"a bold quotation"**'  # only the variant with '*' removed is quoted
    assert not check("startend:quotation", bold_quote)
    assert check_loose("startend:quotation", bold_quote)
    ended = "Body.\nAny other questions?\nLet me know!"
    end = {"end_phrase": "Any other questions?"}
    assert not check("startend:end_checker", ended, end)
    assert check_loose("startend:end_checker", ended, end)
    assert not check_loose("change_case:english_lowercase", "Sure:\nNot Lower\nEnd")


def test_follow_all_strict_and_loose() -> None:
    """All instructions must hold; loose applies the variants per instruction."""
    ids = ["punctuation:no_comma", "length_constraints:number_words"]
    kwargs = [None, {"num_words": 3, "relation": AT_LEAST}]
    assert follow_all(ids, "one two three four", kwargs)
    assert not follow_all(ids, "one, two three four", kwargs)
    assert follow_all(ids, "Sure, here:\none two three four", kwargs, loose=True)
    assert not follow_all(ids, "Sure, here:\none two three four", kwargs)
    assert follow_all(["punctuation:no_comma", "startend:quotation"], '"hi"')
    with pytest.raises(InstructionError, match="2 instruction ids"):
        follow_all(ids, "x", [None])


def test_split_sentences_rule() -> None:
    """Terminators end sentences before a capital, digit or quote; abbreviations do not."""
    assert split_sentences("Dr. Smith arrived. He sat down! Did he eat? Yes.") == [
        "Dr. Smith arrived.",
        "He sat down!",
        "Did he eat?",
        "Yes.",
    ]
    assert split_sentences('Use e.g. tea, i.e. hot. "Fine," he said. 3 cups. Mrs. Li') == [
        "Use e.g. tea, i.e. hot.",
        '"Fine," he said.',
        "3 cups.",
        "Mrs. Li",
    ]
    assert split_sentences("Pi is 3.14 and so. not a new sentence") == [
        "Pi is 3.14 and so. not a new sentence"
    ]
    assert split_sentences("J. R. R. Tolkien wrote it in the U.S. Army?! No...") == [
        "J. R. R. Tolkien wrote it in the U.S. Army?!",
        "No...",
    ]
    assert split_sentences("# Heading\n\nBody text. End") == ["# Heading", "Body text.", "End"]
    assert split_sentences("  ") == []


def test_count_words() -> None:
    """Words are runs of \\w: punctuation splits, underscores and digits join."""
    assert count_words("Hello, world! it's snake_case 42") == 6
    assert count_words("") == 0


def test_unknown_id_names_it_and_lists_checkable() -> None:
    """An unknown id (here a typo) is named, with a suggestion and the valid ids."""
    with pytest.raises(InstructionError) as err:
        check("change_case:english_lowercse", "x")
    msg = str(err.value)
    assert "'change_case:english_lowercse'" in msg
    assert "did you mean 'change_case:english_lowercase'" in msg
    assert all(i in msg for i in CHECKABLE)
    assert isinstance(err.value, InputError) and isinstance(err.value, ValueError)


def test_language_id_is_uncheckable_with_reason() -> None:
    """language:response_language raises with its reason, before any generation."""
    assert "language:response_language" not in CHECKABLE
    assert "language:response_language" in UNCHECKABLE
    for call in (
        lambda: require_checkable(["punctuation:no_comma", "language:response_language"]),
        lambda: check("language:response_language", "hi", {"language": "en"}),
        lambda: follow_all(["language:response_language"], "hi", loose=True),
    ):
        with pytest.raises(InstructionError) as err:
            call()
        msg = str(err.value)
        assert "language:response_language" in msg and "not available offline" in msg
        assert "punctuation:no_comma" in msg
    require_checkable(["punctuation:no_comma"])  # no error
    require_checkable("startend:quotation")  # a single id string is one id, not characters


def test_missing_and_unexpected_kwargs() -> None:
    """Missing or stray kwargs name the id, the key and the expected keys."""
    with pytest.raises(InstructionError) as err:
        check("detectable_format:multiple_sections", "x", {"section_spliter": "Section"})
    msg = str(err.value)
    assert "detectable_format:multiple_sections" in msg and "num_sections" in msg
    assert "expected: section_spliter, num_sections" in msg
    with pytest.raises(InstructionError, match="unexpected kwarg.*num_words.*expected: none"):
        check("punctuation:no_comma", "x", {"num_words": 3})
    with pytest.raises(InstructionError, match="'num_bullets' must be an integer"):
        check("detectable_format:number_bullet_lists", "x", {"num_bullets": "3"})
    with pytest.raises(InstructionError, match="'keywords' must be a list"):
        check("keywords:existence", "x", {"keywords": "moon"})
    assert check("detectable_format:number_bullet_lists", "* a", {"num_bullets": 1.0})


@pytest.mark.parametrize(
    ("instruction_id", "kwargs"),
    [
        ("length_constraints:number_words", {"num_words": 3, "relation": "more than"}),
        (
            "change_case:capital_word_frequency",
            {"capital_frequency": 1, "capital_relation": "at most"},
        ),
        (
            "keywords:letter_frequency",
            {"letter": "a", "let_frequency": 1, "let_relation": "exactly"},
        ),
    ],
)
def test_bad_relation_lists_valid_choices(instruction_id: str, kwargs: dict) -> None:
    """A relation outside IFEval's two is rejected, naming the id and both choices."""
    with pytest.raises(InstructionError) as err:
        check_loose(instruction_id, "some text", kwargs)
    msg = str(err.value)
    assert instruction_id in msg and "'less than'" in msg and "'at least'" in msg


def test_format_dataset_ids_are_checkable() -> None:
    """Every id of llm-steer-instruct's single-instruction format split but language."""
    used = [
        "punctuation:no_comma",
        "change_case:english_lowercase",
        "detectable_format:number_bullet_lists",
        "detectable_format:json_format",
        "startend:end_checker",
        "detectable_format:multiple_sections",
        "startend:quotation",
        "detectable_format:number_highlighted_sections",
        "detectable_format:title",
        "change_case:english_capital",
        "change_case:capital_word_frequency",
        "detectable_format:constrained_response",
        "keywords:existence",
        "keywords:forbidden_words",
        "length_constraints:number_words",
        "length_constraints:number_sentences",
    ]
    assert set(used) <= set(CHECKABLE)
    require_checkable(used)
    assert list(CHECKABLE) == sorted(CHECKABLE) and len(CHECKABLE) == 24
    assert set(ifeval.__all__) >= {"check", "check_loose", "follow_all", "split_sentences"}
