"""Tests for nerbatch.text: GMB-style tokenisation, sentence splitting, exact offsets."""

from __future__ import annotations

import dataclasses
import html
import random
import re
import textwrap
import time
import unicodedata

import pytest

from nerbatch.text import _ALL_INVISIBLE, SentenceTokens, segment

# Characters segment() treats as separators besides str.isspace() and Cc / Cs.
_INVISIBLE_SEPARATORS = set(
    "\u061c\u180e\u200b\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2060\u2061\u2062\u2063\u2064"
    "\u2066\u2067\u2068\u2069\u206a\u206b\u206c\u206d\u206e\u206f\ufeff\ufff9\ufffa\ufffb"
)


_JOINERS = str.maketrans("", "", "\u2060")


def _is_separator(ch: str) -> bool:
    return ch.isspace() or unicodedata.category(ch) in ("Cc", "Cs") or ch in _INVISIBLE_SEPARATORS


# An HTML character reference (escaped any number of times) to one character reads as that character,
# and so does a character's UTF-8 read as cp1252 (a Latin-1 or Latin Extended-A character, punctuation and
# signs up to U+214F, a byte order mark, emoji).
_CP1252 = "".join(bytes([b]).decode("cp1252", errors="ignore") or chr(b) for b in range(0x80, 0xC0))
_REFERENCE = re.compile(r"&(?:amp;)*(#[0-9]{1,7}|#[xX][0-9a-fA-F]{1,6}|[A-Za-z][A-Za-z0-9]{1,31});"
                        f"|[\u00c2-\u00c5][{_CP1252}]|\u00e2[{_CP1252}]{{2}}|\u00ef\u00bb\u00bf|\u00f0[{_CP1252}]{{3}}")


def _reference_value(m: re.Match) -> str:
    reference = m.group()
    if reference[0] != "&":
        try:
            value = bytes(0x80 + _CP1252.index(ch) if ch in _CP1252 else ord(ch) for ch in reference).decode("utf-8")
        except UnicodeDecodeError:
            return reference
        readable = "\u00a0" <= value <= "\u214f" or value == "\ufeff" or value >= "\U0001f000"
        if len(reference) == 2 and reference[1] in _CP1252[:32] and m.string[m.start() - 1:m.start()].isupper():
            return reference  # "P\u00c4IV\u00c4\u201d": a word in capitals before a quote
        return value if len(value) == 1 and readable else reference
    value = html.unescape(f"&{m.group(1)};")  # what it stands for, however many times it was escaped
    return value if len(value) == 1 else reference


def _decoded(text: str) -> str:
    return _REFERENCE.sub(_reference_value, text)


def check_invariants(text: str, sentences: list[SentenceTokens]) -> None:
    """Offsets exact (a character reference spanned whole, read as its character), strictly increasing,
    non-overlapping; tokens cover every non-separator character and contain no separator; marks stay with
    their base."""
    prev_end = 0
    covered = bytearray(len(text))
    for m in _REFERENCE.finditer(text):  # a reference to a separator is one
        value = _reference_value(m)
        if len(value) == 1 and (_is_separator(value) or _ALL_INVISIBLE(value)):
            covered[m.start():m.end()] = b"\x01" * (m.end() - m.start())
    for s in sentences:
        assert isinstance(s, SentenceTokens)
        assert len(s.words) == len(s.starts) == len(s.ends) > 0
        assert s.start == s.starts[0] and s.end == s.ends[-1]
        for w, a, b in zip(s.words, s.starts, s.ends):
            assert text[a:b] == w or _decoded(text[a:b]) == w, (w, a, b)
            assert a >= prev_end and b > a, (w, a, b, prev_end)
            # a word joiner between word characters joins them; anywhere else it separates
            assert not any(_is_separator(ch) for ch in w[0] + w[1:-1].translate(_JOINERS) + w[-1]), repr(w)
            # a combining mark right after a token belongs to it
            assert b == len(text) or unicodedata.category(_decoded(text[b:b + 40])[0])[0] != "M", (repr(w), b)
            covered[a:b] = b"\x01" * (b - a)
            prev_end = b
    for i, ch in enumerate(text):
        if not covered[i]:
            # a run of characters that show nothing on their own is no token, nor an e-mail's quote marks
            quote_mark = ch == ">" and not re.sub(r"[\s>]", "", re.split(r"[\n\r\x0b\x0c\x1c-\x1e\x85\u2028\u2029]",
                                                                     text[:i])[-1])
            assert _is_separator(ch) or _ALL_INVISIBLE(ch) or quote_mark, f"dropped {ch!r} at {i} in {text!r}"


def words(text: str) -> list[list[str]]:
    sentences = segment(text)
    check_invariants(text, sentences)
    return [s.words for s in sentences]


def flat(text: str) -> list[str]:
    return [w for s in words(text) for w in s]


# --------------------------------------------------------------------------- API shape


def test_empty_and_whitespace_only() -> None:
    for text in ["", " ", "\n\n", "\t\r\n \u00a0\u3000", "\x00\x07\u200b\ufeff\u200e", "\u2029"]:
        assert segment(text) == []


def test_sentence_tokens_is_frozen_with_slots() -> None:
    s = segment("Hello world.")[0]
    assert s.words == ["Hello", "world", "."]
    assert s.starts == [0, 6, 11] and s.ends == [5, 11, 12]
    assert (s.start, s.end) == (0, 12)
    assert not hasattr(s, "__dict__")
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.words = []  # type: ignore[misc]


def test_non_str_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        segment(b"bytes")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- GMB conventions

