"""A regular-expression compiler of our own: pattern -> NFA over bytes -> lazy DFA.

The automaton reads the pattern's strings as their UTF-8 bytes, so that it can be walked over
a tokenizer's vocabulary whose tokens are byte strings (a token may end in the middle of a
multi-byte character).

Supported subset (``re.fullmatch(pattern, s, flags=re.ASCII)`` semantics):

    literal characters           any character that is not one of  . * + ? { } ( ) [ ] | \\ ^ $
    escapes                      \\. \\* \\\\ ... (any escaped punctuation is the literal),
                                 \\n \\t \\r \\f \\v \\xHH, \\d \\D \\w \\W \\s \\S (ASCII classes)
    classes                      [abc] [a-z0-9_] [^...]; members and range ends are ASCII;
                                 escapes inside a class as above
    .                            any character except ``\\n``
    operators                    concatenation, ``|``, groups ``( )`` and ``(?: )``
    quantifiers                  ``*`` ``+`` ``?`` ``{m}`` ``{m,}`` ``{m,n}`` (greedy; one per atom)

Not supported (a ``ValueError`` names the position): anchors ``^ $``, backreferences, lookaround,
lazy or possessive quantifiers, flags, non-ASCII members of a class.

A negated class (and ``.``) matches one whole UTF-8 character outside its ASCII members, as
``re`` does on ``str``: the byte-level NFA spells valid UTF-8 (RFC 3629, Table 3-7): one
ASCII byte, or a lead byte followed by the right number of continuation bytes, excluding
overlong forms and surrogates.

Construction: Thompson's NFA (one start, one accept state, epsilon edges); the DFA is the subset
construction done lazily, one ``(state, byte)`` transition at a time, with NFA states that
cannot reach the accept state pruned, so the empty set is the single dead state and every
live DFA state can still be completed to a match.
"""

from __future__ import annotations

from dataclasses import dataclass

# AST nodes: ("lit", bytes) | ("cls", frozenset[int] ascii codes, negated) | ("cat", [nodes])
#            | ("alt", [nodes]) | ("rep", node, m, n or None)
_SPECIAL = set(".*+?{}()[]|\\^$")
_MAX_REPEAT = 1000

_DIGIT = frozenset(range(ord("0"), ord("9") + 1))
_WORD = frozenset(
    list(range(ord("a"), ord("z") + 1))
    + list(range(ord("A"), ord("Z") + 1))
    + list(_DIGIT)
    + [ord("_")]
)
_SPACE = frozenset(b" \t\n\r\f\v")
_ASCII = frozenset(range(128))
_SIMPLE_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "f": "\f", "v": "\v"}
_CLASS_ESCAPES = {
    "d": (_DIGIT, False),
    "D": (_DIGIT, True),
    "w": (_WORD, False),
    "W": (_WORD, True),
    "s": (_SPACE, False),
    "S": (_SPACE, True),
}


