"""Quality labels of agents' free text (agents/text_quality.py), on hand-made lines."""

from __future__ import annotations

import numpy as np
import pytest

from steertown.agents import text_quality as tq


class TopicEmbedder:
    """A stand-in embedder: one axis per topic word, so cosines are known exactly."""

    name = "minilm"
    TOPICS = ("garden", "coffee", "books", "rocket")

    def __init__(self) -> None:
        self.calls = 0

    def embed(self, texts: list[str]) -> np.ndarray:
        self.calls += 1
        out = np.zeros((len(texts), len(self.TOPICS) + 1), np.float32)
        for i, t in enumerate(texts):
            for j, w in enumerate(self.TOPICS):
                out[i, j] = t.lower().count(w)
            out[i, -1] = 0.05  # a small shared component: no exact zero vectors
        return out / np.linalg.norm(out, axis=1, keepdims=True)


GARDEN = tq.situation_text("park", "a green park", "tend the community garden",
                           "find volunteers for the garden", "")


def label(text: str, action: str = "WORK", history: list[str] | None = None,
          heard: list[str] | None = None, situation: str = GARDEN) -> str:
    lab = tq.QualityLabeler(TopicEmbedder())
    for line in history or []:
        lab.history.setdefault("a", __import__("collections").deque(maxlen=8)).append(line)
    row: dict = {}
    lab.submit(row, "a", action, text, situation, heard or [])
    lab.flush()
    return row["quality"]


def test_ok_lines():
    assert label("I pull weeds in the garden beds by the pond.") == "ok"
    assert label("Ben, will you help me water the garden today?", "TALK") == "ok"


def test_move_and_rest_are_not_free_text():
    assert label("", "MOVE") == tq.NOT_FREE_TEXT
    assert label("", "REST") == tq.NOT_FREE_TEXT


@pytest.mark.parametrize("text", ["House.", "Garden work", ""])
def test_too_short(text):
    assert label(text) == "too_short"


@pytest.mark.parametrize("text", [
    "Move <place> to the garden now", "I will tell [name] about the garden",
    "Monday. What can I do for you today?", "I am happy to answer your question.",
    "You've been making some delicious pizza in the garden tonight.",
    "It is tick 7 and I tend the garden beds.",
    "My plan: I have been thinking about the garden all day.",
    "I stack the chairs and sweep the floor.",  # the prompt's worked example, copied
])
def test_template_leak(text):
    assert label(text) == "template_leak"


def test_you_is_fine_when_talking():
    assert label("Would you like to plant the garden with me?", "TALK") == "ok"


@pytest.mark.parametrize("text", [
    "*✏️*💻🎉🔬➡️", "I water the garden 🌱 and smile",
    "Continue as needed. Speak with your team. Work: Continue as needed.",
    "the garden the garden the garden is green", "dig dig dig in the garden",
    "... --- 123 ,,, ;;; garden",
])
def test_garbage(text):
    assert label(text) == "garbage"


def test_repeat_of_own_line_and_parrot():
    line = "I water the tomatoes in the garden."
    assert label(line, history=[line]) == "repeat"
    assert label("I water the tomatoes in the garden!", history=["i water the tomatoes in "
                                                                 "the garden"]) == "repeat"
    assert label(line, "TALK", heard=[line]) == "repeat"
    assert label(line, history=["I sort books in the library today."]) == "ok"


def test_unrelated_by_embedding():
    assert label("I fuel the rocket for the launch tonight.") == "unrelated"
    assert label("I fuel the rocket to water the garden.") == "ok"


def test_unknown_embedder_skips_relatedness():
    emb = TopicEmbedder()
    emb.name = "something-else"
    lab = tq.QualityLabeler(emb)
    row: dict = {}
    lab.submit(row, "a", "WORK", "I fuel the rocket for the launch tonight.", GARDEN, [])
    lab.flush()
    assert row["quality"] == "ok" and emb.calls == 0


def test_history_advances_in_order_and_round_trips():
    emb = TopicEmbedder()
    lab = tq.QualityLabeler(emb, history=2)
    rows = [{} for _ in range(4)]
    lines = ["I rake leaves in the garden.", "I rake leaves in the garden.",
             "I plant beans in the garden.", "I water roses in the garden."]
    for r, t in zip(rows, lines, strict=True):
        lab.submit(r, "a", "WORK", t, GARDEN, [])
    lab.flush()
    assert [r["quality"] for r in rows] == ["ok", "repeat", "ok", "ok"]
    assert emb.calls == 1  # one embedding call per tick
    state = lab.to_state()
    assert state == {"a": lines[2:]}  # bounded history
    other = tq.QualityLabeler(emb, history=2)
    other.load_state(state)
    r1, r2 = {}, {}
    other.submit(r1, "a", "WORK", lines[3], GARDEN, [])
    lab.submit(r2, "a", "WORK", lines[3], GARDEN, [])
    other.flush()
    lab.flush()
    assert r1["quality"] == r2["quality"] == "repeat"


def test_usable_share():
    assert tq.usable_share(["ok", "none", "repeat", "ok", "garbage"]) == 0.5
    assert tq.usable_share(["none"]) is None


@pytest.mark.model
@pytest.mark.xfail(strict=True, reason=(
    "measured 2026-12-02: the real MiniLM labels the off-topic photosynthesis Talk line in "
    "the picnic situation 'ok' (index 2), so RELATED_MIN['minilm'] admits it; open finding "
    "(issue 22); strict, so a fix makes this marker fail and go"))
def test_relatedness_threshold_with_the_real_minilm():
    """RELATED_MIN["minilm"] with the real all-MiniLM-L6-v2 (offline package): the default
    model's lines that fit their situation are kept, off-topic ones are `unrelated`."""
    from steertown.inference import get_embedder

    emb = get_embedder("minilm")
    assert emb.name == "minilm" and type(emb).__name__ != "TopicEmbedder"
    garden = tq.situation_text("park", "a green park with a community garden",
                               "tend the community garden", "find volunteers for the "
                               "community garden", "")
    picnic = tq.situation_text("town_square", "the open square at the centre of town",
                               "sweep the square", "organise a town picnic next weekend",
                               "Cleo: Would you help me plan the picnic?")
    cases = [  # (action, line, situation, expected): the default model's lines (docs/text_quality)
        ("WORK", "I take care of the local community garden.", garden, "ok"),
        ("TALK", "I'm ready to help with your town picnic, I think it's going to be a "
         "fantastic idea for me.", picnic, "ok"),
        ("TALK", "Photosynthesis converts light energy into chemical energy in chloroplasts.",
         picnic, "unrelated"),
        ("WORK", "The quarterly tax filing deadline for corporations falls in April.", garden,
         "unrelated"),
    ]
    lab = tq.QualityLabeler(emb)
    rows = [{} for _ in cases]
    for i, (row, (action, line, situation, _)) in enumerate(zip(rows, cases, strict=True)):
        lab.submit(row, f"a{i}", action, line, situation, [])
    lab.flush()
    assert [r["quality"] for r in rows] == [c[3] for c in cases]