GMB_CASES = [
    (
        "Thousands of demonstrators have marched through London to protest the war in Iraq.",
        "Thousands of demonstrators have marched through London to protest the war in Iraq .",
    ),
    (
        "U.S. Secretary of State Condoleezza Rice met Mr. Abbas in Ramallah on Jan. 5, and Gen. David Petraeus arrived.",
        "U.S. Secretary of State Condoleezza Rice met Mr. Abbas in Ramallah on Jan. 5 , and Gen. David Petraeus arrived .",
    ),
    (
        "The U.N.-backed court said the 2,00,000 refugees received $1,000 each, up 3.5% from 2007.",
        "The U.N.-backed court said the 2,00,000 refugees received $ 1,000 each , up 3.5 % from 2007 .",
    ),
    (
        "Prices rose 2.3% to $70.85 a barrel at 5 p.m. Friday in Washington, D.C.",
        "Prices rose 2.3 % to $ 70.85 a barrel at 5 p.m. Friday in Washington , D.C.",
    ),
    (
        'He said: "We will not give up," adding that the rebels\' demands were "unacceptable."',
        'He said : " We will not give up , " adding that the rebels \' demands were " unacceptable . "',
    ),
    (
        "The Shi'ite-led government of Nuri al-Maliki won't meet al-Qaida's demands, officials say.",
        "The Shi'ite-led government of Nuri al-Maliki wo n't meet al-Qaida 's demands , officials say .",
    ),
    (
        "President George W. Bush and Vice President Dick Cheney visited St. Louis.",
        "President George W. Bush and Vice President Dick Cheney visited St. Louis .",
    ),
    (
        "Standard & Poor's, AT&T and the HIV/AIDS program (UNAIDS) -- all in the 1990s -- agreed.",
        "Standard & Poor 's , AT&T and the HIV / AIDS program ( UNAIDS ) -- all in the 1990s -- agreed .",
    ),
    (
        "In the '80s, a 19th-century U.S.-made ship sank off Cote d'Ivoire; two-thirds of O'Connor's crew survived.",
        "In the '80s , a 19th-century U.S.-made ship sank off Cote d'Ivoire ; two-thirds of O'Connor 's crew survived .",
    ),
    (
        "Oil- and gas-producing states met at 3:30 in Ecuador's capital, Quito.",
        "Oil- and gas-producing states met at 3:30 in Ecuador 's capital , Quito .",
    ),
    (
        "Visit www.voanews.com or https://example.org/a?b=1 (or mail news@example.com).",
        "Visit www.voanews.com or https://example.org/a?b=1 ( or mail news@example.com ) .",
    ),
    (
        "Write to john.doe@example.com or jane_doe@mail.example.co.uk, not to a@b.",
        "Write to john.doe@example.com or jane_doe@mail.example.co.uk , not to a@b .",
    ),
]


@pytest.mark.parametrize("text,expected", GMB_CASES, ids=[c[0][:30] for c in GMB_CASES])
def test_gmb_style_tokens(text: str, expected: str) -> None:
    assert words(text) == [expected.split(" ")]


@pytest.mark.parametrize(
    "text,expected",
    [
        ("Britain's", ["Britain", "'s"]),
        ("Britain\u2019s", ["Britain", "\u2019s"]),
        ("didn't", ["did", "n't"]),
        ("DIDN'T", ["DID", "N'T"]),
        ("can't", ["ca", "n't"]),
        ("won\u2019t", ["wo", "n\u2019t"]),
        ("I'm", ["I", "'m"]),
        ("they're", ["they", "'re"]),
        ("we've", ["we", "'ve"]),
        ("she'll", ["she", "'ll"]),
        ("he'd", ["he", "'d"]),
        ("workers' rights", ["workers", "'", "rights"]),
        ("Shi'ite", ["Shi'ite"]),
        ("O'Neill's", ["O'Neill", "'s"]),
        ("U.S.'s", ["U.S.", "'s"]),
        ("n't", ["n't"]),
        ("'sup", ["'", "sup"]),
        # the other apostrophes news text has, which the vocabulary folds to "'" as well
        ("Britain\u02bcs", ["Britain", "\u02bcs"]),
        ("didn\u02bct", ["did", "n\u02bct"]),
        ("Britain\u2018s", ["Britain", "\u2018s"]),
        ("didn\u201bt", ["did", "n\u201bt"]),
        ("Qur\u02bcan", ["Qur\u02bcan"]),
        ("O\u2018Brien\u02bcs", ["O\u2018Brien", "\u02bcs"]),
        ("\u2018sorry\u2019", ["\u2018", "sorry", "\u2019"]),
        # a decade, but a quoted number is a quote and the number
        ("the \u201880s and \u02bc90s", ["the", "\u201880s", "and", "\u02bc90s"]),
        ("'20 people died,'", ["'", "20", "people", "died", ",", "'"]),
        ("the class of \u201999", ["the", "class", "of", "\u201999"]),  # a right quote opens nothing: a year
        # a left quote before a word opens a quote, whatever letter follows it
        ("shares in \u2018M&S\u2019 fell", ["shares", "in", "\u2018", "M&S", "\u2019", "fell"]),
        ("the \u2018D-Day\u2019 and \u2018re-election\u2019", ["the", "\u2018", "D-Day", "\u2019", "and", "\u2018",
                                                             "re-election", "\u2019"]),
    ],
)
def test_clitics(text: str, expected: list[str]) -> None:
    assert flat(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "Mr. Smith met Mrs. Jones and Dr. Brown at the U.N. headquarters in New York.",
        "The U.S. Army said Lt. Gen. Ray Odierno and Sgt. Maj. Hill arrived Feb. 3 from Ft. Hood.",
        "George W. Bush and J. R. R. Tolkien never met in St. Petersburg, Fla. Senator Smith said.",
        "Acme Corp. President John Smith Jr. said No. 5 was sold to Microsoft Corp. for $1 million.",
        "The meeting at 9 a.m. Tuesday in Washington, D.C. Democrats called was, e.g. in Jan. Smith's view, useless.",
        "Army Pvt. First Class Lynndie England watched Brazil vs. The Netherlands.",
        "He asked \"why?\" and left.",
        "Exports rose 3.5 percent... the ministry said.",
    ],
)
def test_abbreviations_do_not_split(text: str) -> None:
    assert len(words(text)) == 1


def test_abbreviation_keeps_its_period_at_sentence_end() -> None:
    # like GMB: a sentence ending in an abbreviation gets no extra "." token
    assert words("He moved to the U.S. The move was costly.") == [
        ["He", "moved", "to", "the", "U.S."],
        ["The", "move", "was", "costly", "."],
    ]
    assert words("They work for Acme Inc. It is big.")[0][-1] == "Inc."


@pytest.mark.parametrize("text", ["Will the troops stay in the U.S.? Obama said no.", "Is it Apple Inc.? Reuters asked.",
                                  "They left at 5 p.m.! Merkel stayed.", 'Was it the U.S.?" Obama asked.'])
