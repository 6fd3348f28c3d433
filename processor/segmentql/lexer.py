"""SegmentQL lexer: text to a list of positioned tokens.

Hand-written so that every token knows its line and column and so that the context-dependent
rules of FilterQL (spec §1.3) are explicit: ``name(`` with no space is a function call, ``'x'``
and `` `x` `` quote identifiers (not strings), identifiers may contain ``-`` and ``/``, a number
glued to a unit (``5d``) is refused with a hint to quote date math. Newlines are kept as tokens
because they separate children inside ``AND ( ... )`` groups; comments are kept so the statement
parser can turn leading ones into a description.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import SegmentQLError

KEYWORDS = frozenset({
    "filter", "select", "from", "where", "limit", "with", "alias", "and", "or", "not", "in",
    "intersects", "like", "contains", "between", "include", "exists", "is", "null", "as",
})
#: Keywords that, glued to "(", are the function of the same name (spec §1.2 notes).
FUNCTION_KEYWORDS = frozenset({"not", "exists", "contains"})
_TWO_CHAR_OPS = frozenset({"==", "!=", "<>", "<=", ">=", "&&", "||"})
_ONE_CHAR_OPS = frozenset("=<>!+-*/%")
_PUNCT = {"(": "LPAREN", ")": "RPAREN", "[": "LBRACKET", "]": "RBRACKET", ",": "COMMA", ";": "SEMI"}
_IDENT_QUOTES = frozenset("`'")
_DIGITS = frozenset("0123456789")  # ASCII only: int("²") would fail


@dataclass(frozen=True)
class Token:
    """One token. ``kind`` is one of IDENT KEYWORD FUNC STRING NUMBER OP LPAREN RPAREN LBRACKET
    RBRACKET COMMA SEMI NEWLINE COMMENT JSON EOF; ``text`` is the decoded value (keywords and
    function names lower-cased); ``parts`` holds identifier segments; ``quoted`` marks an
    identifier written in quotes (so `` `true` `` is a field, not a boolean)."""

    kind: str
    text: str
    line: int
    col: int
    parts: tuple[str, ...] = ()
    quoted: bool = False


def is_ident_start(ch: str) -> bool:
    return ch.isalpha() or ch in "_.@"


def is_ident_char(ch: str) -> bool:
    return ch.isalnum() or ch in "_.-/@"


class Lexer:
    """Single-use tokenizer; call :meth:`tokens` once."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.line = 1
        self.line_start = 0
        self.out: list[Token] = []

    # -- helpers -------------------------------------------------------------------------
    def _col(self, pos: int | None = None) -> int:
        return (self.pos if pos is None else pos) - self.line_start + 1

    def _peek(self, k: int = 0) -> str:
        i = self.pos + k
        return self.text[i] if i < len(self.text) else ""

    def _error(self, message: str, expected: tuple[str, ...] = ()) -> SegmentQLError:
        return SegmentQLError(message, self.line, self._col(), expected)

    def _emit(self, kind: str, text: str, line: int, col: int, **kw: object) -> None:
        self.out.append(Token(kind, text, line, col, **kw))  # type: ignore[arg-type]

    def _advance_over(self, end: int) -> None:
        """Move to ``end`` keeping line bookkeeping right across embedded newlines."""
        while self.pos < end:
            if self.text[self.pos] == "\n":
                self.line += 1
                self.line_start = self.pos + 1
            self.pos += 1

    def _prev_is_include(self) -> bool:
        for tok in reversed(self.out):
            if tok.kind in ("NEWLINE", "COMMENT"):
                continue
            return tok.kind == "KEYWORD" and tok.text == "include"
        return False

    # -- main loop -----------------------------------------------------------------------
    def tokens(self) -> list[Token]:
        while self.pos < len(self.text):
            self._next_token()
        self._emit("EOF", "", self.line, self._col())
        return self.out

    def _next_token(self) -> None:
        ch = self._peek()
        two = ch + self._peek(1)
        if ch == "\n":
            self._emit("NEWLINE", "\n", self.line, self._col())
            self._advance_over(self.pos + 1)
        elif ch in " \t\r\f\v":
            self.pos += 1
        elif two in ("--", "//") or ch == "#":
            self._line_comment()
        elif two == "/*":
            self._block_comment()
        elif ch == '"':
            self._string()
        elif ch in _IDENT_QUOTES or (ch == "[" and self._bracket_is_identifier()):
            self._identifier()
        elif ch == "{":
            self._json_object()
        elif ch in _DIGITS and self._prev_is_include():
            self._identifier()  # INCLUDE 3d42...: ids may start with a digit
        elif ch in _DIGITS or (ch == "." and self._peek(1) in _DIGITS):
            self._number()
        elif is_ident_start(ch):
            self._identifier()
        elif ch in _PUNCT:
            self._emit(_PUNCT[ch], ch, self.line, self._col())
            self.pos += 1
        elif two in _TWO_CHAR_OPS:
            self._emit("OP", "!=" if two == "<>" else two, self.line, self._col())
            self.pos += 2
        elif ch in _ONE_CHAR_OPS:
            self._emit("OP", ch, self.line, self._col())
            self.pos += 1
        else:
            raise self._error(f"unexpected character {ch!r}")

    # -- comments ------------------------------------------------------------------------
    def _line_comment(self) -> None:
        start, col = self.pos, self._col()
        end = self.text.find("\n", start)
        end = len(self.text) if end < 0 else end
        body = self.text[start:end]
        body = body[1:] if body.startswith("#") else body[2:]
        self._emit("COMMENT", body.strip(), self.line, col)
        self.pos = end

    def _block_comment(self) -> None:
        line, col = self.line, self._col()
        end = self.text.find("*/", self.pos + 2)
        if end < 0:
            raise self._error("unterminated /* comment", ("*/",))
        body = self.text[self.pos + 2 : end]
        self._advance_over(end + 2)
        for part in body.strip().splitlines():
            self._emit("COMMENT", part.strip(), line, col)

    # -- literals ------------------------------------------------------------------------
    def _string(self) -> None:
        """Double-quoted string; ``\\"`` and ``""`` are quotes, ``\\\\`` a backslash."""
        line, col = self.line, self._col()
        i, buf, text = self.pos + 1, [], self.text
        while True:
            if i >= len(text):
                raise SegmentQLError("unterminated string", line, col, ('"',))
            ch = text[i]
            if ch == "\\" and i + 1 < len(text) and text[i + 1] in '"\\':
                buf.append(text[i + 1])
                i += 2
            elif ch == '"' and i + 1 < len(text) and text[i + 1] == '"':
                buf.append('"')
                i += 2
            elif ch == '"':
                break
            else:
                buf.append(ch)
                i += 1
        self._advance_over(i + 1)
        self._emit("STRING", "".join(buf), line, col)

    def _number(self) -> None:
        start, col = self.pos, self._col()
        text = self.text
        i = start
        if text.startswith(("0x", "0X"), i):
            i += 2
            while i < len(text) and text[i] in "0123456789abcdefABCDEF":
                i += 1
        else:
            while i < len(text) and text[i] in _DIGITS:
                i += 1
            if i + 1 < len(text) and text[i] == "." and text[i + 1] in _DIGITS:
                i += 1
                while i < len(text) and text[i] in _DIGITS:
                    i += 1
            i = self._exponent(i)
        if i < len(text) and (is_ident_char(text[i]) and text[i] not in "-/"):
            self.pos = i
            raise self._error(
                f"number {text[start:i]!r} glued to {text[i]!r}: durations are not values; "
                'write date math as a string, e.g. "now-5d"'
            )
        self.pos = i
        self._emit("NUMBER", text[start:i], self.line, col)

    def _exponent(self, i: int) -> int:
        text = self.text
        if i < len(text) and text[i] in "eE":
            j = i + 1
            if j < len(text) and text[j] in "+-":
                j += 1
            if j < len(text) and text[j] in _DIGITS:
                while j < len(text) and text[j] in _DIGITS:
                    j += 1
                return j
        return i

    def _json_object(self) -> None:
        """A balanced ``{...}`` blob (WITH's JSON form); the parser decodes it."""
        line, col, text = self.line, self._col(), self.text
        depth, i, in_str = 0, self.pos, False
        while i < len(text):
            ch = text[i]
            if in_str:
                if ch == "\\":
                    i += 1
                elif ch == '"':
                    in_str = False
            elif ch == '"':
                in_str = True
            elif ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
                if depth == 0:
                    break
            i += 1
        if i >= len(text):
            raise SegmentQLError("unterminated JSON object", line, col, ("}",))
        blob = text[self.pos : i + 1]
        self._advance_over(i + 1)
        self._emit("JSON", blob, line, col)

    # -- identifiers -----------------------------------------------------------------------
    def _bracket_is_identifier(self) -> bool:
        """``[first name]`` quotes an identifier; ``["a", 1]`` / ``[ a ]`` is an array.

        FilterQL allows both, so: an identifier needs a letter right after ``[`` and no
        quote, comma or bracket before the closing ``]``.
        """
        end = self.text.find("]", self.pos)
        if end < 0 or not is_ident_start(self._peek(1)):
            return False
        body = self.text[self.pos + 1 : end]
        if any(c in body for c in '",([\n'):
            return False
        return body.strip().lower() not in ("true", "false", "null")

    def _identifier(self) -> None:
        line, col = self.line, self._col()
        parts: list[str] = []
        quoted = False
        while True:
            ch = self._peek()
            if ch in _IDENT_QUOTES or ch == "[":
                parts.append(self._quoted_part())
                quoted = True
            else:
                part = self._bare_part()
                if not part:
                    raise self._error(f"unexpected character {self._peek()!r}")
                parts.append(part)
            if self._peek() == "." and (self._peek(1) in _IDENT_QUOTES):
                self.pos += 1
                continue
            if quoted and self._peek() == "." and is_ident_start(self._peek(1)):
                self.pos += 1
                continue
            break
        self._emit_word(parts, quoted, line, col)

    def _emit_word(self, parts: list[str], quoted: bool, line: int, col: int) -> None:
        word = parts[0].lower()
        glued_paren = self._peek() == "("
        if not quoted and len(parts) == 1 and word in KEYWORDS:
            if glued_paren and word in FUNCTION_KEYWORDS:
                self._emit("FUNC", word, line, col)
            else:
                self._emit("KEYWORD", word, line, col)
        elif not quoted and len(parts) == 1 and glued_paren:
            self._emit("FUNC", word, line, col)
        else:
            self._emit("IDENT", ".".join(parts), line, col, parts=tuple(parts), quoted=quoted)

    def _bare_part(self) -> str:
        start, text = self.pos, self.text
        i = start
        while i < len(text) and is_ident_char(text[i]):
            # Comment openers end a bare identifier: "a--b" is "a" then a comment.
            if text.startswith(("--", "//", "/*"), i):
                break
            if text[i] == "." and i + 1 < len(text) and text[i + 1] in _IDENT_QUOTES:
                break
            i += 1
        self.pos = i
        return text[start:i]

    def _quoted_part(self) -> str:
        """`` `x` `` / ``'x'`` with the quote doubled to escape it; ``[x]`` with no escape."""
        line, col = self.line, self._col()
        opener = self._peek()
        closer = "]" if opener == "[" else opener
        i, buf, text = self.pos + 1, [], self.text
        while True:
            if i >= len(text):
                raise SegmentQLError("unterminated quoted identifier", line, col, (closer,))
            if text[i] == closer:
                if opener != "[" and i + 1 < len(text) and text[i + 1] == closer:
                    buf.append(closer)
                    i += 2
                    continue
                break
            buf.append(text[i])
            i += 1
        self._advance_over(i + 1)
        if not buf:
            raise SegmentQLError("empty quoted identifier", line, col)
        return "".join(buf)


def tokenize(text: str) -> list[Token]:
    """Tokens of ``text`` ending with an EOF token; raises :class:`SegmentQLError`."""
    return Lexer(text).tokens()
