"""Stop strings matched on decoded text, across token boundaries, for streaming.

Tokens arrive one decoded piece at a time; a stop string may straddle pieces ("\\n\\n" from
"\\n" + "\\n"). ``StopStringMatcher.feed(piece)`` returns the text that is safe to emit now and
whether a stop string was found: it holds back the longest suffix of the pending text that is
a prefix of some stop string (it might still complete one), and on a match it emits the text
up to the start of the earliest stop string (the stop string itself is not returned, as
OpenAI's API does).
"""

from __future__ import annotations

from collections.abc import Sequence


class StopStringMatcher:
    def __init__(self, stop: Sequence[str]) -> None:
        if any(not isinstance(s, str) or s == "" for s in stop):
            raise ValueError(f"StopStringMatcher: stop strings must be non-empty str, got {stop!r}")
        self.stop = list(stop)
        self.pending = ""
        self.stopped = False

    def _held_back(self) -> int:
        """Length of the longest suffix of pending that is a proper prefix of a stop string."""
        best = 0
        for s in self.stop:
            for k in range(min(len(s) - 1, len(self.pending)), best, -1):
                if self.pending.endswith(s[:k]):
                    best = k
                    break
        return best

    def feed(self, piece: str) -> tuple[str, bool]:
        """(text to emit now, whether a stop string ended the text)."""
        if self.stopped:
            return "", True
        self.pending += piece
        hits = [i for i in (self.pending.find(s) for s in self.stop) if i >= 0]
        if hits:
            out, self.pending, self.stopped = self.pending[: min(hits)], "", True
            return out, True
        keep = self._held_back()
        cut = len(self.pending) - keep
        out, self.pending = self.pending[:cut], self.pending[cut:]
        return out, False

    def flush(self) -> str:
        """The held-back text at the end of generation (no stop string completed)."""
        out, self.pending = ("" if self.stopped else self.pending), ""
        return out