def test_a_question_or_exclamation_mark_after_an_abbreviation_ends_the_sentence(text: str) -> None:
    # the mark is its own token, as after a plain word ("in the US? Obama"), so any capital starts a sentence
    first, second = words(text)
    assert first[-1] in ("?", "!", '"') and second[0] in ("Obama", "Reuters", "Merkel")


NEWS = (
    "Iraqi officials say a suicide bomber has killed at least 15 people in Mosul. "
    "The attack came as U.S. and Iraqi forces pressed an offensive against al-Qaida in Iraq! "
    'A spokesman, Maj. Gen. Mark Hertling, told reporters: "We are not done." '
    "Was it the worst attack this year? Officials did not say. "
    "Mr. Hertling said 2,000 more troops would arrive by Jan. 15... "
    "Meanwhile, Prime Minister Nouri al-Maliki's office said (in a statement) that the U.S.-led "
    "coalition had agreed.\n\n"
    "In Baghdad, police said three people were wounded."
)


def test_news_paragraph_sentence_splitting() -> None:
    sentences = segment(NEWS)
    check_invariants(NEWS, sentences)
    texts = [NEWS[s.start : s.end] for s in sentences]
    assert texts == [
        "Iraqi officials say a suicide bomber has killed at least 15 people in Mosul.",
        "The attack came as U.S. and Iraqi forces pressed an offensive against al-Qaida in Iraq!",
        'A spokesman, Maj. Gen. Mark Hertling, told reporters: "We are not done."',
        "Was it the worst attack this year?",
        "Officials did not say.",
        "Mr. Hertling said 2,000 more troops would arrive by Jan. 15...",
        "Meanwhile, Prime Minister Nouri al-Maliki's office said (in a statement) that the U.S.-led "
        "coalition had agreed.",
        "In Baghdad, police said three people were wounded.",
    ]
    assert sentences[2].words[-2:] == [".", '"']  # closing quote stays with its sentence


def test_paragraphs_and_line_breaks() -> None:
    # blank lines (any newline convention) always split, even without punctuation
    for nl in ["\n", "\r\n", "\r"]:
        text = f"First paragraph without stop{nl}{nl}second one starts lower{nl} {nl}Third"
        assert words(text) == [["First", "paragraph", "without", "stop"], ["second", "one", "starts", "lower"], ["Third"]]
    assert len(words("one\u2029two")) == 2
    assert len(words("one\x0ctwo")) == 2
    # a line that shows nothing is blank: a braille blank, &zwnj;, a soft hyphen, a variation selector
    for blank in ["\u2800", "\u200c", "\u00ad", "\ufe0f", "\u200c \u200c \u200d", "\u3164"]:
        text = f"Written by John Smith\n{blank}\nBerlin police said on Tuesday that Angela Merkel was safe"
        assert [s[0] for s in words(text)] == ["Written", "Berlin"], repr(blank)
        assert words(f"Paris\n\n{blank}\n\nEmmanuel Macron left.") == [["Paris"], ["Emmanuel", "Macron", "left", "."]]
    assert words("\u2800\u200c \ufe0f") == []
    assert words("Vladi\u200cmir Putin met \U0001f468\u200d\U0001f469 fans") == [
        ["Vladi\u200cmir", "Putin", "met", "\U0001f468\u200d\U0001f469", "fans"]]
    # a heading line followed by text
    assert words("Bomb Blast Kills 15 in Iraq\nA suicide bomber struck Mosul on Sunday.")[0] == [
        "Bomb", "Blast", "Kills", "15", "in", "Iraq",
    ]  # fmt: skip
    assert words("Bomb Blast Kills 15 in Iraq\nBy John Smith\nBAGHDAD - A bomb exploded.") == [
        ["Bomb", "Blast", "Kills", "15", "in", "Iraq"],
        ["By", "John", "Smith"],
        ["BAGHDAD", "-", "A", "bomb", "exploded", "."],
    ]
    # bullet items
    assert len(words("Key points:\n- prices rose\n- exports fell\n* imports held")) == 4
    # hard-wrapped prose is not split at its line breaks
    wrapped = (
        "The ministry said on Sunday that the talks with the International Monetary\n"
        "Fund had been postponed until the government could agree on a budget for\n"
        "Baghdad and the provinces, officials said."
    )
    assert len(words(wrapped)) == 1
    narrow = "The talks with the\nInternational Monetary Fund were\nput off until Baghdad agreed."
    assert len(words(narrow)) == 1


def test_cjk_and_other_terminators() -> None:
    assert words("北京欢迎你。我们走吧！") == [["北", "京", "欢", "迎", "你", "。"], ["我", "们", "走", "吧", "！"]]
    assert words("東京タワーへ行きました。") == [["東", "京", "タ", "ワ", "ー", "へ", "行", "き", "ま", "し", "た", "。"]]
    assert len(words("هل أنت بخير؟ نعم، شكرا.")) == 2  # Arabic question mark


# --------------------------------------------------------------------------- Unicode

TORTURE = (
    "\ufeffFamily: \U0001f468\u200d\U0001f469\u200d\U0001f467\u200d\U0001f466 and "
    "\U0001f44d\U0001f3fd thumbs, flags \U0001f1fa\U0001f1f8\U0001f1ec\U0001f1e7, "
    "keycap 1\ufe0f\u20e3, heart \u2764\ufe0f.\r\n"
    "Cafe\u0301 in Montre\u0301al cost \u20ac5\u00a0million\u202fthis\tyear.\r"
    "CJK: \u6771\u4eac\u3068\u5317\u4eac\u306f\u5927\u304d\u3044\u3002"
    "Control\x00chars\x07and\x1bescape\x7fdelete\x85next\u200bzero\u200ewidth.\n\n"
    "RTL: \u05e9\u05dc\u05d5\u05dd \u05e2\u05d5\u05dc\u05dd! "
    "\u0645\u0631\u062d\u0628\u0627\u064b \u0628\u0627\u0644\u0639\u0627\u0644\u0645. "
    "\u202bembedded\u202c Hindi \u0939\u093f\u0928\u094d\u0926\u0940 and a lone mark \u0301 here.\n"
    "Zalgo: Z\u0351\u036b\u0343a\u0352\u0301l\u0310g\u0300o\u0360! \u00bfQu\u00e9? \u00a1S\u00ed!"
)


