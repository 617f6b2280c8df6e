"""The incremental detokenizer (trimode.decoding.text): the same text and deltas as decoding the
whole reply on every event (the server's former TextStream, kept here as the reference), on the
real SmolLM2 tokenizer (byte-level BPE) and the tiny test tokenizers, with multi-byte characters
split across tokens, special tokens skipped, and stop strings cut."""

from __future__ import annotations

import io
import random
from collections.abc import Sequence

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trimode.cli_common import TextPrinter
from trimode.decoding.text import Detokenizer
from trimode.tokenizer import Tokenizer


class Reference:
    """The former trimode.server.text.TextStream: decodes the whole reply on every call."""

    def __init__(self, tokenizer, stops: Sequence[str] = ()) -> None:
        self.tokenizer = tokenizer
        self.stops = tuple(stops)
        self.hold = max((len(s) for s in self.stops), default=1) - 1
        self.tokens: list[int] = []
        self.sent = 0

    def add(self, tokens: Sequence[int], final: bool = False) -> str:
        self.tokens.extend(tokens)
        text = self.tokenizer.decode(self.tokens, skip_special_tokens=True)
        cuts = [i for i in (text.find(s) for s in self.stops) if i >= 0]
        if cuts:
            text, final = text[: min(cuts)], True
        if not final:
            text = text.rstrip("\ufffd")
            text = text[: max(len(text) - self.hold, self.sent)]
        delta = text[self.sent :]
        self.sent = max(self.sent, len(text))
        return delta


class Bytes:  # decodes ids as UTF-8 bytes, like a byte-level BPE does
    def decode(self, ids, skip_special_tokens=True):
        return bytes(ids).decode("utf-8", errors="replace")


class Counting:
    """Wraps a tokenizer and counts the ids it is asked to decode."""

    def __init__(self, tokenizer) -> None:
        self.tokenizer, self.decoded = tokenizer, 0

    def decode(self, ids, skip_special_tokens=False):
        self.decoded += len(ids)
        return self.tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)


@pytest.fixture(scope="module")
def smollm2() -> Tokenizer:
    from trimode.model.defaults import smollm2_gguf_path
    from trimode.model.gguf import GGUFFile, build_tokenizer

    try:
        path = smollm2_gguf_path()
    except FileNotFoundError as err:
        pytest.skip(str(err))
    return Tokenizer(build_tokenizer(GGUFFile(path)))


@pytest.fixture(scope="module")
def char_level(tmp_path_factory) -> Tokenizer:
    from conftest import tiny_text_checkpoint  # pytest puts tests/ on sys.path

    return Tokenizer.from_folder(tiny_text_checkpoint(tmp_path_factory.mktemp("text")))


@pytest.fixture(scope="module")
def live_chars() -> Tokenizer:
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "server"))
    from live_server import char_tokenizer

    return char_tokenizer()


def replay(tokenizer, chunks: list[list[int]], stops: Sequence[str], final: bool = True):
    """Deltas of the detokenizer and of the reference over the same events."""
    ours, ref = Detokenizer(tokenizer, stops), Reference(tokenizer, stops)
    got, want = [], []
    for i, chunk in enumerate(chunks):
        last = final and i == len(chunks) - 1
        got.append(ours.add(chunk, final=last))
        want.append(ref.add(chunk, final=last))
    return got, want


def stopped_text(tokenizer, chunks, stops: Sequence[str]) -> str:
    """The whole text, cut before the first stop string to appear as the text grows event by event
    (a stop string that appears in a later event but starts earlier comes too late)."""
    whole = tokenizer.decode([t for c in chunks for t in c], skip_special_tokens=True)
    ids: list[int] = []
    for chunk in chunks:
        ids += chunk
        text = tokenizer.decode(ids, skip_special_tokens=True)
        found = [i for i in (text.find(s) for s in stops) if i >= 0]
        if found:
            return whole[: min(found)]
    return whole


def check(tokenizer, chunks, stops, final=True):
    got, want = replay(tokenizer, chunks, stops, final)
    assert got == want
    whole = tokenizer.decode([t for c in chunks for t in c], skip_special_tokens=True)
    assert whole.startswith("".join(got))  # never text that the final reply would not contain
    # (A stop string with U+FFFD may match an incomplete character that then completes: the
    # reference cut there, and went on at the next event; the engine stops the row at once.)
    if final and not any("\ufffd" in s for s in stops):
        assert "".join(got) == stopped_text(tokenizer, chunks, stops)


