"""Query rules and the multiple-choice rewrite, on the shapes real math datasets come in."""

from __future__ import annotations

import pytest

from amray.data import rules
from amray.data.answers import unusable_answer
from amray.data.choices import rewrite_multiple_choice
from amray.data.dedup import exact_duplicates, near_duplicates
from amray.data.config import NearDuplicateConfig


@pytest.mark.parametrize("query, hit", [
    ("Summarise https://en.wikipedia.org/wiki/Pi in two lines.", True),
    ("Go to www.example.com and count the links.", True),
    ("What does github.com/user/repo contain?", True),
    ("Compute 3.14 * 2.", False),
    ("Let e.g. x = 1. Find x + 1.", False),
])
def test_url(query: str, hit: bool) -> None:
    assert (rules.url(query) is not None) is hit


@pytest.mark.parametrize("query, hit", [
    ("<image>\nWhat is the area of the shaded region?", True),
    ('<img src="q1.png"> Find x.', True),
    ("![triangle](tri.jpg) Find the hypotenuse.", True),
    ("As shown in the figure, ABCD is a square. Find its area.", True),
    ("See the attached diagram and find angle B.", True),
    ("The graph below shows f(x). Find f(2).", True),
    ("In Fig. 3, find the length of AB.", True),
    # A figure drawn in the text (MATH's [asy]) is readable, and "figure" alone is not an image.
    ("In the diagram, find x.\n[asy]\ndraw((0,0)--(1,1));\n[/asy]", False),
    ("How many four-figure numbers are divisible by 7?", False),
    ("Graph theory: how many edges does K_5 have?", False),
])
def test_image_reference(query: str, hit: bool) -> None:
    assert (rules.image_reference(query) is not None) is hit


@pytest.mark.parametrize("query, hit", [
    ("Prove that there are infinitely many primes.", True),
    ("Let n be odd. Show that n^2 - 1 is divisible by 8.", True),
    ("Prove: for all n, 6 divides n^3 - n.", True),
    ("求证：a+b≥2√ab", True),
    ("Find all n such that n^2 + 1 is prime and show your work.", False),
    ("Which of these provers is fastest?", False),
])
def test_proof(query: str, hit: bool) -> None:
    assert (rules.proof(query) is not None) is hit


@pytest.mark.parametrize("query, hit", [
    ("Let f(x) = x^2. (a) Find f(2). (b) Find f(3).", True),
    ("(1) Find the area of the triangle. (2) Find its perimeter.", True),
    ("Consider g(x) = e^x.\n1. Find g'(x).\n2. Evaluate g(0).", True),
    ("(i) What is 2+2? (ii) What is 3+3?", True),
    ("已知函数f(x)=x^2.（1）求f(2)；（2）求f(x)的最小值", True),
    # Labelled conditions ask only once; f(a), f(b) are not labels; options are not questions.
    ("Given (1) x + y = 3 and (2) x - y = 1, find x.", False),
    ("Let f(a) = 1 and f(b) = 2. Find f(a) + f(b).", False),
    ("What is 6*7? (a) 42 (b) 48 (c) 36", False),
    ("Conditions:\n1. x > 0\n2. y > 0\nFind the minimum of x + y given xy = 4.", False),
])
def test_multi_subquestion(query: str, hit: bool) -> None:
    assert (rules.multi_subquestion(query) is not None) is hit


@pytest.mark.parametrize("answer, usable", [
    ("42", True), (27.0, True), (7, True), (r"\frac{1}{2}", True), (r"2\sqrt{3}", True), ("(1, 2]", True),
    (r"\text{Evelyn}", True), ("", False), (None, False), ("proof", False), ("See the solution.", False),
    ("The set of all even integers greater than two", False), (["1"], False), (True, False),
])
def test_no_answer(answer: object, usable: bool) -> None:
    assert (unusable_answer(answer) is None) is usable


def test_amc_options_become_fill_in() -> None:
    query = (r"What is $\frac{1}{2} + \frac{1}{3}$? "
             r"$\textbf{(A)}\ \frac{2}{5} \qquad\textbf{(B)}\ \frac{5}{6} \qquad\textbf{(C)}\ 1 \qquad"
             r"\textbf{(D)}\ \frac{1}{6} \qquad\textbf{(E)}\ \frac{3}{5}$")
    result = rewrite_multiple_choice(query, "B")
    assert result.status == "rewritten"
    assert result.query == r"What is $\frac{1}{2} + \frac{1}{3}$?"
    assert result.answer == r"\frac{5}{6}"


def test_line_options_with_answer_given_as_value() -> None:
    query = "Solve 2x = 1 for x.\nOptions:\nA: $\\frac{1}{2}$\nB: $2$\nC: $1$\nD: $0$"
    result = rewrite_multiple_choice(query, "0.5")  # the value, not the letter: math-verify finds A
    assert (result.status, result.query, result.answer) == ("rewritten", "Solve 2x = 1 for x.", r"\frac{1}{2}")


@pytest.mark.parametrize("query, answer, status", [
    ("Which of the following is prime?\nA. 4\nB. 6\nC. 7\nD. 9", "C", "unresolved"),  # needs its options
    ("Compute 6*7.\n(A) 42 (B) 48 (C) 36 (D) 40", "41", "unresolved"),  # answer is no option
    ("Compute 6*7.\n(A) 42 (B) 48 (C) 36 (D) 40", "(A)", "rewritten"),
    ("Compute 6*7.\n(A) 42 (B) 42.0 (C) 36 (D) 40", "42", "unresolved"),  # two options match
    ("Let ABC be a triangle with AB = 3, BC = 4 and CA = 5. Find its area.", "6", "not_choice"),
])
def test_multiple_choice_status(query: str, answer: str, status: str) -> None:
    assert rewrite_multiple_choice(query, answer).status == status


def test_exact_duplicates_ignore_case_and_spacing() -> None:
    queries = ["What is 2+3?", "what  is 2+3?\n", "What is 2+4?"]
    assert exact_duplicates(queries) == {1: 0}


def test_near_duplicates_catch_small_edits_but_not_new_numbers_in_short_queries() -> None:
    long = ("A bag contains 5 red marbles, 7 blue marbles and 8 green marbles. Two marbles are drawn at random "
            "without replacement. What is the probability that both marbles are the same colour? Express your "
            "answer as a common fraction.")
    queries = [long, long.replace("common fraction", "common fraction in lowest terms"),
               "What is 2+3?", "What is 2+4?", long.replace("5 red", "50 red").replace("8 green", "80 green")]
    found = near_duplicates(queries, NearDuplicateConfig())
    assert set(found) == {1}
    assert found[1][0] == 0 and found[1][1] >= 0.8