def test_a_suspended_hyphen_before_any_horizontal_space_stays_with_its_word() -> None:
    for text in ("their hurricane- and flood-ravaged city", "their hurricane-\u00a0and flood-ravaged city",
                 "their hurricane\u2011\u2009and flood\u2011ravaged city"):
        assert [w.replace("\u2011", "-") for w in words(text)[0]] == \
            ["their", "hurricane-", "and", "flood-ravaged", "city"], text


def test_markdown_emphasis_underscores_are_not_part_of_the_words_they_wrap() -> None:
    assert words("Chancellor _Angela Merkel_ and __Emmanuel Macron__ met.") == \
        [["Chancellor", "_", "Angela", "Merkel", "_", "and", "__", "Emmanuel", "Macron", "__", "met", "."]]
    assert words("Write to jane_doe@mail.example.co.uk about snake_case names.") == \
        [["Write", "to", "jane_doe@mail.example.co.uk", "about", "snake_case", "names", "."]]


def test_unicode_torture_document() -> None:
    sentences = segment(TORTURE)
    check_invariants(TORTURE, sentences)
    toks = [w for s in sentences for w in s.words]
    assert "\U0001f468\u200d\U0001f469\u200d\U0001f467\u200d\U0001f466" in toks  # ZWJ family: one token
    assert "\U0001f44d\U0001f3fd" in toks  # skin-tone modifier stays on its emoji
    assert "\U0001f1fa\U0001f1f8" in toks and "\U0001f1ec\U0001f1e7" in toks  # one flag each
    assert "1\ufe0f\u20e3" in toks and "\u2764\ufe0f" in toks
    assert "Cafe\u0301" in toks and "Montre\u0301al" in toks  # combining accent inside the word
    assert "\u20ac" in toks and "million" in toks and "this" in toks  # NBSP / NNBSP separate
    assert ["\u6771", "\u4eac"] == toks[toks.index("\u6771") : toks.index("\u6771") + 2]
    for w in ("Control", "chars", "and", "escape", "delete", "next", "zero", "width"):
        assert w in toks
    assert "\u05e9\u05dc\u05d5\u05dd" in toks and "\u0645\u0631\u062d\u0628\u0627\u064b" in toks
    assert "embedded" in toks and "\u0939\u093f\u0928\u094d\u0926\u0940" in toks
    assert "Z\u0351\u036b\u0343a\u0352\u0301l\u0310g\u0300o\u0360" in toks
    assert not any(ch in w for w in toks for ch in "\ufeff\x00\x07\x1b\x7f\x85\u200b\u200e\u202b\r\n\t")
    # the CRLF, lone CR, CJK full stop and blank line are sentence boundaries
    firsts = [s.words[0] for s in sentences]
    for w in ("Cafe\u0301", "CJK", "Control", "RTL"):
        assert w in firsts


def test_lone_surrogates_and_odd_code_points_do_not_crash() -> None:
    text = "a\ud800b \udfff c\U0010ffff\ue000 \uffff\ufffe. X\U000e0001"
    check_invariants(text, segment(text))


# --------------------------------------------------------------------------- fuzz / robustness

_ALPHABET = (
    list("abcXYZ019 .,;:!?'\"-()$%&/@#") * 3
    + ["\n", "\r\n", "\r", "\t", "\u00a0", "\u3000", "\x00", "\x1b", "\x85", "\u2028", "\u2029"]
    + ["\u0301", "\u0308", "\u20e3", "\ufe0f", "\u200d", "\u200c", "\u00ad", "\u200b", "\u200e", "\ufeff"]
    + ["\U0001f600", "\U0001f3fd", "\U0001f1fa", "\U0001f1f8", "\U000e0067", "\U0001d11e", "\U00011000"]
    + ["\u4e2d", "\u3042", "\u30a2", "\u3002", "\uff01", "\u05d0", "\u0627", "\u064b", "\u0939", "\u094d"]
    + ["\u2019", "\u201c", "\u201d", "\u2026", "\u2013", "\u00e9", "U.S.", "Mr.", "n't", "'s", "...", "--"]
    + ["&amp;", "&#39;", "&nbsp;", "&quot;", "&#769;", "&#10;", "&amp;quot;", "&#x200B;", "&shy;", "&foo;", "&#0;"]
    + ["\u00e2\u20ac\u2122", "\u00c3\u00a9", "\u00c3", "\u00e2\u20ac", "\u00df\u201c", "\u00c2\u00a0", "\u00e2\u20ac\x9d",
       "\u00f0\u0178\u02dc\u20ac", "\u00cc\u0081", "\u00e9\u00a0\u00bb", "\u00ef\u00bb\u00bf", "\u00c2\x81"]
)


@pytest.mark.parametrize("text, tokens", [
    # as a scraper or feed leaves them: each token spans its references, read as their characters
    ("Shares of AT&amp;T rose in New&nbsp;York.", [("Shares", "Shares"), ("of", "of"), ("AT&T", "AT&amp;T"),
                                                   ("rose", "rose"), ("in", "in"), ("New", "New"),
                                                   ("York", "York"), (".", ".")]),
    ("Britain&#39;s &quot;Caf&eacute;&quot;", [("Britain", "Britain"), ("'s", "&#39;s"), ('"', "&quot;"),
                                               ("Caf\u00e9", "Caf&eacute;"), ('"', "&quot;")]),
    ("Ali&#x2019;s &amp;amp; &amp;quot;Hi&amp;quot;", [("Ali", "Ali"), ("\u2019s", "&#x2019;s"), ("&", "&amp;amp;"),
                                                       ('"', "&amp;quot;"), ("Hi", "Hi"), ('"', "&amp;quot;")]),
    # no reference: an unknown name, one that stands for two characters, no semicolon
    ("&foo; &fjlig; &amp", [("&", "&"), ("foo", "foo"), (";", ";"), ("&", "&"), ("fjlig", "fjlig"), (";", ";"),
                            ("&", "&"), ("amp", "amp")]),
])
def test_html_character_references_read_as_their_characters(text: str, tokens: list[tuple[str, str]]) -> None:
    sentences = segment(text)
    check_invariants(text, sentences)
    assert [(w, text[a:b]) for s in sentences for w, a, b in zip(s.words, s.starts, s.ends)] == tokens