class _Parser:
    def __init__(self, pattern: str) -> None:
        self.p = pattern
        self.i = 0

    def error(self, message: str) -> ValueError:
        return ValueError(f"compile_regex: {message} at position {self.i} in {self.p!r}")

    def peek(self) -> str | None:
        return self.p[self.i] if self.i < len(self.p) else None

    def parse(self):
        node = self.alternation()
        if self.i != len(self.p):
            raise self.error(f"unbalanced {self.p[self.i]!r}")
        return node

    def alternation(self):
        branches = [self.concatenation()]
        while self.peek() == "|":
            self.i += 1
            branches.append(self.concatenation())
        return branches[0] if len(branches) == 1 else ("alt", branches)

    def concatenation(self):
        items = []
        while self.peek() is not None and self.peek() not in "|)":
            items.append(self.repetition())
        return items[0] if len(items) == 1 else ("cat", items)

    def repetition(self):
        start = self.i
        node = self.atom()
        quantified = False
        while self.peek() is not None and self.peek() in "*+?{":
            if self.peek() == "{" and not self._is_braces():
                break
            if quantified:
                raise self.error("multiple repeat (lazy/possessive quantifiers are unsupported)")
            quantified = True
            c = self.peek()
            self.i += 1
            if c == "*":
                node = ("rep", node, 0, None)
            elif c == "+":
                node = ("rep", node, 1, None)
            elif c == "?":
                node = ("rep", node, 0, 1)
            else:
                m, n = self._braces()
                node = ("rep", node, m, n)
        if self.i == start:  # pragma: no cover - atom always consumes
            raise self.error("empty atom")
        return node

    def _is_braces(self) -> bool:
        # Like re: "{" is a quantifier only in the forms {m}, {m,}, {,n}, {m,n}; else a literal.
        j = self.p.find("}", self.i)
        if j < 0:
            return False
        body = self.p[self.i + 1 : j]
        parts = body.split(",")
        if len(parts) == 1:
            return parts[0].isdigit()
        if len(parts) == 2:
            return (parts[0] == "" or parts[0].isdigit()) and (parts[1] == "" or parts[1].isdigit())
        return False

    def _braces(self) -> tuple[int, int | None]:
        j = self.p.index("}", self.i)
        body = self.p[self.i : j]
        self.i = j + 1
        if "," in body:
            a, b = body.split(",")
            m = int(a) if a else 0
            n = int(b) if b else None
        else:
            m = n = int(body)
        if n is not None and n < m:
            raise self.error(f"min repeat {m} greater than max repeat {n}")
        if m > _MAX_REPEAT or (n is not None and n > _MAX_REPEAT):
            raise self.error(f"repeat counts above {_MAX_REPEAT} are unsupported")
        return m, n

    def atom(self):
        c = self.peek()
        if c == "(":
            self.i += 1
            if self.p.startswith("?:", self.i):
                self.i += 2
            elif self.peek() == "?":
                raise self.error("only (?: ) groups are supported")
            node = self.alternation()
            if self.peek() != ")":
                raise self.error("missing )")
            self.i += 1
            return node
        if c == "[":
            return self.char_class()
        if c == ".":
            self.i += 1
            return ("cls", frozenset({ord("\n")}), True)
        if c == "\\":
            return self.escape(in_class=False)
        if c in "^$":
            raise self.error(f"anchor {c!r} is unsupported (patterns are always fully matched)")
        if c in "*+?":
            raise self.error(f"nothing to repeat before {c!r}")
        if c == "{" and self._is_braces():
            raise self.error("nothing to repeat before '{'")
        self.i += 1
        return ("lit", c.encode("utf-8"))

    def escape(self, in_class: bool):
        self.i += 1
        c = self.peek()
        if c is None:
            raise self.error("bad escape (end of pattern)")
        self.i += 1
        if c in _SIMPLE_ESCAPES:
            return ("lit", _SIMPLE_ESCAPES[c].encode())
        if c == "x":
            digits = self.p[self.i : self.i + 2]
            if len(digits) != 2 or any(d not in "0123456789abcdefABCDEF" for d in digits):
                raise self.error("bad escape \\x (two hex digits expected)")
            self.i += 2
            return ("lit", chr(int(digits, 16)).encode("utf-8"))
        if c in _CLASS_ESCAPES:
            members, negated = _CLASS_ESCAPES[c]
            return ("cls", members, negated)
        if not c.isalnum() and c.isascii():
            return ("lit", c.encode())
        raise self.error(f"bad or unsupported escape \\{c}")

    def _class_member(self) -> int | tuple[frozenset[int], bool]:
        c = self.peek()
        if c is None:
            raise self.error("unterminated character set")
        if c == "\\":
            node = self.escape(in_class=True)
            if node[0] == "cls":
                return (node[1], node[2])
            if len(node[1]) != 1:
                raise self.error("non-ASCII escape in a class is unsupported")
            return node[1][0]
        if not c.isascii():
            raise self.error(f"non-ASCII character {c!r} in a class is unsupported")
        self.i += 1
        return ord(c)

    def char_class(self):
        self.i += 1
        negated = self.peek() == "^"
        if negated:
            self.i += 1
        members: set[int] = set()
        complements: list[frozenset[int]] = []
        first = True
        while True:
            c = self.peek()
            if c is None:
                raise self.error("unterminated character set")
            if c == "]" and not first:
                self.i += 1
                break
            first = False
            lo = self._class_member()
            if isinstance(lo, tuple):
                if lo[1]:
                    complements.append(lo[0])
                else:
                    members |= lo[0]
                continue
            if self.peek() == "-" and self.i + 1 < len(self.p) and self.p[self.i + 1] != "]":
                self.i += 1
                hi = self._class_member()
                if isinstance(hi, tuple):
                    raise self.error("bad character range")
                if hi < lo:
                    raise self.error(f"bad character range {chr(lo)}-{chr(hi)}")
                members |= set(range(lo, hi + 1))
            else:
                members.add(lo)
        if complements:
            # [\D...] contains every non-ASCII character; only its ASCII complement can be listed
            # as a negated class of ASCII members: [\Dx] = not (digits minus {x}).
            if negated:
                raise self.error("negated class containing \\D, \\W or \\S is unsupported")
            excluded = set(_ASCII)
            for comp in complements:
                excluded &= comp
            excluded -= members
            return ("cls", frozenset(excluded), True)
        return ("cls", frozenset(members), negated)


