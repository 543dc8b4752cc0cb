"""The project's own finance questions: templated, with answers computed here.

Each template draws its numbers from a seeded RNG and computes the answer
exactly (rounded to cents), so every question has a verifiable ground truth
and no data needs to ship.
"""

from __future__ import annotations

import random

from federated.data import Example


def _compound(rng: random.Random) -> tuple[str, str]:
    p, r, y = rng.randrange(1000, 50000, 100), rng.choice([2, 3, 4, 5, 6, 7]), rng.randint(2, 15)
    fv = p * (1 + r / 100) ** y
    return (f"You invest ${p:,} at {r}% interest compounded annually. What is it worth after {y} years?",
            f"It is worth ${fv:,.2f}.")


def _simple(rng: random.Random) -> tuple[str, str]:
    p, r, y = rng.randrange(500, 20000, 50), rng.choice([3, 4, 5, 8, 10]), rng.randint(1, 10)
    interest = p * r / 100 * y
    return (f"How much simple interest does ${p:,} earn at {r}% per year over {y} years?",
            f"It earns ${interest:,.2f} in interest.")


def _loan(rng: random.Random) -> tuple[str, str]:
    p, r, y = rng.randrange(5000, 300000, 1000), rng.choice([3, 4, 5, 6, 7]), rng.choice([5, 10, 15, 20, 30])
    i, months = r / 1200, y * 12
    pay = p * i / (1 - (1 + i) ** -months)
    return (f"What is the monthly payment on a ${p:,} loan at {r}% annual interest over {y} years?",
            f"The monthly payment is ${pay:,.2f}.")


def _roi(rng: random.Random) -> tuple[str, str]:
    cost, gain = rng.randrange(1000, 20000, 100), rng.randrange(-5000, 30000, 100)
    return (f"An investment cost ${cost:,} and returned ${cost + gain:,}. What is the return on investment?",
            f"The return on investment is {gain / cost * 100:.2f}%.")


def _change(rng: random.Random) -> tuple[str, str]:
    a, b = rng.randrange(10, 500), rng.randrange(10, 500)
    return (f"A share price moved from ${a} to ${b}. What is the percentage change?",
            f"The percentage change is {(b - a) / a * 100:.2f}%.")


def _breakeven(rng: random.Random) -> tuple[str, str]:
    fixed, price = rng.randrange(1000, 100000, 500), rng.randint(20, 200)
    var = rng.randint(5, price - 5)
    units = -(-fixed // (price - var))
    return (f"Fixed costs are ${fixed:,}, each unit sells for ${price} and costs ${var} to make. "
            "How many units must be sold to break even?", f"{units:,} units must be sold to break even.")


TEMPLATES = (_compound, _simple, _loan, _roi, _change, _breakeven)


def finance_examples(n: int, seed: int) -> list[Example]:
    """`n` distinct templated finance questions, deterministic for `seed`."""
    rng, seen, out = random.Random(seed), set(), []
    while len(out) < n:
        template = TEMPLATES[len(out) % len(TEMPLATES)]
        prompt, response = template(rng)
        if prompt not in seen:
            seen.add(prompt)
            out.append(Example(prompt, response, "finance", f"finance:{template.__name__[1:]}:{len(out)}"))
    return out