@pytest.mark.parametrize("text, tokens", [
    # UTF-8 read as cp1252: each token spans the characters it was read as
    ("Britain\u00e2\u20ac\u2122s \u00e2\u20ac\u0153caf\u00c3\u00a9\u00e2\u20ac\x9d",
     [("Britain", "Britain"), ("\u2019s", "\u00e2\u20ac\u2122s"), ("\u201c", "\u00e2\u20ac\u0153"),
      ("caf\u00e9", "caf\u00c3\u00a9"), ("\u201d", "\u00e2\u20ac\x9d")]),
    ("S\u00c3\u00a3o Paulo \u00e2\u20ac\u201c \u00e2\u201a\u00ac5 \u00f0\u0178\u02dc\u20ac",
     [("S\u00e3o", "S\u00c3\u00a3o"), ("Paulo", "Paulo"), ("\u2013", "\u00e2\u20ac\u201c"), ("\u20ac", "\u00e2\u201a\u00ac"), ("5", "5"),
      ("\U0001f600", "\u00f0\u0178\u02dc\u20ac")]),
    # no UTF-8 to read: German and Portuguese as written, a lone "\u00c3"
    ("Gru\u00df\u201c Stra\u00dfe\u2026 S\u00c3O PAULO \u00c3",
     [("Gru\u00df", "Gru\u00df"), ("\u201c", "\u201c"), ("Stra\u00dfe", "Stra\u00dfe"), ("\u2026", "\u2026"),
      ("S\u00c3O", "S\u00c3O"), ("PAULO", "PAULO"), ("\u00c3", "\u00c3")]),
    # correctly written Finnish, Swedish, Portuguese in capitals: a final \u00c4, \u00c5, \u00c3 before a quote or dash
    ("\u201dHYV\u00c4 P\u00c4IV\u00c4\u201d UME\u00c5\u2013STOCKHOLM IRM\u00c3\u201d",
     [("\u201d", "\u201d"), ("HYV\u00c4", "HYV\u00c4"), ("P\u00c4IV\u00c4", "P\u00c4IV\u00c4"), ("\u201d", "\u201d"), ("UME\u00c5", "UME\u00c5"),
      ("\u2013", "\u2013"), ("STOCKHOLM", "STOCKHOLM"), ("IRM\u00c3", "IRM\u00c3"), ("\u201d", "\u201d")]),
    # correctly written French, Spanish, Irish: accented letters before a no-break space or a sign stay
    ("all\u00e9\u00a0\u00bb arriv\u00e9\u00a0\u2014 caf\u00e9\u2026\u201d JOS\u00c9\u00a0MOURINHO PEL\u00c9\u2019S NESCAF\u00c9\u00ae \u00d3\u00a0Briain",
     [("all\u00e9", "all\u00e9"), ("\u00bb", "\u00bb"), ("arriv\u00e9", "arriv\u00e9"), ("\u2014", "\u2014"), ("caf\u00e9", "caf\u00e9"),
      ("\u2026", "\u2026"), ("\u201d", "\u201d"), ("JOS\u00c9", "JOS\u00c9"), ("MOURINHO", "MOURINHO"), ("PEL\u00c9", "PEL\u00c9"),
      ("\u2019S", "\u2019S"), ("NESCAF\u00c9", "NESCAF\u00c9"), ("\u00ae", "\u00ae"), ("\u00d3", "\u00d3"), ("Briain", "Briain")]),
])
def test_mojibake_reads_as_the_characters_it_stands_for(text: str, tokens: list[tuple[str, str]]) -> None:
    sentences = segment(text)
    check_invariants(text, sentences)
    assert [(w, text[a:b]) for s in sentences for w, a, b in zip(s.words, s.starts, s.ends)] == tokens


def test_a_reference_to_no_character_stays_as_written() -> None:
    # html.unescape reads references to most control characters as nothing
    text = "Officials met.&#11;Angela Merkel visited Paris."
    sentences = segment(text)
    check_invariants(text, sentences)
    tokens = [(w, text[a:b]) for s in sentences for w, a, b in zip(s.words, s.starts, s.ends)]
    assert tokens[-5:] == [("Angela", "Angela"), ("Merkel", "Merkel"), ("visited", "visited"), ("Paris", "Paris"),
                           (".", ".")]


def test_a_reference_to_a_line_break_ends_a_paragraph() -> None:
    text = "The Summit Ends&#10;&#10;Leaders met in Paris on&nbsp;Monday."
    sentences = segment(text)
    check_invariants(text, sentences)
    assert [s.words for s in sentences] == [["The", "Summit", "Ends"], ["Leaders", "met", "in", "Paris", "on", "Monday", "."]]
    assert text[sentences[1].start:sentences[1].end] == "Leaders met in Paris on&nbsp;Monday."


def test_fuzz_random_strings_keep_invariants() -> None:
    rng = random.Random(20240521)
    for _ in range(1500):
        n = rng.randint(0, 40)
        if rng.random() < 0.25:  # anything at all, including unassigned and private-use code points
            text = "".join(chr(rng.randrange(0x110000)) for _ in range(n))
        else:
            text = "".join(rng.choice(_ALPHABET) for _ in range(n))
        check_invariants(text, segment(text))


