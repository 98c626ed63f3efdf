"""Arena-Hard: the model's answers judged pairwise against a baseline's by a served judge, and the
win rate with a bootstrap confidence interval (AM-Thinking-v1 reports Arena-Hard).

    questions = load_questions(data_dir, bench.arena_hard)          # Arena-Hard-Auto's own files
    answers = generate_answers(engines, task, k)                    # or read_answers(saved)
    judged = judge_answers(questions, answers, bench.arena_hard)    # two games per answer
    summary = pairwise_summary(judged_scores(judged), ...)          # report.py

The protocol is Arena-Hard-Auto's: each answer meets the baseline's answer twice, once as
assistant B (baseline first) and once as assistant A, so a judge's taste for a position cancels;
the judge ends with a label [[A>>B]], [[A>B]], [[A=B]], [[B>A]] or [[B>>A]] (asked once more to
finish when it gave none), and a strong verdict counts as 3 games. A judge that fails or gives no
label in either game leaves that answer out of the win rate (as Arena-Hard-Auto drops it); the
answer is still written to arena_hard.jsonl with the error and counted in `judge_errors`.

Data (`--data-dir`, paths in bench.arena_hard): the questions file and the baseline's answers file
of Arena-Hard-Auto (github.com/lmarena/arena-hard-auto: data/arena-hard-v0.1/question.jsonl, and
model_answer/gpt-4-0314.jsonl from its Hugging Face dataset lmarena-ai/arena-hard-auto), v0.1
rows (`question_id`, `turns`; answers' `choices[0].turns[0].content`) or v2.0 rows (`uid`,
`prompt`; answers' last message `content.answer`). tests/data/arena-hard-v0.1 is a 6-question
example in the v0.1 layout.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from amray.config import ArenaHardSettings
from amray.endpoint import EndpointClient, EndpointError
from amray.evaluation.benchmarks import BenchmarkError, Problem, read_file
from amray.rewards import final_answer

NAME = "arena_hard"
SYSTEM_PROMPT = (
    "You are an impartial judge comparing two AI assistants' answers to the user prompt shown below. "
    "First write your own answer to the prompt. Then compare both assistants' answers with yours: point out "
    "and correct any mistakes or inaccurate information, and weigh whether each answer is helpful (it does what "
    "the prompt asks; asking for clarification is better than guessing when the prompt is ambiguous), relevant "
    "and concise, creative where that matters, and what important information it leaves out.\n\n"
    "End with exactly one final verdict label:\n"
    "1. Assistant A is significantly better: [[A>>B]]\n2. Assistant A is slightly better: [[A>B]]\n"
    "3. Tie, relatively the same: [[A=B]]\n4. Assistant B is slightly better: [[B>A]]\n"
    "5. Assistant B is significantly better: [[B>>A]]\n\n"
    "For example: \"My final verdict is tie: [[A=B]]\"."
)
USER_TEMPLATE = ("<|User Prompt|>\n{question}\n\n<|The Start of Assistant A's Answer|>\n{answer_a}\n"
                 "<|The End of Assistant A's Answer|>\n\n<|The Start of Assistant B's Answer|>\n{answer_b}\n"
                 "<|The End of Assistant B's Answer|>")
FINISH = "continue your judgment and finish by outputting a final verdict label"
_LABEL = re.compile(r"\[\[([AB<>=]+)\]\]")
STRONG_WEIGHT = 3
"""A significant win or loss counts as this many games (Arena-Hard-Auto's weight)."""
# Assistant A's score for each label (B's is 1 - it); mirrored labels (A<B) mean the same.
_A_SCORE = {"A>>B": (1.0, STRONG_WEIGHT), "A>B": (1.0, 1), "A=B": (0.5, 1), "B=A": (0.5, 1),
            "B>A": (0.0, 1), "B>>A": (0.0, STRONG_WEIGHT), "A<B": (0.0, 1), "A<<B": (0.0, STRONG_WEIGHT),
            "B<A": (1.0, 1), "B<<A": (1.0, STRONG_WEIGHT)}


@dataclass
class Question:
    id: str
    prompt: str
    baseline: str
    """The baseline model's answer."""
    category: str = ""


@dataclass
class Answer:
    """One of the model's answers to a question (generated, or read from a saved file)."""

    question_id: str
    sample: int
    response: str
    response_tokens: int | None = None
    truncated: bool | None = None


@dataclass
class Game:
    model_position: str
    """"B": the baseline's answer came first (assistant A); "A": the model's came first."""
    verdict: str | None = None
    judgment: str = ""
    error: str = ""

    @property
    def model_scores(self) -> list[float]:
        """The model's score in this game, repeated by the verdict's weight ([] without a verdict)."""
        if self.verdict is None:
            return []
        a_score, weight = _A_SCORE[self.verdict]
        return [a_score if self.model_position == "A" else 1.0 - a_score] * weight


@dataclass
class JudgedAnswer:
    answer: Answer
    games: list[Game] = field(default_factory=list)

    @property
    def scores(self) -> list[float] | None:
        """Both games' weighted scores, or None when either game has no verdict (left out)."""
        if len(self.games) != 2 or any(g.verdict is None for g in self.games):
            return None
        return [s for g in self.games for s in g.model_scores]

    def to_dict(self) -> dict:
        scores = self.scores
        return {"benchmark": NAME, "problem_id": self.answer.question_id, "sample": self.answer.sample,
                "response": self.answer.response, "response_tokens": self.answer.response_tokens,
                "truncated": self.answer.truncated,
                "score": None if scores is None else sum(scores) / len(scores),
                "games": [asdict(g) for g in self.games]}


def load_questions(data_dir: str | Path, settings: ArenaHardSettings, limit: int = 0) -> list[Question]:
    """The questions and the baseline's answer to each (every row checked before any generation)."""
    q_path, b_path = Path(data_dir) / settings.questions, Path(data_dir) / settings.baseline
    for path, key in ((q_path, "questions"), (b_path, "baseline")):
        if not path.is_file():
            raise BenchmarkError(f"benchmark {NAME}: {path} not found (bench.{NAME}.{key} is taken inside --data-dir)")
    baselines: dict[str, str] = {}
    for n, row in enumerate(read_file(b_path), 1):
        qid, text = _question_id(row), _answer_text(row)
        if qid is None or text is None:
            raise BenchmarkError(f"benchmark {NAME}: {b_path} row {n}: needs `question_id` (or `uid`) and the answer "
                                 "(`choices[0].turns[0].content`, the last message's `content`, or `answer`)")
        baselines[qid] = text
    questions, seen = [], set()
    for n, row in enumerate(read_file(q_path), 1):
        qid, prompt = _question_id(row), _question_text(row)
        where = f"benchmark {NAME}: {q_path} row {n}"
        if qid is None or not prompt:
            raise BenchmarkError(f"{where}: needs `question_id` and `turns[0].content` (v0.1) or `uid` and `prompt` (v2.0)")
        if qid in seen:
            raise BenchmarkError(f"{where}: question id {qid!r} appears twice")
        if qid not in baselines:
            raise BenchmarkError(f"{where}: question {qid!r} has no baseline answer in {b_path}")
        seen.add(qid)
        questions.append(Question(qid, prompt, baselines[qid], str(row.get("category") or "")))
        if limit and len(questions) == limit:
            break
    if not questions:
        raise BenchmarkError(f"benchmark {NAME}: no questions in {q_path}")
    return questions


def problems(questions: list[Question]) -> list[Problem]:
    """The questions as the harness's problems (a chat prompt each; `prepare_tasks` tokenizes them)."""
    return [Problem(NAME, q.id, {"id": f"{NAME}/{q.id}", "source": "chat", "prompt": q.prompt}) for q in questions]


def generate_answers(engines, task, k: int) -> list[Answer]:
    """k answers to every question of `task` (a BenchmarkTask of `problems`) from the rollout engines."""
    from amray.rollout import requests_for

    requests = requests_for(task.prompts, k, engines.sampling(task.temperature, task.top_p, task.max_tokens))
    question_of = {r.group_id: task.problems[i // k].problem_id for i, r in enumerate(requests)}  # k per prompt, in order
    engines.submit(requests)
    answers = []
    while engines.busy:
        for request, sample in engines.step():
            answers.append(Answer(str(question_of[request.group_id]), request.sample_index, sample.text,
                                  len(sample.token_ids), sample.truncated))
    return sorted(answers, key=lambda a: (a.question_id, a.sample))


def read_answers(rows: list[dict], path: str) -> list[Answer]:
    """Saved answers ({benchmark: arena_hard, problem_id, sample, response}: an arena_hard.jsonl)."""
    answers = []
    for n, row in enumerate(rows, 1):
        if (not isinstance(row.get("response"), str) or row.get("problem_id") is None
                or not isinstance(row.get("sample"), int)):
            raise BenchmarkError(f"{path} line {n}: an {NAME} answer needs `problem_id`, `sample` (int) and `response`")
        answers.append(Answer(str(row["problem_id"]), row["sample"], row["response"], row.get("response_tokens"),
                              row.get("truncated")))
    return answers


def judge_answers(questions: list[Question], answers: list[Answer], settings: ArenaHardSettings,
                  log=print) -> list[JudgedAnswer]:
    """Two games per answer against the baseline, `judge.concurrency` requests at a time."""
    by_id = {q.id: q for q in questions}
    unknown = sorted({a.question_id for a in answers} - set(by_id))
    if unknown:
        raise BenchmarkError(f"{NAME} answers to questions not in the questions file: {unknown[:5]}")
    judged = [JudgedAnswer(a) for a in answers]
    games = [(j, position) for j in judged for position in ("B", "A")]
    with EndpointClient(settings.judge, f"bench.{NAME}.judge") as client:
        system = settings.system_prompt or SYSTEM_PROMPT

        def play(item: tuple[JudgedAnswer, str]) -> Game:
            j, position = item
            q = by_id[j.answer.question_id]
            model = final_answer(j.answer.response)  # the judge sees the answer, not the thinking
            a, b = (q.baseline, model) if position == "B" else (model, q.baseline)
            return judge_game(client, system, USER_TEMPLATE.format(question=q.prompt, answer_a=a, answer_b=b), position)

        if log:
            log(f"{NAME}: {len(games)} games ({len(answers)} answers x 2 orders) judged by {settings.judge.endpoint}")
        for (j, _), game in zip(games, client.map(play, games)):
            j.games.append(game)
    return judged


def judge_game(client: EndpointClient, system: str, user: str, model_position: str) -> Game:
    """One judgement; a reply without a label is asked once more to finish (as Arena-Hard-Auto does)."""
    messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
    judgment = ""
    try:
        for _ in range(2):
            reply = client.chat(messages)
            judgment += ("\n" if judgment else "") + reply.text
            verdict = verdict_label(judgment)
            if verdict is not None:
                return Game(model_position, verdict, judgment[-4000:])
            messages += [{"role": "assistant", "content": reply.text}, {"role": "user", "content": FINISH}]
    except EndpointError as e:
        return Game(model_position, None, judgment[-4000:], str(e))
    return Game(model_position, None, judgment[-4000:], f"{client.name}: no verdict label [[A>B]] etc. in the judgment")


def verdict_label(judgment: str) -> str | None:
    """The judge's last verdict label (a judge may quote the label list before deciding)."""
    labels = [m for m in _LABEL.findall(judgment.upper()) if m in _A_SCORE]
    return labels[-1] if labels else None


def judged_scores(judged: list[JudgedAnswer]) -> tuple[dict[str, list[float]], int]:
    """The model's weighted game scores per question, and how many answers were left out."""
    per_question: dict[str, list[float]] = {}
    errors = 0
    for j in judged:
        scores = j.scores
        if scores is None:
            errors += 1
        else:
            per_question.setdefault(j.answer.question_id, []).extend(scores)
    return per_question, errors


def _question_id(row: dict) -> str | None:
    value = row.get("question_id", row.get("uid"))
    return None if value is None else str(value)


def _question_text(row: dict) -> str | None:
    if isinstance(row.get("prompt"), str):
        return row["prompt"]
    turns = row.get("turns")
    if isinstance(turns, list) and turns and isinstance(turns[0], dict) and isinstance(turns[0].get("content"), str):
        return turns[0]["content"]
    return None


def _answer_text(row: dict) -> str | None:
    if isinstance(row.get("answer"), str):
        return row["answer"]
    try:
        if "choices" in row:
            return str(row["choices"][0]["turns"][0]["content"])
        content = row["messages"][-1]["content"]
        return content["answer"] if isinstance(content, dict) else str(content)
    except (KeyError, IndexError, TypeError):
        return None
