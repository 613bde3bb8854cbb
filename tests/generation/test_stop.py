"""Stop strings across token boundaries, with held-back text for streaming."""

from tinyllm.generation.stop import StopStringMatcher


def run(pieces, stop):
    m = StopStringMatcher(stop)
    out, stopped = "", False
    for piece in pieces:
        emit, stopped = m.feed(piece)
        out += emit
        if stopped:
            break
    if not stopped:
        out += m.flush()
    return out, stopped


def test_stop_string_split_over_tokens():
    assert run(["Hel", "lo\n", "\nWorld"], ["\n\n"]) == ("Hello", True)
    assert run(["a", "b", "c", "d"], ["bc"]) == ("a", True)


def test_held_back_prefix_is_released_when_it_does_not_complete():
    m = StopStringMatcher(["abc"])
    assert m.feed("xa") == ("x", False)  # "a" might start "abc"
    assert m.feed("b") == ("", False)
    assert m.feed("d") == ("abd", False)
    assert run(["xa", "b"], ["abc"]) == ("xab", False)  # flush at the end


def test_earliest_of_several_stop_strings():
    assert run(["one two three"], ["three", "two"]) == ("one ", True)
