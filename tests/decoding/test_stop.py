"""trimode.decoding.stop: stop strings seen in the decoded tail of a row, the cut that drops them, and
a row finishing with reason "stop" on the token that completes one."""

from __future__ import annotations

import pytest

from trimode.decoding.base import GenerationConfig, Row
from trimode.decoding.stop import StopStrings


class Bytes:
    """Decodes ids as UTF-8 bytes, like a byte-level BPE does."""

    def decode(self, ids, skip_special_tokens=False):
        return bytes(ids).decode("utf-8", errors="replace")


def b(text: str) -> list[int]:
    return list(text.encode())


def test_stop_strings_must_be_non_empty():
    with pytest.raises(ValueError, match="non-empty"):
        StopStrings(Bytes(), ["END", ""])


def test_the_tail_window_covers_the_longest_stop_in_bytes():
    assert StopStrings(Bytes(), ["ab", "€"]).window == 2 * 3 + 8  # "€" is 3 bytes
    assert StopStrings(Bytes(), []).window == 8


def test_a_stop_string_is_seen_at_the_end_of_the_text():
    stop = StopStrings(Bytes(), ["END", "€"])
    assert stop(b("the END"))
    assert not stop(b("the EN"))
    assert stop(b("price 5€"))
    assert not stop(b("price 5€")[:-1])  # two of the euro's three bytes: not yet
    # Only the tail is decoded: the check runs after every token, so an older match was seen then.
    assert not stop(b("END" + "x" * 20))
    assert stop(b("y" * 500 + "END"))


def test_trim_cuts_before_the_first_stop_string():
    stop = StopStrings(Bytes(), ["bye", "."])
    assert stop.trim("hello world. bye") == "hello world"
    assert stop.trim("hello bye. world") == "hello "
    assert stop.trim("nothing to cut") == "nothing to cut"
    assert stop.trim(".") == ""


def test_a_row_stops_on_the_token_that_completes_a_stop_string():
    config = GenerationConfig(max_new_tokens=50, stop=StopStrings(Bytes(), ["END"]))
    row = Row([1], config)
    assert row.offer(b("ok EN")) == b("ok EN") and row.active
    assert row.offer(b("Dxyz")) == b("D")  # emitted up to the stop string, the rest is void
    assert row.finish == "stop" and bytes(row.tokens) == b"ok END"