def events(ids: list[int], splits: list[int]) -> list[list[int]]:
    """``ids`` cut into events at the given sizes (the rest in the last one; an event may be empty)."""
    out, at = [], 0
    for n in splits:
        out.append(ids[at : at + n])
        at += n
    return out + [ids[at:]]


# Text with characters of 1 to 4 UTF-8 bytes (byte-level BPE splits the rarer ones into byte tokens).
SAMPLES = ["Hello, world! ", "naïve café ", "€ 100 ", "漢字かな ", "🙂👍🏽 ", "\ufffd ", "a\nb\tc ", "def f(x): ", "ëĠ"]
STOPS = st.lists(st.text(alphabet="lo, €漢🙂\ufffd\nabcxyz", min_size=1, max_size=4), max_size=4)


def smollm2_ids(tok: Tokenizer):
    vocab = tok.vocab_size
    byte_ids = [i for i in map(tok.backend.token_to_id, _byte_chars()) if i is not None]
    text = st.lists(st.sampled_from(SAMPLES), min_size=1, max_size=6).map(lambda parts: tok.encode("".join(parts)))
    pieces = st.one_of(
        text,
        st.lists(st.integers(0, vocab - 1), max_size=6),  # anything, specials included (skipped)
        st.lists(st.sampled_from(byte_ids), max_size=8),  # single bytes: split and invalid UTF-8
        st.lists(st.integers(0, 16), max_size=3),  # SmolLM2's special tokens
    )
    return st.lists(pieces, max_size=8).map(lambda ps: [t for p in ps for t in p])


def _byte_chars() -> list[str]:
    from trimode.model.gguf.tokenizer import _bytes_to_unicode

    return list(_bytes_to_unicode().values())


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(data=st.data())
def test_same_deltas_as_decoding_everything_on_smollm2(smollm2, data):
    ids = data.draw(smollm2_ids(smollm2))
    splits = data.draw(st.lists(st.integers(0, 5), max_size=len(ids)))
    whole = smollm2.decode(ids, skip_special_tokens=True)
    spans = st.tuples(st.integers(0, max(len(whole) - 1, 0)), st.integers(1, 4))
    inside = st.lists(spans.map(lambda s: whole[s[0] : s[0] + s[1]]).filter(bool), max_size=2)  # from the text
    stops = data.draw(st.one_of(STOPS, inside) if whole else STOPS)
    check(smollm2, events(ids, splits), stops, final=data.draw(st.booleans()))


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(data=st.data())
def test_same_deltas_as_decoding_everything_on_the_tiny_tokenizers(char_level, live_chars, data):
    tok = data.draw(st.sampled_from([char_level, live_chars]))
    ids = data.draw(st.lists(st.integers(0, tok.vocab_size - 1), max_size=40))
    splits = data.draw(st.lists(st.integers(0, 4), max_size=len(ids)))
    stops = data.draw(st.lists(st.text(alphabet="abc xyz!", min_size=1, max_size=4), max_size=4))
    check(tok, events(ids, splits), stops, final=data.draw(st.booleans()))


@settings(max_examples=300, deadline=None, derandomize=True)
@given(text=st.text(max_size=24), junk=st.lists(st.integers(0x80, 0xFF), max_size=4),
       splits=st.lists(st.integers(0, 3), max_size=40), stops=STOPS, final=st.booleans())
def test_multibyte_characters_split_across_tokens(text, junk, splits, stops, final):
    ids = list(text.encode()) + junk + list("tail€".encode())  # one token per byte, invalid bytes too
    check(Bytes(), events(ids, splits), stops, final)


def test_a_partial_character_is_held_back():
    text = Detokenizer(Bytes())
    euro = list("€".encode())
    assert text.add([ord("a")] + euro[:2]) == "a"  # the text before it is settled
    assert text.held == 1  # the U+FFFD of the incomplete character
    assert text.add(euro[2:] + [ord("b")]) == "€b" and text.held == 0
    assert text.add([0xE2], final=True) == "\ufffd"  # the end: whatever is left


