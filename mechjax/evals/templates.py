"""Sentence templates of the word-problem generator (`worlds`), several per relation.

Placeholders: `{H}` the current holder (an agent, or "A and B" after a part-whole step),
`{Q}` the other agent of the relation (always one person), `{v}` / `{y}` the numbers,
`{E}` the entity (plural), `{C}` / `{Cs}` a container (singular / plural) of a rate,
`{has}` / `{does}` / `{do}` the holder's verb forms. The comparison templates come in
a *consistent* and an *inconsistent* form (Lewis and Mayer's distinction, which the
consistency test of Opedal et al. 2024 uses): the consistent one names the operation
that solves it ("more" for +, "times as many" for x); the inconsistent one states the
same relation from the other side ("fewer" while the solution adds, "1/k" while it
multiplies).
"""

from __future__ import annotations

__all__ = ["COMPARISON", "QUESTION", "RATE", "START", "TRANSFER", "PART_WHOLE"]

START = (
    "{H} {has} {v} {E}.",
    "{H} owns {v} {E}.",
    "{H} started with {v} {E}.",
    "At first, {H} {has} {v} {E}.",
)

# op -> templates; the holder keeps the entity and stays the holder
TRANSFER = {
    "-": (
        "{H} gave {y} {E} to {Q}.",
        "{H} gave {Q} {y} {E}.",
        "{Q} received {y} {E} from {H}.",
        "{H} handed {y} of the {E} over to {Q}.",
    ),
    "+": (
        "{Q} gave {H} {y} {E}.",
        "{Q} gave {y} {E} to {H}.",
        "{H} received {y} {E} from {Q}.",
        "{H} got {y} more {E} from {Q}.",
    ),
}

# (op, consistent) -> templates; {Q} becomes the holder
COMPARISON = {
    ("+", True): (
        "{Q} has {y} more {E} than {H}.",
        "{Q} owns {y} more {E} than {H} {does}.",
        "Compared with {H}, {Q} has {y} more {E}.",
    ),
    ("+", False): (
        "{H} {has} {y} fewer {E} than {Q}.",
        "{H} {own} {y} fewer {E} than {Q} does.",
        "Compared with {Q}, {H} {has} {y} fewer {E}.",
    ),
    ("-", True): (
        "{Q} has {y} fewer {E} than {H}.",
        "{Q} owns {y} fewer {E} than {H} {does}.",
        "Compared with {H}, {Q} has {y} fewer {E}.",
    ),
    ("-", False): (
        "{H} {has} {y} more {E} than {Q}.",
        "{H} {own} {y} more {E} than {Q} does.",
        "Compared with {Q}, {H} {has} {y} more {E}.",
    ),
    ("*", True): (
        "{Q} has {y} times as many {E} as {H}.",
        "{Q} owns {y} times as many {E} as {H} {does}.",
        "{Q} has {y} times the number of {E} that {H} {has}.",
    ),
    ("*", False): (
        "{H} {has} 1/{y} the amount of {E} as {Q}.",
        "{H} {own} 1/{y} as many {E} as {Q} does.",
        "{H} {has} only 1/{y} of the number of {E} that {Q} has.",
    ),
    ("/", True): (
        "{Q} has 1/{y} the amount of {E} as {H}.",
        "{Q} owns 1/{y} as many {E} as {H} {does}.",
        "{Q} has only 1/{y} of the number of {E} that {H} {has}.",
    ),
    ("/", False): (
        "{H} {has} {y} times as many {E} as {Q}.",
        "{H} {own} {y} times as many {E} as {Q} does.",
        "{H} {has} {y} times the number of {E} that {Q} has.",
    ),
}

# {Q} joins the holder: the new holder is "{H} and {Q}"
PART_WHOLE = (
    "{Q} has {y} {E}.",
    "{Q} owns {y} {E}.",
    "{Q} has another {y} {E}.",
)

# op -> templates; "*": containers -> their content, "/": content -> containers
RATE = {
    "*": (
        "Each {C} holds {y} {E}.",
        "There are {y} {E} in each {C}.",
        "Every {C} contains {y} {E}.",
    ),
    "/": (
        "{H} packed the {E} into {Cs} of {y} each.",
        "{H} put the {E} into {Cs}, {y} {E} per {C}.",
        "{H} shared the {E} out into {Cs} holding {y} each.",
    ),
}

QUESTION = (
    "How many {E} {do} {H} have{now}?",
    "What is the number of {E} that {H} {has}{now}?",
    "Count the {E} that {H} {has}{now}.",
)