def test_adversarial_inputs_run_in_linear_time() -> None:
    n = 100_000
    cases = [
        "." * n,
        "a." * n + "b",
        "http://" + "." * n,
        "A." + " " * n + "b",
        "\n \n" * (n // 3),
        "U.S. " * (n // 5),
        "n" * n + "'t",
        "a-" * n,
        "1." * n,
        ". " + "(" * n + "A",
        '."' * (n // 2) + " A",
        "\U0001f600\u200d" * (n // 2),
        "a" + "\u0301" * n,
        "ab." * (n // 3) + "@x",
        "ab@" + "cd." * (n // 3),
    ]
    t0 = time.perf_counter()
    for text in cases:
        check_invariants(text, segment(text))
    assert time.perf_counter() - t0 < 8.0


def test_text_written_otherwise_is_read_in_linear_time() -> None:
    n = 100_000
    cases = [
        "&amp;" * (n // 5),
        "&" + "amp;" * n + "quot; x",  # escaped a hundred thousand times: decoded once
        "Britain&#39;s Prime Minister met AT&amp;T in New York on Monday. " * (n // 6),  # references in each sentence
        "&#" * n,
        "\u00e2\u20ac" * (n // 2),
        "\u00c3\u00a9" * (n // 2),
    ]
    t0 = time.perf_counter()
    for text in cases:
        check_invariants(text, segment(text))
    assert time.perf_counter() - t0 < 8.0


def test_a_tab_between_words_of_a_line_separates_cells_but_not_an_item_from_its_mark() -> None:
    assert words("Name\tCountry\nAngela Merkel\tGermany\nEmmanuel Macron\t\tFrance") == \
        [["Name"], ["Country"], ["Angela", "Merkel"], ["Germany"], ["Emmanuel", "Macron"], ["France"]]
    assert words("Chair:\tAngela Merkel") == [["Chair", ":"], ["Angela", "Merkel"]]
    assert words("Items:\n1.\tAngela Merkel spoke.\n-\tMacron too.\n\tIndented prose goes on.\n2. \tLast.") == \
        [["Items", ":"], ["1", ".", "Angela", "Merkel", "spoke", "."], ["-", "Macron", "too", "."],
         ["Indented", "prose", "goes", "on", "."], ["2", ".", "Last", "."]]


def test_a_word_joiner_joins_a_word_and_a_bom_between_texts_separates() -> None:
    assert words("Vladi\u2060mir Putin met Angela Merkel\ufeffBerlin hosted them.") == \
        [["Vladi\u2060mir", "Putin", "met", "Angela", "Merkel", "Berlin", "hosted", "them", "."]]


def test_long_runs_of_one_motif_segment_in_linear_time() -> None:
    # Each was quadratic: a dotted chain retried as an acronym at every letter, and a gap of many
    # tab runs scanned again for each run.
    for text in ["a." * 20_000 + "aa", "ab" + "U.S." * 10_000 + "cd", "a" + " \t" * 20_000 + "b",
                 "a" + " \t" * 20_000 + "\nb"]:
        t0 = time.perf_counter()
        check_invariants(text, segment(text))
        assert time.perf_counter() - t0 < 1.0, repr(text[:20])


def test_tab_indented_lines_segment_in_linear_time() -> None:
    # Text extracted from pages indents lines with tabs; a tab once matched two ways, so each line
    # cost time exponential in its tabs (18 tabs: about 0.1 s a line; 30: minutes).
    cases = [
        ("Angela Merkel visited Paris.\n" + "\t" * 18 + "Barack Obama met her in Berlin.\n") * 100,
        ("oil-" + "\t" * 18 + "and gas prices ") * 100,  # the suspended-hyphen look-ahead
        ("\t" * 18 + "- an item\n") * 100,  # bullets
        "\t" * 100_000 + "x",
    ]
    t0 = time.perf_counter()
    for text in cases:
        check_invariants(text, segment(text))
        assert time.perf_counter() - t0 < 2.0, repr(text[:40])  # before the next case, which would never end


def test_hard_wrapped_lines_of_names_are_not_split() -> None:
    # Mostly capitalised lines looked like headings; a wrapped line is full: its next word did not fit.
    text = ("The talks in Baghdad on Tuesday brought together Iraqi leaders\n"
            "Prime Minister Nouri al-Maliki, Defense Secretary Donald\r\n"
            "Rumsfeld and Secretary of State Condoleezza Rice, who flew\n"
            "in from Kuwait.")
    assert len(words(text)) == 1
    assert len(words("Foreign Minister Sergei Lavrov spoke by telephone with Mr.\nChavez on Tuesday.")) == 1
    # a headline above wrapped prose, or as long as its lines, still ends its sentence
    assert [s[0] for s in words("Rice Meets Rumsfeld in Baghdad\n" + text)] == ["Rice", "The"]
    assert [s[0] for s in words("Exclusive Interview With Venezuelan President Hugo Chavez\n"
                                "Hugo Chavez said on Monday that he will visit Cuba and\n"
                                "Bolivia next month, his office in Caracas announced.")] == ["Exclusive", "Hugo"]
    assert len(words("Exclusive Interview With Venezuelan President Hugo Chavez\nHugo Chavez said Monday.")) == 2


def test_abbreviations_of_datelines_court_cases_ranks_and_names_after_acronyms() -> None:
    assert words("ST. LOUIS (AP) - A federal judge ruled.") == [
        ["ST.", "LOUIS", "(", "AP", ")", "-", "A", "federal", "judge", "ruled", "."]]
    assert flat("FT. WORTH, Texas") == ["FT.", "WORTH", ",", "Texas"]
    assert words("MR. OBAMA GOES TO WASHINGTON") == [["MR.", "OBAMA", "GOES", "TO", "WASHINGTON"]]
    assert len(words("The ruling in Roe v. Wade was overturned.")) == 1
    assert len(words("Pfc. Lynndie England and Spc. Charles Graner met Msgr. Thomas Kelly.")) == 1
    assert len(words("The meeting is on Wed. Jan. 5 in Charleston, W.Va. and Tue. Feb. 8.")) == 1
    assert "W.Va." in flat("Charleston, W.Va., is the capital.")
    # a sentence opener that also begins a name does not end a sentence after an acronym ...
    assert len(words("The U.S. Second Circuit Court of Appeals ruled. U.S. First Lady Michelle Obama spoke.")) == 2
    assert len(words("Washington, D.C. Police Chief Cathy Lanier spoke.")) == 1
    # ... but does before a lower-case word
    assert len(words("He moved to the U.S. Police said he left.")) == 2


def test_upper_case_abbreviations_only_before_upper_case_words() -> None:
    # "ADM" is a company here, and its period ends the sentence
    assert [s[0] for s in words("The grain trader is known as ADM. Cargill reported record profits.")] == ["The", "Cargill"]
    assert len(words("Troops entered the DR. Congo's army said.")) == 2
    assert len(words("HE JOINED MICROSOFT CORP. THE DEAL CLOSED LATER.")) == 2
    assert len(words("ST. LOUIS (AP) - A judge ruled.")) == 1
    # a day or month after an opener that begins names: a new sentence
    assert len(words("The minister flew back to the U.S. Last Friday, he met President Bush.")) == 2


def test_acronyms_after_abbreviations_and_title_cased_headlines_with_minor_words() -> None:
    assert len(words("U.S. IT spending rose 5% last year.")) == 1
    assert len(words("Apple Inc. IT staff were cut.")) == 1
    assert len(words("MR. O'BRIEN SAID NOTHING.")) == 1
    body = textwrap.fill("President Barack Obama signed the economic stimulus package in Denver on Tuesday, "
                         "saying it would create or save millions of jobs across the country.", 60)
    for headline in ("Obama Signs $787 Billion Stimulus Bill into Law in Denver",
                     "Apple Unveils New iPhone at Event in San Francisco on Monday"):
        assert words(f"{headline}\n{body}")[1][0] == "President", headline


def test_upper_case_headlines_keep_conjunctions_and_prepositions_after_abbreviations() -> None:
    assert len(words("TALKS BETWEEN THE U.S. AND CHINA STALL OVER TRADE")) == 1
    assert len(words("U.S. IN TALKS WITH CHINA ON TRADE")) == 1
    assert len(words("HE JOINED MICROSOFT CORP. THE DEAL CLOSED LATER.")) == 2


def test_wrapped_line_before_a_quote_is_judged_by_the_quoted_word() -> None:
    text = ("In a statement issued in Washington on Tuesday, the spokesman for it\n"
            "Deputy Spokesman Adam Ereli of the U.S. State Department called\n"
            "\"Nicaragua's best opportunity\" to gain the benefits of trade and the\n"
            "investment it needs, and praised the Managua government for its work.")
    assert len(words(text)) == 1


def test_capitalised_wrapped_lines_inside_a_sentence_are_no_headlines() -> None:
    text = ("Foreign ministers of the region gathered here on Thursday for talks on\n"
            "the crisis. Attending were U.S. Secretary of State Hillary Clinton, British\n"
            "Foreign Secretary David Miliband, German Foreign Minister Frank-Walter\n"
            "Steinmeier and French Foreign Minister Bernard Kouchner, officials said.")
    assert [s[0] for s in words(text)] == ["Foreign", "Attending"]
    text = ("The Red Cross said it would coordinate its relief work in the region\n"
            "with the U.S. Federal Emergency Management Agency. The American Red\n"
            "Cross has sent hundreds of volunteers to the flooded areas in the south.")
    assert [s[-2:] for s in words(text)] == [["Agency", "."], ["south", "."]]


def test_lists_after_a_colon_and_headlines_of_two_lines_still_end_their_lines() -> None:
    speakers = ("Speakers:\nSecretary of State Hillary Clinton\nPrime Minister Benjamin Netanyahu\n"
                "President Mahmoud Abbas")
    assert [s[0] for s in words(speakers)] == ["Speakers", "Prime", "President"]
    body = textwrap.fill("The leaders of the European Union agreed on Thursday to expand the joint defence fund "
                         "by ten billion euros, officials said after the talks.", 40)
    two_lines = f"European Leaders Agree to Expand the\nJoint Defence Fund After Brussels Talks\n{body}"
    assert [s[-1] for s in words(two_lines)] == ["Talks", "."]
    assert [s[0] for s in words(f"Will Europe Pay? Merkel And Macron Agree\n{body}")] == ["Will", "Merkel", "The"]


def test_pronouns_open_upper_case_sentences_and_an_unspaced_heading_ends_its_line() -> None:
    assert len(words("THE MEETING ENDED AT 5 P.M. IT WILL RESUME ON MONDAY IN GENEVA.")) == 2
    assert len(words("FIGHTING WENT ON, ACCORDING TO THE U.N. THERE WERE NO REPORTS OF CASUALTIES.")) == 2
    text = ("新华社北京电\n国务院总理李克强在北京人民大会堂会见了来访的德国总理默克尔双\n"
            "方就中德关系和共同关心的国际问题交换了意见会谈在友好气氛中进行")
    assert len(words(text)[0]) == 6


def test_wire_copy_wrapped_in_short_paragraphs_keeps_names_dates_and_dashes() -> None:
    other = textwrap.fill("The council has been divided over the draft resolution for weeks, and several members "
                          "have asked for more time to study the proposals, diplomats said.", 74)
    susan = "The Security Council met on Monday. U.S. Ambassador Susan\nRice said the vote would take place soon."
    assert [s[0] for s in words(f"{susan}\n\n{other}")] == ["The", "U.S.", "The"]
    march = textwrap.fill("Officials said the central bank will hold its next policy meeting on March 3. Analysts "
                          "expect the bank to keep its main rate on hold.", 74)
    assert march.split("\n")[1].startswith("3. Analysts")
    assert [s[0] for s in words(f"{march}\n\n{other}")] == ["Officials", "Analysts", "The"]
    dash = textwrap.fill("The two remaining towns in the north of the West Bank, Jenin and Ramallah "
                         "\u2014 will be handed over to the Palestinian security forces next month.", 74)
    assert dash.split("\n")[1].startswith("\u2014 will")
    assert len(words(f"{dash}\n\n{other}")) == 2


def test_an_emails_quote_marks_are_no_tokens_and_hide_no_sentence_end() -> None:
    plain = ("Merkel Visits Paris\n\n"
             "German Chancellor Angela Merkel met French President Emmanuel Macron\n"
             "in Paris on Tuesday. The two leaders discussed the budget of the\n"
             "European Union.\n"
             "Angela Merkel left on Wednesday.\n\n"
             "Officials said the talks would resume in Berlin.")
    sentences = words(plain)
    assert [s[0] for s in sentences] == ["Merkel", "German", "The", "Angela", "Officials"]
    for mark, blank in (("> ", ">"), (">> ", ">>"), ("> > ", "> >"), ("  > ", " >")):
        quoted = "\n".join(mark + line if line else blank for line in plain.split("\n"))
        assert words(quoted) == sentences, repr(mark)
    # the first line's marks too (they once made it look longer than the wrap width), an initial before a
    # quoted blank line, a quoted list's first item
    wrapped = ("The labor group said it intended to investigate Zimbabwe's political climate ahead of\n"
               "general elections. German Defense Minister Karl Theodor zu Guttenberg says Army Inspector\n"
               "General Wolfgang Schneiderhan failed to provide adequate information.\n\n"
               "Two of his brothers, President John F.\n\nKennedy and Senator Robert Kennedy, were killed.\n\n"
               "Top stories:\n1. Angela Merkel met Emmanuel Macron.\n2. Oil prices rose in London.")
    for mark, blank in (("> ", ">"), (">> ", ">>")):
        quoted = "\n".join(mark + line if line else blank for line in wrapped.split("\n"))
        assert words(quoted) == words(wrapped), repr(mark)
        assert [s.item_mark for s in segment(quoted)] == [s.item_mark for s in segment(wrapped)]
    assert [s.item_mark for s in segment("> 1. Angela Merkel met him.\n> 2. Oil prices rose.")] == [2, 2]
    assert words("> The talks went on.\r\n> Angela Merkel left.") == [
        ["The", "talks", "went", "on", "."], ["Angela", "Merkel", "left", "."]]
    assert flat("Revenue > 5 million, said Merkel.") == ["Revenue", ">", "5", "million", ",", "said", "Merkel", "."]


def test_numbered_list_items_keep_their_numbers_and_reuters_codes_are_one_token() -> None:
    standings = "1. Roger Federer (Switzerland) 10,550 points\n2. Rafael Nadal (Spain) 9,205 points"
    assert [s[:3] for s in words(standings)] == [["1", ".", "Roger"], ["2", ".", "Rafael"]]
    assert len(words("He came in at number 1. The rest followed.")) == 2
    assert [s.item_mark for s in segment(standings)] == [2, 2]
    assert [s.item_mark for s in segment("Speakers\n\n1. Angela Merkel\n2) Emmanuel Macron")] == [0, 2, 2]
    assert [s.item_mark for s in segment("He came in at number 1. The rest followed.")] == [0, 0]
    # a full-width period ends a sentence; an acute accent or prime typed for an apostrophe is one
    assert [s.words for s in segment("the vote\uff0e A spokesman said \u00b4no\u00b4.")] == [
        ["the", "vote", "\uff0e"], ["A", "spokesman", "said", "\u00b4", "no", "\u00b4", "."]]
    assert [s.words for s in segment("EYADEMA\u00b4s party met Yar\u2032Adua.")] == [
        ["EYADEMA", "\u00b4s", "party", "met", "Yar\u2032Adua", "."]]
    bullets = segment("Speakers:\n\u2022 Angela Merkel\n- Emmanuel Macron\n* Boris Johnson")
    assert [(s.item_mark, s.words[:2]) for s in bullets] == [
        (0, ["Speakers", ":"]), (1, ["\u2022", "Angela"]), (1, ["-", "Emmanuel"]), (1, ["*", "Boris"])]
    assert [s.item_mark for s in segment("Prices rose - by 5 % - in May.\nA - B")] == [0, 0]  # a dash in prose
    assert "MSFT.O" in flat("Shares of Microsoft Corp. (MSFT.O) and the Dow (.DJI) fell.")
    assert ".DJI" in flat("Shares of Microsoft Corp. (MSFT.O) and the Dow (.DJI) fell.")


def test_scraped_pages_keep_headlines_captions_dash_lists_and_link_text() -> None:
    page = ("Merkel says Germany will help Greece\n"
            "BERLIN (Reuters) - German Chancellor Angela Merkel said on Tuesday that Germany would help.\n\n"
            "Advertisement\n\n"
            "Photo: Reuters/Fabrizio Bensch, Berlin\n"
            "Merkel spoke after meeting Greek Prime Minister George Papandreou.")
    assert [s[0] for s in words(page)] == ["Merkel", "BERLIN", "Advertisement", "Photo", "Merkel"]
    dashes = ("Key points\nMerkel's conservatives won the most seats in the vote\n"
              "- Social Democrats go into opposition\n- Turnout was high")
    assert [s[0] for s in words(dashes)] == ["Key", "Merkel", "-", "-"]
    links = "Prime Minister \nBoris Johnson\n said on Monday that Britain would leave."
    assert len(words(links)) == 1


def test_sentences_a_page_extraction_joined_without_a_space_are_split() -> None:
    text = "The talks were held in Berlin.The chancellor said she would help.Angela Merkel left."
    assert [s[0] for s in words(text)] == ["The", "The", "Angela"]
    assert len(words("See www.Example.Com and john.Doe@mail.com today.")) == 1


def test_headlines_ending_in_a_space_or_holding_a_stop_and_lists_after_a_quote_keep_their_breaks() -> None:
    assert [s[0] for s in words("By John Smith \nWASHINGTON (Reuters) - The president said he would help.")] == [
        "By", "WASHINGTON"]
    assert [s[0] for s in words("Obama Wins Second Term \nPresident Barack Obama told supporters.\n")] == [
        "Obama", "President"]
    fed = "Fed holds rates steady. What it means for you\nFederal Reserve Chairman Ben Bernanke said on Tuesday."
    assert [s[0] for s in words(fed)] == ["Fed", "What", "Federal"]
    body = textwrap.fill("The minister told parliament on Tuesday that the plan was \"the only way forward.\"", 60)
    quoted = f"{body}\n1. Raise taxes on fuel\n2. Cut spending on defence"
    assert [s[0] for s in words(quoted)][-2:] == ["1", "2"]


def test_dotted_names_domains_and_code_are_no_joined_sentences() -> None:
    for text in ("Shares of Amazon.Com Inc rose.", "Use System.Console.WriteLine to print.",
                 "Import java.util.ArrayList first.", "Open Report.Final.docx now."):
        assert len(words(text)) == 1, text


def test_a_headline_over_an_unwrapped_paragraph_and_a_number_alone_on_its_line_end_sentences() -> None:
    page = ("# Brexit talks stall in Brussels once again today\n"
            "Theresa May met Donald Tusk in Brussels on Thursday but no agreement was reached on the border.\n\n"
            "- Jeremy Corbyn said the talks were a failure and that\n"
            "  Labour would vote against any deal in Parliament.\n"
            "- Nicola Sturgeon called for a second referendum.")
    assert [s[:2] for s in words(page)][:2] == [["#", "Brexit"], ["Theresa", "May"]]
    date = "Parliamentary elections are set for October\n10.\nThe spokesman says Italian troops were wounded."
    assert [s[0] for s in words(date)][-1] == "The"
    assert len(words("Call `os.Path` here.")) == 1
