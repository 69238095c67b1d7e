"""TextAssembler: holds back partial UTF-8 and possible stop-string starts, releases everything else."""

from __future__ import annotations

from hybrid_workers.engine.detokenize import TextAssembler


def _feed(tokenizer, text: str, stop: tuple[str, ...] = ()) -> tuple[list[str], TextAssembler]:
    assembler = TextAssembler(tokenizer, stop)
    deltas = []
    for token in tokenizer.encode(text, add_special_tokens=False):
        if assembler.stopped:
            break
        deltas.append(assembler.add(token))
    return deltas, assembler


def test_partial_utf8_is_held_until_the_character_is_complete(tiny_lm):
    tokenizer = tiny_lm.tokenizer
    ids = tokenizer.encode("€uro", add_special_tokens=False)
    single = [tokenizer.decode([t]) for t in ids]
    assert "\ufffd" in single[0]  # '€' is 3 bytes the tiny vocabulary splits across tokens
    deltas, assembler = _feed(tokenizer, "€uro")
    assert "\ufffd" not in "".join(deltas)
    assert "".join(deltas) + assembler.flush() == "€uro"


def test_text_that_may_start_a_stop_string_is_held_back(tiny_lm):
    deltas, assembler = _feed(tiny_lm.tokenizer, "one two thr", stop=("three",))
    assert "".join(deltas) == "one two "  # "thr" could still become "three"
    assert assembler.flush() == "thr"


def test_the_earliest_stop_string_wins_and_ends_the_text(tiny_lm):
    deltas, assembler = _feed(tiny_lm.tokenizer, "alpha beta gamma delta", stop=("gamma", "beta"))
    assert "".join(deltas) == "alpha "
    assert assembler.stopped
    assert assembler.flush() == ""