def test_stop_strings_are_held_back_then_cut():
    text = Detokenizer(Bytes(), ["END", "xy"])
    assert text.add(list(b"abcE")) == "ab"  # "cE" may begin "END": the longest stop's length - 1 is held
    assert text.add(list(b"N")) == "c" and text.held == 2
    assert text.add(list(b"D and more")) == "" and text.stopped
    assert text.add(list(b"more"), final=True) == ""


def test_demo_printer_holds_back_partial_characters():
    buf = io.StringIO()
    stream = TextPrinter(Bytes(), buf)
    euro = list("€".encode())
    stream(0, [ord("a")] + euro[:2])
    assert buf.getvalue() == ""  # "a" plus half a character: wait for the rest
    stream(0, euro[2:] + [ord("b")])
    assert buf.getvalue() == "a€b"


@pytest.mark.parametrize("tail", ["plain", "replacement", "specials"])
def test_work_per_token_stays_bounded(smollm2, tail):
    """Each event decodes a short window, however long the reply, even one that keeps ending in
    U+FFFD or adds tokens without text (decoding everything each time is quadratic)."""
    piece = {"plain": smollm2.encode(" the cat sat on the mat"),
             "replacement": smollm2.encode("\ufffd"),
             "specials": [1, 2, 3]}[tail]
    counting = Counting(smollm2)
    text = Detokenizer(counting, ["never seen"])
    out = [text.add(piece) for _ in range(400)]
    ids = piece * 400
    assert "".join(out) + text.add([], final=True) == smollm2.decode(ids, skip_special_tokens=True)
    assert counting.decoded < 30 * len(ids)


# ----------------------------------------------------------------- moved from tests/server/test_text.py
class BytesWithSpecial:
    """Decodes ids as UTF-8 bytes, like a byte-level BPE does (id 0 is a special token)."""

    def decode(self, ids, skip_special_tokens=False):
        return bytes(i for i in ids if i or not skip_special_tokens).decode("utf-8", errors="replace")


def b(text: str) -> list[int]:
    return list(text.encode())


def test_without_stops_only_a_split_character_is_held_back():
    stream = Detokenizer(BytesWithSpecial())
    euro = b("€")
    assert stream.add(b("ab")) == "ab"
    assert stream.add(b("c") + euro[:2]) == "c"  # "c" plus two bytes of three: the bytes wait
    assert stream.add(euro[2:]) == "€"
    assert stream.add([0]) == ""  # special tokens are skipped
    assert stream.tokens == b("abc€") + [0]


def test_a_possible_stop_prefix_is_held_until_settled():
    stream = Detokenizer(BytesWithSpecial(), stops=["END"])
    assert stream.add(b("abcd")) == "ab"  # len("END") - 1 = 2 characters are held back
    assert stream.add(b("E")) == "c"
    assert stream.add(b("N")) == "d"
    assert stream.add(b("x")) == "E"  # "ENx" is no stop: the hold moves on
    assert stream.add([], final=True) == "Nx"  # the end flushes what was held


def test_the_first_stop_string_cuts_the_text():
    stream = Detokenizer(BytesWithSpecial(), stops=["END", "!"])
    assert stream.add(b("hi EN")) == "hi "
    assert stream.add(b("D and more!")) == ""  # cut before "END"; nothing after it is ever sent
    assert stream.add(b("later"), final=True) == ""
    assert stream.tokens == b("hi END and more!later")  # every token is kept, the text is cut
    early = Detokenizer(BytesWithSpecial(), stops=["END", "!"])
    assert early.add(b("a!bEND"), final=False) == "a"  # the earliest of the stop strings wins


@pytest.mark.parametrize("seed", range(20))
def test_pieces_add_up_to_the_cut_reply_however_the_tokens_split(seed):
    text = "naïve € café END tail"
    data, rng, pieces = b(text), random.Random(seed), []
    stream = Detokenizer(BytesWithSpecial(), stops=["END", "é E"])
    i = 0
    while i < len(data):
        n = rng.randint(1, 3)
        piece = stream.add(data[i : i + n], final=i + n >= len(data))
        assert "\ufffd" not in piece  # a half character is never shown
        pieces.append(piece)
        i += n
    assert "".join(pieces) == "naïve € caf"  # "é E" comes before "END"