def parse_regex(pattern: str):
    """Parse ``pattern`` (the documented subset) into a small AST of tuples."""
    if not isinstance(pattern, str):
        raise TypeError(f"compile_regex: pattern must be str, got {type(pattern).__name__}")
    return _Parser(pattern).parse()


_SPECIAL_CHARS = ".*+?{}()[]|\\^$-"


def regex_escape(text: str) -> str:
    """Escape ``text`` so the pattern matches it literally (like ``re.escape`` on the subset)."""
    out = []
    for ch in text:
        if ch in _SPECIAL_CHARS:
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        else:
            out.append(ch)
    return "".join(out)


# ---------------------------------------------------------------- NFA (Thompson)
class _NFABuilder:
    def __init__(self) -> None:
        self.eps: list[list[int]] = []
        self.edges: list[list[tuple[frozenset[int], int]]] = []

    def state(self) -> int:
        self.eps.append([])
        self.edges.append([])
        return len(self.eps) - 1

    def edge(self, a: int, labels, b: int) -> None:
        labels = frozenset(labels)
        if labels:
            self.edges[a].append((labels, b))

    def build(self, node) -> tuple[int, int]:
        """Fragment for ``node``: (start, end), one start and one end state."""
        kind = node[0]
        if kind == "lit":
            start = cur = self.state()
            for byte in node[1]:
                nxt = self.state()
                self.edge(cur, (byte,), nxt)
                cur = nxt
            return start, cur
        if kind == "cls":
            return self._char_class(node[1], node[2])
        if kind == "cat":
            start = cur = self.state()
            for item in node[1]:
                s, e = self.build(item)
                self.eps[cur].append(s)
                cur = e
            return start, cur
        if kind == "alt":
            start, end = self.state(), self.state()
            for item in node[1]:
                s, e = self.build(item)
                self.eps[start].append(s)
                self.eps[e].append(end)
            return start, end
        if kind == "rep":
            _, inner, m, n = node
            start = cur = self.state()
            for _ in range(m):
                s, e = self.build(inner)
                self.eps[cur].append(s)
                cur = e
            end = self.state()
            if n is None:  # star: loop on one more copy
                s, e = self.build(inner)
                self.eps[cur].append(s)
                self.eps[e].append(s)
                self.eps[e].append(end)
                self.eps[cur].append(end)
            else:  # (n - m) optional copies, each may skip to the end
                for _ in range(n - m):
                    s, e = self.build(inner)
                    self.eps[cur].append(s)
                    self.eps[cur].append(end)
                    cur = e
                self.eps[cur].append(end)
            return start, end
        raise AssertionError(kind)  # pragma: no cover

    def _char_class(self, members: frozenset[int], negated: bool) -> tuple[int, int]:
        start, end = self.state(), self.state()
        if not negated:
            self.edge(start, members, end)
            return start, end
        self.edge(start, _ASCII - members, end)

        def rng(a: int, b: int) -> range:
            return range(a, b + 1)

        cont = rng(0x80, 0xBF)
        # Well-formed UTF-8 sequences of 2-4 bytes (Unicode 15, Table 3-7).
        for seq in (
            (rng(0xC2, 0xDF), cont),
            ((0xE0,), rng(0xA0, 0xBF), cont),
            (list(rng(0xE1, 0xEC)) + [0xEE, 0xEF], cont, cont),
            ((0xED,), rng(0x80, 0x9F), cont),
            ((0xF0,), rng(0x90, 0xBF), cont, cont),
            (rng(0xF1, 0xF3), cont, cont, cont),
            ((0xF4,), rng(0x80, 0x8F), cont, cont),
        ):
            cur = start
            for k, labels in enumerate(seq):
                nxt = end if k == len(seq) - 1 else self.state()
                self.edge(cur, labels, nxt)
                cur = nxt
        return start, end


