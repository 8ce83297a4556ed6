"""``--ranker inprocess[:PATH]``: the shipped model scored in this process, with expected grades.

The real model and the real managed ``transformers serve`` throughout: the in-process answers must be the
server's, and the expected grades the mean of the model's own digit distribution.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest
import torch

from agent.cli.main import main
from agent.cli.search import llm_ranker_rows
from agent.llm.in_process import InProcessClient
from agent.llm.local_server import LocalServer
from agent.llm.ranker import DIGITS, RankerSetupError, make_llm_ranker
from prompts.card import MODEL_CARD, committee_members
from tests.agent.llm.questions import greedy_answers, near_questions

ROOT = Path(__file__).resolve().parents[3]
SHIPPED = ROOT / "models" / "lm-searcher-tiny"


def test_in_process_answers_are_transformers_serves_and_grades_are_the_digit_distributions_mean() -> None:
    prompts = near_questions(seed=5, count=30)
    client = InProcessClient(SHIPPED, max_tokens=4, members=False)  # the folder's own model, as a server serves it
    completions = [client.complete(messages, grade=True) for messages in prompts]
    with LocalServer(SHIPPED) as server:
        served = greedy_answers(server.base_url, str(server.model_path), prompts, in_flight=10)
    assert [c.text for c in completions] == served
    assert len(set(served)) > 1  # a check with teeth: the questions do not all get one answer
    digit_ids = [client.tokenizer.convert_tokens_to_ids(d) for d in DIGITS]
    for messages, completion in zip(prompts, completions, strict=True):
        text = client.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        ids = client.tokenizer(text, add_special_tokens=False)["input_ids"]
        with torch.inference_mode():
            logits = client.model(torch.tensor([ids])).logits[0, -1]
        assert int(logits.argmax()) == digit_ids[int(completion.text)]
        mean = float(torch.softmax(logits[digit_ids], -1) @ torch.arange(10.0))
        assert completion.expected_grade == pytest.approx(mean, abs=1e-5)
        assert completion.prompt_tokens == len(ids)
    expected = [c.expected_grade for c in completions]
    assert any(abs(e - int(c.text)) > 0.3 for e, c in zip(expected, completions, strict=True))  # not the digit
    plain = client.complete(prompts[0])  # without grade: no distribution asked for
    assert plain.expected_grade is None and plain.text == completions[0].text


@pytest.mark.parametrize("model", ["shipped", "tiny_model_dir"])
def test_a_pool_graded_in_one_pass_gets_the_answers_of_one_question_at_a_time(model: str, request) -> None:
    """grade_all (a shared prefix once, then every candidate's tail) against complete: the same answers and
    grades. The last question is not a ranking one, and the shipped model answers it with no digit first,
    which grade_all hands to complete: both of its paths are compared."""
    path = SHIPPED if model == "shipped" else request.getfixturevalue(model)
    client = InProcessClient(path, max_tokens=4)
    prompts = [*near_questions(seed=11, count=20), [{"role": "user", "content": "Write a poem about the sea."}]]
    one_at_a_time = [client.complete(messages, grade=True) for messages in prompts]
    together = client.grade_all(prompts)
    assert [c.prompt_tokens for c in together] == [c.prompt_tokens for c in one_at_a_time]
    for alone, pooled in zip(one_at_a_time, together, strict=True):
        if alone.expected_grade is None:
            assert (pooled.text, pooled.expected_grade) == (alone.text, None)  # no digit first: complete's answer
        else:  # the grade is read at the first token; what greedy decoding writes after it is not generated
            assert pooled.text == alone.text[0]
            assert pooled.expected_grade == pytest.approx(alone.expected_grade, abs=1e-4)
    # the questions get different grades: the tiny model's spread over about 1e-3 (at three decimals they could
    # round to one value), the shipped model's over several digits
    assert len({round(c.expected_grade, 5) for c in together if c.expected_grade is not None}) > 1
    if model == "shipped":  # trained to answer one digit: its answers are complete's, word for word
        assert [c.text for c in together] == [c.text for c in one_at_a_time]
        assert together[-1].expected_grade is None  # the poem: no digit first


def test_a_committee_grades_with_the_mean_of_its_members_and_answers_with_its_own_model() -> None:
    """The shipped card names a second model (``members``): each question's expected grade is the mean of the two
    models' own, one at a time and a pool at once; the answer's text is the folder's own model's."""
    committee = InProcessClient(SHIPPED, max_tokens=4)
    own = InProcessClient(SHIPPED, max_tokens=4, members=False)
    (member_path,) = committee_members(SHIPPED)
    member = InProcessClient(member_path, max_tokens=4)
    prompts = near_questions(seed=7, count=16)
    alone = [own.complete(messages, grade=True) for messages in prompts]
    other = [member.complete(messages, grade=True) for messages in prompts]
    assert max(abs(a.expected_grade - b.expected_grade) for a, b in zip(alone, other, strict=True)) > 0.1  # they differ
    assert committee.reads_alike == [True]  # trained by one recipe: the member reuses the question's tokens
    pooled = committee.grade_all(prompts)
    committee.reads_alike = [False]  # as a member with a tokenizer of its own: it tokenizes each question itself
    for answers in (
        [committee.complete(messages, grade=True) for messages in prompts],
        pooled,
        committee.grade_all(prompts),
    ):
        for answer, a, b in zip(answers, alone, other, strict=True):
            assert answer.text[0] == a.text[0]
            assert answer.expected_grade == pytest.approx((a.expected_grade + b.expected_grade) / 2, abs=1e-4)


def test_a_committee_member_that_is_missing_is_named_at_setup(tmp_path: Path, tiny_model_dir: Path) -> None:
    folder = tmp_path / "model"
    shutil.copytree(tiny_model_dir, folder)
    card = folder / MODEL_CARD
    settings = json.loads(card.read_text()) if card.is_file() else {}
    card.write_text(json.dumps({**settings, "members": ["members/seed-9"]}))
    with pytest.raises(RankerSetupError, match=r"committee member .*seed-9.* does not exist"):
        make_llm_ranker(f"inprocess:{folder}", {})


def test_a_card_whose_dtype_is_not_torchs_is_named_at_setup(tmp_path: Path, tiny_model_dir: Path) -> None:
    folder = tmp_path / "model"
    shutil.copytree(tiny_model_dir, folder)
    (folder / MODEL_CARD).write_text(json.dumps({"prompt_format": "near", "dtype": "bf16"}))
    with pytest.raises(RankerSetupError, match="names dtype 'bf16', not a torch dtype"):
        make_llm_ranker(f"inprocess:{folder}", {})


def test_a_search_records_expected_grades_in_its_audit(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    assert main(["--ranker", "inprocess", "--budget", "6", "--db", str(db), "--run-id", "r", "--quiet"]) == 0
    with sqlite3.connect(db) as connection:
        answers = [a for (a,) in connection.execute("SELECT raw_answer FROM decisions WHERE raw_answer IS NOT NULL")]
        (config,) = connection.execute("SELECT config FROM runs").fetchone()
    assert json.loads(config)["ranker"] == "inprocess"
    assert answers and all("from logprobs" in answer for answer in answers)
    assert dict(llm_ranker_rows(db, "r"))["prompt format"] == "near, history cap 24, a committee of 2 models"


def test_a_folder_that_is_not_a_model_is_a_setup_error(tmp_path: Path) -> None:
    with pytest.raises(RankerSetupError, match="not a Hugging Face model folder"):
        make_llm_ranker(f"inprocess:{tmp_path}", {})
    with pytest.raises(RankerSetupError, match="does not exist"):
        make_llm_ranker(f"inprocess:{tmp_path / 'missing'}", {})