@dataclass
class _NFA:
    eps: list[list[int]]
    # per state: {byte: [targets]}
    moves: list[dict[int, list[int]]]
    start: int
    accept: int
    live: list[bool]  # state can reach ``accept``


def _compile_nfa(node) -> _NFA:
    b = _NFABuilder()
    start, accept = b.build(node)
    moves: list[dict[int, list[int]]] = []
    for edges in b.edges:
        table: dict[int, list[int]] = {}
        for labels, target in edges:
            for byte in labels:
                table.setdefault(byte, []).append(target)
        moves.append(table)
    # co-reachability: reverse graph search from accept
    reverse: list[list[int]] = [[] for _ in b.eps]
    for a, targets in enumerate(b.eps):
        for t in targets:
            reverse[t].append(a)
    for a, edges in enumerate(b.edges):
        for _, t in edges:
            reverse[t].append(a)
    live = [False] * len(b.eps)
    stack = [accept]
    live[accept] = True
    while stack:
        s = stack.pop()
        for a in reverse[s]:
            if not live[a]:
                live[a] = True
                stack.append(a)
    return _NFA(b.eps, moves, start, accept, live)


DEAD = -1


class RegexAutomaton:
    """A lazily determinized automaton over bytes for ``pattern``.

    ``initial`` is the start state; ``step(state, byte)`` the next state or ``DEAD`` (no
    completion to a match exists); ``is_accepting(state)``; ``fullmatch(text)``.
    DFA states are small ints; each is a frozenset of live NFA states, made on first use.

    >>> a = RegexAutomaton("(ab)+c?")
    >>> a.fullmatch("abab"), a.fullmatch("abc"), a.fullmatch("ac")
    (True, True, False)
    """

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern
        self._nfa = _compile_nfa(parse_regex(pattern))
        self._ids: dict[frozenset[int], int] = {}
        self._sets: list[frozenset[int]] = []
        self._accepting: list[bool] = []
        self._trans: list[dict[int, int]] = []
        self.initial = self._intern(self._closure([self._nfa.start]))

    def _closure(self, states) -> frozenset[int]:
        eps, live = self._nfa.eps, self._nfa.live
        seen = set(states)
        stack = list(states)
        while stack:
            s = stack.pop()
            for t in eps[s]:
                if t not in seen:
                    seen.add(t)
                    stack.append(t)
        return frozenset(s for s in seen if live[s])

    def _intern(self, states: frozenset[int]) -> int:
        if not states:
            return DEAD
        sid = self._ids.get(states)
        if sid is None:
            sid = len(self._sets)
            self._ids[states] = sid
            self._sets.append(states)
            self._accepting.append(self._nfa.accept in states)
            self._trans.append({})
        return sid

    @property
    def num_states(self) -> int:
        """DFA states made so far (the construction is lazy)."""
        return len(self._sets)

    def step(self, state: int, byte: int) -> int:
        """The state after reading ``byte`` from ``state`` (``DEAD`` stays ``DEAD``)."""
        if state == DEAD:
            return DEAD
        if not 0 <= state < len(self._sets):
            raise ValueError(f"RegexAutomaton.step: no state {state} (made {len(self._sets)})")
        table = self._trans[state]
        nxt = table.get(byte)
        if nxt is None:
            moves = self._nfa.moves
            targets = [t for s in self._sets[state] for t in moves[s].get(byte, ())]
            nxt = self._intern(self._closure(targets)) if targets else DEAD
            table[byte] = nxt
        return nxt

    def walk(self, data: bytes, state: int | None = None) -> int:
        """The state after reading all of ``data`` from ``state`` (default: the start)."""
        state = self.initial if state is None else state
        for byte in data:
            state = self.step(state, byte)
            if state == DEAD:
                return DEAD
        return state

    def is_accepting(self, state: int) -> bool:
        return state != DEAD and self._accepting[state]

    def fullmatch(self, text: str | bytes) -> bool:
        """Whether the whole of ``text`` (str: its UTF-8 bytes) is in the language."""
        data = text.encode("utf-8") if isinstance(text, str) else bytes(text)
        return self.is_accepting(self.walk(data))
