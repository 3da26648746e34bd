"""Sentence splitting and tokenisation of raw news text with exact character offsets.

The NER model was trained on the GMB corpus, whose tokens follow Penn-Treebank-like
conventions.  :func:`segment` turns raw text into sentences of tokens that look like
those training tokens:

* clitics are split off: ``Britain's`` -> ``Britain`` ``'s``, ``didn't`` -> ``did``
  ``n't``, ``can't`` -> ``ca`` ``n't`` (ASCII ``'`` and typographic ``’`` alike);
  a plural possessive apostrophe is its own token (``Workers'`` -> ``Workers`` ``'``);
* punctuation, quotes, brackets, ``$``, ``%``, ``/`` between words (``HIV/AIDS``)
  and spaced dashes are separate tokens;
* hyphenated words stay whole (``al-Qaida``, ``U.S.-led``, ``two-day``, ``06-Mar``),
  as do word-internal apostrophes (``Shi'ite``, ``O'Connor``), numbers with
  separators (``1,000``, ``3.5``, ``2,00,000``, ``3:30``, ``20/20``), ordinals and
  decades (``19th``, ``1990s``, ``'80s``), ``AT&T``, e-mail addresses, URLs and
  domain names (``Wired.com``), Reuters codes in brackets (``(MSFT.O)``, ``(.DJI)``);
* abbreviations keep their period: dotted acronyms (``U.S.``, ``U.N.``, ``a.m.``,
  ``D.C.``), a list of titles and common abbreviations (``Mr.``, ``Dr.``, ``Gen.``,
  ``Jan.``, ``Corp.``, ``Calif.`` ...), single capital initials (``George W. Bush``);
  like GMB, a sentence ending in such a token gets no extra ``.`` token.

Unicode: tokens never contain whitespace or control characters (C0/C1 controls,
BOM, bidi marks and zero-width space separate tokens); a base character keeps
its combining marks, variation selectors, emoji modifiers and ZWJ-joined
continuations (one emoji ZWJ sequence, flag or keycap is one token); Han and
kana characters are one token each (no spaces in Chinese/Japanese).

Sentences end at ``. ! ? …`` (and their script equivalents; closing quotes and brackets stay
with the sentence) followed by whitespace and an uppercase letter, a digit, a letter of a
caseless script or an opening quote/bracket; at ``。！？`` without whitespace; never after a
title abbreviation (``Mr.``, ``Dr.``, ``Gen.``...), and after other abbreviations, initials
and ellipses only when the next word is a typical sentence opener (``The``, ``He``,
``But``...); between a lower-case word and a capitalised one with no space at all
("Berlin.The", paragraphs a page's extraction joined). Blank lines (also lines of characters that
show nothing, as a braille blank or a zero-width non-joiner), page breaks and U+2029 always end a
sentence; a single line break does when the next line is a bullet item (a
number or dash only after a line that is not wrapped mid-sentence: "on March / 3. Analysts"
is a date; an item's number stays with its item), or when the previous line looks like a
heading (short, not ending in a continuation character or a title, Title Cased or first in
its paragraph, and not a wrapped line: as long as the paragraph's other lines, or the
document's longer paragraphs' for a paragraph of two lines, with the next line's first word
too long for it, unless every word is capitalised and the line starts a sentence, a list
item or a capitalised block) and the next line starts like a sentence; hard-wrapped prose is
not split at its lines, even where a line is mostly names.

An e-mail's quote marks at a line's start (``> ``, ``>> ``) are no tokens and a line of them only is
blank, so quoted text splits as it would unquoted.

Characters written otherwise read as the characters they stand for: HTML character references a
scraper or feed left in the text (``AT&amp;T``, ``Britain&#39;s``, ``New&nbsp;York``, escaped twice:
``&amp;quot;``) and UTF-8 read as cp1252 (mojibake: ``Britainâ€™s``, ``JosÃ©``).

Offsets are Python ``str`` indices into the original text and every token is
exactly ``text[start:end]``, but that a token with characters written otherwise holds what they stand
for (``AT&T`` spans ``AT&amp;T``).  :func:`segment` never raises on a ``str``.

Everything is done with a few compiled regular expressions (the character
classes are generated from :mod:`unicodedata` on first use, ~0.15 s); per-token
work in Python is limited to collecting match offsets.
"""

from __future__ import annotations

import html
import re
import unicodedata
from bisect import bisect_left, bisect_right
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache

__all__ = ["SentenceTokens", "segment", "written_otherwise"]


@dataclass(frozen=True, slots=True)
class SentenceTokens:
    """One sentence: its tokens and their ``[start, end)`` offsets in the document text."""

    words: list[str]
    starts: list[int]
    ends: list[int]
    #: leading tokens that are a list item's number and its period or bracket ("1" ".") or its bullet
    #: ("\u2022"): tagged O, the model reading the item without them, as the corpus's sentences are
    item_mark: int = 0

    @property
    def start(self) -> int:
        """Offset of the first character of the sentence."""
        return self.starts[0] if self.starts else 0

    @property
    def end(self) -> int:
        """Offset just past the last character of the sentence."""
        return self.ends[-1] if self.ends else 0

    def __len__(self) -> int:
        return len(self.words)


# --------------------------------------------------------------------------- vocabulary

# Abbreviations that keep their period.  _TITLES never end a sentence; _NUMBERED
# only take the period before a number (No. 5, Vol. 2); the others (companies,
# months, US states, Latin, street names) end a sentence only before a typical
# sentence opener.
_TITLES = (
    "Mr Mrs Ms Messrs Mssrs Mme Mlle Dr Drs Prof Profs Rev Hon Pres Gov Sen Sens Rep Reps "
    "Gen Lt Col Maj Capt Cmdr Cdr Adm Brig Sgt Cpl Pvt Supt Insp Det Amb Atty Fr Sra Srta "
    "Cong vs v cf viz approx ca Spc Pfc Msgr"
).split()
# Upper-case forms, abbreviations only before an upper-case word, as in datelines and headlines
# (ST. LOUIS (AP), MR. OBAMA GOES TO WASHINGTON): "known as ADM. Cargill" ends a sentence.
_UPPER_TITLES = "MR MRS MS DR PROF REV SEN REP GOV GEN LT COL MAJ CAPT SGT ADM".split()
_UPPER_OTHER = "ST FT MT INC CORP LTD".split()
_NUMBERED = "No Nos Nr Vol Vols Fig Figs Art Sec Ch Op pp".split()
_OTHER_ABBREVIATIONS = (
    "Inc Corp Co Cos Ltd Bros Plc Jr Sr Assn Dept Univ Govt St Ste Mt Ft Ave Blvd Rd Hwy "
    "Jan Feb Mar Apr Jun Jul Aug Sep Sept Oct Nov Dec "
    "Ala Ariz Ark Calif Colo Conn Del Fla Ga Ill Ind Kan Kans Ky La Md Mass Mich Minn Miss "
    "Mo Mont Neb Nev Okla Ore Pa Penn Tenn Tex Va Vt Wash Wis Wyo "
    "Mon Tue Tues Wed Thu Thur Thurs Fri Sat "
    "etc al Ph.D W.Va"
).split()
_TITLE_SET = frozenset(t + "." for t in _TITLES + _NUMBERED + _UPPER_TITLES)

# Words that typically open a sentence; after an abbreviation or an ellipsis a
# boundary is only assumed when one of these follows.
_SENTENCE_OPENERS = frozenset(
    (
        "The A An This That These Those It Its He She They We I You There Here His Her Their "
        "Our My Your In On At For From With By As After Before During Since Until When While "
        "Where Why How What Who Whom Whose Which If But And Or Nor So Yet Also However "
        "Meanwhile Still Then Now Later Earlier Many Most Some Several Both Each Every All "
        "Any No None Not Such Other Another "
        "Although Though Because Despite Over Among Between Without Within About Against "
        "Instead Separately Elsewhere Nevertheless Moreover Furthermore Thus Therefore "
        "Indeed Yes Last Next First Second Finally Officials Police Authorities Witnesses "
        "Analysts Critics Experts Reports According Speaking"
    ).split()
)
# Openers that also begin names ("U.S. First Lady", "D.C. Police Chief"): they open a
# sentence only when no capitalised word follows them, or a day or month does ("Last Friday").
# In upper-case text only these open a sentence after an abbreviation: "CORP. THE DEAL", but not
# "THE U.S. AND CHINA" or "U.S. IN TALKS", where a conjunction or preposition goes on a headline.
_UPPER_TEXT_OPENERS = frozenset("The He She It They We There".split())
_NAME_OPENERS = frozenset(
    "Last Next First Second Officials Police Authorities Witnesses Analysts Critics Experts Reports".split()
)
_DAYS_AND_MONTHS = frozenset(
    "Monday Tuesday Wednesday Thursday Friday Saturday Sunday January February March April May June July "
    "August September October November December Week Month Year".split()
)

# Characters of scripts written without spaces that are tokenised one per character:
# CJK radicals, ideographic iteration marks, kana, Han (BMP and astral), halfwidth kana.
_CJK = (
    (0x2E80, 0x2FDF), (0x3005, 0x3007), (0x3021, 0x3029), (0x3031, 0x3035), (0x3038, 0x303C),
    (0x3040, 0x30FF), (0x31F0, 0x31FF), (0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xF900, 0xFAFF),
    (0xFF66, 0xFF9D), (0x20000, 0x3FFFF),
)  # fmt: skip
_CJK_RANGES = "".join(f"{chr(lo)}-{chr(hi)}" for lo, hi in _CJK)
_CJK_TERMINATORS = "\u3002\uff01\uff1f\uff61"  # 。！？｡
_TERMINATORS = ".\uff0e!?\u2026\u203c\u2047\u2048\u2049\u061f\u06d4\u0964\u0965\u1362\u1367\u0589"
_STANDALONE_TERMINATORS = frozenset(_TERMINATORS) - {".", "\uff0e", "\u2026"}  # never an abbreviation's period
# Apostrophes between letters, as the vocabulary folds them to "'": a left single quote or a
# reversed one after a letter is an apostrophe typed with the wrong key (Britain‘s).
_APOSTROPHES = "'\u2019\u2018\u201b\u02bc\u00b4\u2032"  # and an acute accent or prime typed for one
_CLOSERS = "\"'\u201d\u2019\u00bb\u203a)\\]}\u300d\u300f\u3011\u3009\u300b\u3015\u3017\uff09"
_OPENERS = "\"'\u201c\u2018\u00ab\u2039(\\[{\u00bf\u00a1\u300c\u300e\u3010\u3008\u300a\u3014\u3016\uff08"
_OPENER_TOKENS = frozenset('"\'\u201c\u2018\u00ab\u2039([{\u00bf\u00a1\u300c\u300e\u3010\u3008\u300a\u3014\u3016\uff08`')
# Line-break characters (str.splitlines() boundaries); those in _PARA_BREAKS always
# end a paragraph on their own.
_NEWLINES = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
# Characters that show nothing on their own, though they are (part of) words elsewhere: soft hyphen,
# combining grapheme joiner, zero-width (non-)joiner, braille blank, Hangul filler, variation
# selectors. A line of them only is blank (captions space paragraphs with U+2800, e-mail HTML leaves
# &zwnj;), and a token of them only is none.
_INVISIBLE = "\u00ad\u034f\u200c\u200d\u2800\u3164\ufe00-\ufe0f\U000e0100-\U000e01ef"
_HAS_INVISIBLE = re.compile(f"[{_INVISIBLE}]").search
_ALL_INVISIBLE = re.compile(f"[{_INVISIBLE}]+").fullmatch
_PARA_BREAKS = frozenset("\x0c\x1c\x1d\x1e\u2029")
_CONTINUATION_END = frozenset(",;:-\u2013\u2014(/&+=")
_TRAILING_FUNCTION_WORDS = frozenset("a an the of to in on at for and or but by with from as that".split())
# Words a Title Cased headline leaves lower case ("Bill into Law", "Apple vs. Samsung").
_TITLE_MINOR_WORDS = _TRAILING_FUNCTION_WORDS | frozenset(
    "nor into onto over after via vs vs. per up upon off out than under near".split()
)
# Title-cased endings of domain names, which "Berlin.The" (sentences joined) must not split: Amazon.Com.
_DOMAIN_ENDINGS = frozenset("com org net gov edu info biz".split())
# A line ending in one of these may be followed by a list item even when it looks wrapped.
_ITEM_LEADS = frozenset(":.!?;")
# A list item's bullet at a line's start: a glyph, or a dash (which also joins words, so it needs a space after)
_BULLETS = "*\u2022\u00b7\u2023\u25e6\u25aa\u25cf"
_DASH_BULLETS = "-\u2013\u2014"
_BULLET_GLYPHS = frozenset(_BULLETS + _DASH_BULLETS)
# A paragraph whose lines are all shorter is not taken for hard-wrapped prose: lists of short
# headlines and link lines of scraped pages are more common than columns this narrow.
_MIN_WRAP_WIDTH = 36
_WRAP_SLACK = 4  # characters a wrapped line may exceed the paragraph's other lines by


# Characters written otherwise: an HTML character reference to one character ("&amp;" before it:
# escaped more than once), or a character's UTF-8 bytes read as cp1252 ("\u00e2\u20ac\u2122" for "\u2019",
# "\u00c3\u00a9" for "\u00e9"; the five bytes cp1252 leaves undefined read as Latin-1's controls). Only the
# characters news text holds are read so, as their leading bytes are letters of correctly written text too
# ("all\u00e9\u00a0\u00bb", "JOS\u00c9\u00a0MOURINHO"): Latin-1 and Latin Extended-A letters and signs
# ("\u00c3\u00a9", "\u00c5\u201a"), punctuation, currency and letterlike signs ("\u00e2\u20ac\u201d", "\u00e2\u201a\u00ac",
# "\u00e2\u201e\u00a2"), a byte order mark, emoji.
_CP1252_BYTE = {bytes([b]).decode("cp1252", errors="ignore") or chr(b): b for b in range(0x80, 0x100)}
_UTF8_TAIL = "".join(ch for ch, b in _CP1252_BYTE.items() if b < 0xC0)
_UTF8_LEAD = re.compile("[\u00c2-\u00c5\u00e2\u00ef\u00f0]").search
_WRITTEN_OTHERWISE = re.compile(  # the look-ahead: a fast scan to the characters that may start one
    r"(?=[&\u00c2-\u00c5\u00e2\u00ef\u00f0])(?:&(?:amp;)*(#[0-9]{1,7}|#[xX][0-9a-fA-F]{1,6}|[A-Za-z][A-Za-z0-9]{1,31});"
    f"|[\u00c2-\u00c5][{re.escape(_UTF8_TAIL)}]|\u00e2[{re.escape(_UTF8_TAIL)}]{{2}}|\u00ef\u00bb\u00bf"
    f"|\u00f0[{re.escape(_UTF8_TAIL)}]{{3}})"
)

_SCAN_LIMIT = 0x32400  # everything assigned above is tags, variation selectors, private use
_EMOJI_PLANE = range(0x1F000, 0x1FC00)


def _char_class(points: list[int], categories: list[str], *, coarse_astral: bool) -> str:
    """Body of a regex character class holding exactly the sorted code points ``points``.

    Python's ``re`` tests astral (non-BMP) ranges of a class one by one, so a class
    with hundreds of them is slow to *fail*.  With ``coarse_astral`` the astral ranges
    are merged across gaps of unassigned code points and of punctuation/symbols of
    historic scripts (outside the emoji blocks), which leaves three ranges.
    """
    ranges: list[list[int]] = []
    for cp in points:
        if ranges and ranges[-1][1] == cp - 1:
            ranges[-1][1] = cp
        elif (
            coarse_astral
            and ranges
            and ranges[-1][1] >= 0xFFFF
            and all(
                categories[g] == "Cn" or (categories[g][0] in "PSC" and g not in _EMOJI_PLANE)
                for g in range(ranges[-1][1] + 1, cp)
            )
        ):
            ranges[-1][1] = cp
        else:
            ranges.append([cp, cp])
    return "".join(
        re.escape(chr(lo)) if lo == hi else f"{re.escape(chr(lo))}-{re.escape(chr(hi))}" for lo, hi in ranges
    )


def _trie_regex(words: list[str]) -> str:
    """A regex matching exactly ``words``, factored on common prefixes (fast to fail)."""
    trie: dict = {}
    for w in words:
        node = trie
        for ch in w:
            node = node.setdefault(ch, {})
        node[""] = {}

    def emit(node: dict) -> str:
        alts = [re.escape(ch) + emit(child) for ch, child in sorted(node.items()) if ch]
        optional = "" in node
        if not alts:
            return ""
        body = alts[0] if len(alts) == 1 and not optional else "(?:" + "|".join(alts) + ")"
        return body + "?" if optional else body

    return emit(trie)


@dataclass(frozen=True, slots=True)
class _Compiled:
    token: re.Pattern[str]
    terminator: re.Pattern[str]
    cjk_terminator: re.Pattern[str]
    linebreak: re.Pattern[str]
    quote_prefix: re.Pattern[str]
    newline: re.Pattern[str]
    bullet: re.Pattern[str]
    sentence_start: re.Pattern[str]
    next_word: re.Pattern[str]
    joined_terminator: re.Pattern[str]
    alternatives: tuple[tuple[str, str], ...]  # (name, pattern) of the token pattern, in order
    suffix: str  # appended to every token alternative


@lru_cache(maxsize=1)
def _compiled() -> _Compiled:
    """Build the Unicode character classes and compile all patterns (once)."""
    category = unicodedata.category
    categories = [category(chr(cp)) for cp in range(_SCAN_LIMIT)]
    is_cjk = bytearray(_SCAN_LIMIT)
    for lo, hi in _CJK:
        hi = min(hi, _SCAN_LIMIT - 1)
        is_cjk[lo : hi + 1] = b"\x01" * (hi + 1 - lo)
    # word characters: letters, numbers, combining marks, underscore -- except Han/kana
    # U+02BC (modifier letter apostrophe) is a letter to Unicode but an apostrophe in text: Britainʼs
    word = [cp for cp, cat in enumerate(categories)
            if (cat[0] in "LNM" or cp == 0x5F) and not is_cjk[cp] and cp != 0x2BC]
    upper = [cp for cp, cat in enumerate(categories) if cat in ("Lu", "Lt")]
    start = [cp for cp, cat in enumerate(categories) if cat in ("Lu", "Lt", "Lo", "Nd")]
    marks = [cp for cp, cat in enumerate(categories) if cat[0] == "M"]
    # Invisible characters that belong to the preceding character: ZWNJ, soft hyphen,
    # emoji modifiers, tag characters (flag sequences), variation selectors; ZWJ
    # (U+200D) also glues the next character on (emoji ZWJ sequences).
    joiners = "\u00ad\u200c\U0001f3fb-\U0001f3ff\U000e0020-\U000e007f\U000e0100-\U000e01ef"
    W = "[" + _char_class(word, categories, coarse_astral=True) + "\u00ad\u200c\u200d]"
    UPPER = "[" + _char_class(upper, categories, coarse_astral=True) + "]"
    START = "[" + _char_class(start, categories, coarse_astral=True) + "]"
    bmp_marks = _char_class([cp for cp in marks if cp <= 0xFFFF], categories, coarse_astral=False)
    astral_marks = _char_class([cp for cp in marks if cp > 0xFFFF], categories, coarse_astral=False)
    # Separators: whitespace, C0/C1 controls, BOM, bidi marks/embeddings/isolates,
    # zero-width space, word joiner & invisible operators, lone surrogates (a word joiner
    # between two word characters joins them instead, below).
    sep = (
        "\\s\x00-\x1f\x7f-\x9f\u061c\u180e\u200b\u200e\u200f\u202a-\u202e"
        "\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb\ud800-\udfff"
    )
    SEP = f"[{sep}]"
    NOTSEP = f"[^{sep}]"
    NL = f"(?:\\r\\n|[{_NEWLINES}])"
    # the two classes must not share a character (a tab was in both): a failing match would try
    # every way of splitting a run of them between the alternatives, exponential in its length
    HSEP = f"[^\\S{_NEWLINES}]|[\x00-\x08\x0e-\x1b\x7f-\x84\x86-\x9f\u061c\u180e\u200b\u200e\u200f\u202a-\u202e\u2060-\u2064\u2066-\u206f\ufeff]"
    # Marks and joiners after any token; astral marks only behind a cheap guard.
    EXTSEQ = (
        f"(?:[{bmp_marks}{joiners}]|\u200d{NOTSEP}?"
        f"|(?=[\U00010000-\U0010ffff])[{astral_marks}])*"
    )
    NOT_W = f"(?!{W})"
    # an e-mail's quote marks at a line's start: "> ", ">> ", "  > > "
    quote_prefix = f"(?:{HSEP})*>(?:>|{HSEP})*"
    # the space between two words: after a line break, quote marks too ("F.\n>\n> Kennedy");
    # possessive, as its parts overlap
    GAP = f"(?:(?:{HSEP})*+{NL}(?:{SEP}|>)*+|{SEP}++)"
    # a URL does not end in sentence punctuation or a closing quote/bracket
    url_last = f"[^{sep}.,;:!?)\\]}}'\"\u201d\u2019>]"

    titles = _trie_regex(_TITLES + _OTHER_ABBREVIATIONS)
    upper_titles = _trie_regex(_UPPER_TITLES + _UPPER_OTHER)
    numbered = _trie_regex(_NUMBERED)
    clitic_end = "(?:[sSdDmM]|re|ve|ll|RE|VE|LL|Re|Ve|Ll)"
    apostrophe = f"[{_APOSTROPHES}]"
    # a clitic's left quote only right after a word: before a word it opens a quote (the \u2018M&S\u2019)
    clitic_apostrophe = f"(?:['\u2019\u02bc]|(?<={W})[\u2018\u201b\u00b4\u2032])"
    # possessive quantifiers (Python >= 3.11) keep adversarial input linear-time
    # not inside a dotted chain whose earlier letter was tried as one ("a.b.c.d.ex"): the same chain ends
    # the same way, and retrying at every letter was quadratic in its length (Ph.D. is a title token)
    acronym = f"(?<!(?<!Ph)\\.[A-Za-z]\\.)[A-Za-z](?:\\.[A-Za-z])++\\.?+{NOT_W}"
    # did|n't; a word neither starts nor ends in "_": Markdown's _emphasis_ around a name is not the name
    run = f"(?!_){W}+(?<![nN](?={apostrophe}[tT]{NOT_W}))(?<!_)"
    seg = f"(?:{acronym}|{run})"
    tld = "(?:com|org|net|gov|edu|mil|int|info|biz|io|co|uk|cn|de|fr|ru|jp|in|au|ca|us|eu|ch|nl|es|it|tv)"
    join = (
        "(?:[-\u2010\u2011]"  # hyphen: al-Qaida, U.S.-led
        f"|{apostrophe}(?!(?:{clitic_end}|[tT]){NOT_W})"  # O'Connor, Shi'ite (not Britain's)
        "|(?<=\\d)[.,:/](?=\\d)"  # 1,000 3.5 3:30 20/20
        "|(?<=[A-Z])&(?=[A-Z])"  # AT&T
        f"|(?<={W})@"  # e-mail
        f"|(?<={W})\u2060++(?={W})"  # word joiner inside a word: Vladi\u2060mir (a BOM there is where two texts were joined)
        f"|\\.(?={tld}{NOT_W})"  # Wired.com
        ")"
    )
    alternatives = [
        # a Reuters instrument code in brackets: (MSFT.O) (RDSa.L) (BRK.A), an index's (.DJI)
        ("ric", "(?<=\\()(?:[A-Za-z0-9]{1,8}\\.[A-Z]{1,3}|\\.[A-Z]{2,6})(?=\\))"),
        ("url", f"(?:(?:https?|ftp)://|www\\.){NOTSEP}*{url_last}"),
        ("title", f"{titles}\\."),  # Mr. Gen. Inc. Jan. Calif.
        ("upper_title", f"{upper_titles}\\.(?={GAP}[{_OPENERS}]*{UPPER}['\u2019]?{UPPER})"),  # ST. LOUIS
        ("numbered", f"{numbered}\\.(?=(?:{SEP})*\\d)"),  # No. 5
        ("initial", f"{UPPER}\\.(?={GAP}[{_OPENERS}]*{UPPER})"),  # George W. Bush
        ("clitic", f"{clitic_apostrophe}{clitic_end}{NOT_W}"),  # 's 're 've 'll 'd 'm
        ("nt", f"[nN]{apostrophe}[tT]{NOT_W}"),  # n't
        # '80s; \u201999 is a year (a right quote opens nothing), a straight '20 may open a quote
        ("decade", f"(?:[\u2019\u02bc]\\d\\ds?|['\u2018\u201b`]\\d\\ds){NOT_W}"),
        # john.doe@mail.example.co.uk; the bounded look-ahead keeps a long dotted run linear-time
        ("email", f"(?=[^{sep}@]{{1,64}}@){W}++(?:[.+-]{W}++)*+@{W}++(?:[.-]{W}++)*\\.{W}++{NOT_W}"),
        ("word", f"{seg}(?:{join}{seg})*(?:[-\u2010\u2011](?=(?:{HSEP})+(?:and|or|to|nor|from)\\s))?"),  # oil- and
        ("handle", f"@{W}+"),  # @handle
        ("degree", f"\u00b0[CFK]{NOT_W}"),  # 300 °C
        ("cjk", f"[{_CJK_RANGES}]"),  # one Han / kana character
        ("flag", "[\U0001f1e6-\U0001f1ff]{2}"),  # regional-indicator pair
        ("punct", "\\.{2,}|-{2,}|[!?]+|``|''"),
        ("underscores", "_+"),
        ("other", NOTSEP),
    ]
    # no alternative starts with a separator: the guard skips the spaces between tokens at once
    token = f"(?={NOTSEP})(?:" + "|".join(p for _, p in alternatives) + f"){EXTSEQ}"
    term = f"(?<![{_TERMINATORS}])[{_TERMINATORS}]++[{_CLOSERS}]*+(?={GAP}[{_OPENERS}]*{START})"
    cjk_term = f"(?<![{_CJK_TERMINATORS}])[{_CJK_TERMINATORS}]++[{_CLOSERS}]*+"
    # a line of quote marks only is blank too; the next line's quote marks belong to the break
    linebreak = f"{NL}(?:(?:{HSEP}|[{_INVISIBLE}>])*{NL})*(?:{quote_prefix})?"  # HSEP holds none of them
    # group 1: a mark that also occurs in prose (a number ending a sentence, a spaced dash)
    # a number or dash only before a space on its line: "October / 10. / The" ends a sentence at "10."
    bullet = f"(?:{HSEP})*(?:[{_BULLETS}](?:{SEP})|([{_DASH_BULLETS}]|\\d{{1,2}}[.)])(?:{HSEP}))"
    return _Compiled(
        token=re.compile(token),
        terminator=re.compile(term),
        cjk_terminator=re.compile(cjk_term),
        linebreak=re.compile(linebreak),
        quote_prefix=re.compile(f"(?<![^{_NEWLINES}]){quote_prefix}"),
        newline=re.compile(NL),
        bullet=re.compile(bullet),
        sentence_start=re.compile(f"(?:{HSEP})*[{_OPENERS}]*{START}"),
        # a line's first word, quotes and brackets included; one character of an unspaced script
        # "in Berlin.The chancellor": paragraphs a page's text extraction joined without a space
        joined_terminator=re.compile("[.!?](?<=[a-z]{2}[.!?])(?=[A-Z][a-z])"),  # the mark first: a fast scan
        next_word=re.compile(f"(?:{HSEP})*([{_CJK_RANGES}]|[^{sep}{_CJK_RANGES}]*)"),
        alternatives=tuple(alternatives),
        suffix=EXTSEQ,
    )


# --------------------------------------------------------------------------- API


def segment(text: str) -> list[SentenceTokens]:
    """Split a document into sentences of tokens, in order. Empty/whitespace-only text -> []."""
    if not isinstance(text, str):
        raise TypeError(f"segment() expects str, not {type(text).__name__}")
    read = _read_otherwise(text)
    if read is None:
        return _segment(text)
    plain, at = read
    chars = [a[0] for a in at]
    return [SentenceTokens(s.words, _original_offsets(s.starts, chars, at, end=False),
                           _original_offsets(s.ends, chars, at, end=True), s.item_mark)
            for s in _segment(plain)]


def _character(m: re.Match) -> str | None:
    """The one character an HTML character reference or a cp1252 reading of UTF-8 stands for; None if
    it is no such thing (an unknown name, a reference to no character or two, bytes no UTF-8)."""
    if m.group(1) is None:
        try:
            value = bytes(_CP1252_BYTE[ch] for ch in m.group()).decode("utf-8")
        except UnicodeDecodeError:
            return None
        if m.end() - m.start() == 2 and _CP1252_BYTE[m.group()[1]] < 0xA0 and m.string[m.start() - 1:m.start()].isupper():
            return None  # a word in capitals ending in \u00c4 or \u00c5 before a quote or dash: "P\u00c4IV\u00c4\u201d", "UME\u00c5\u2013"
        return value if value >= "\u00a0" and (value <= "\u214f" or value == "\ufeff" or value >= "\U0001f000") else None
    # "&amp;quot;" escaped twice stands for what "&quot;" does; html.unescape gives "" for a control
    # character ("&#11;") and two characters for some names ("&fjlig;")
    value = html.unescape(f"&{m.group(1)};")
    return value if len(value) == 1 else None


def written_otherwise(text: str) -> Iterator[tuple[int, int, str]]:
    """Start, end and character of each character ``text`` writes otherwise: an HTML character reference
    or UTF-8 read as cp1252 ("\u00e2\u20ac\u2122" for "\u2019")."""
    if "&" in text or (not text.isascii() and _UTF8_LEAD(text)):
        for m in _WRITTEN_OTHERWISE.finditer(text):
            value = _character(m)
            if value is not None:
                yield m.start(), m.end(), value


def _read_otherwise(text: str) -> tuple[str, list[tuple[int, int, int]]] | None:
    """The text with its characters written otherwise read as they are meant, and where each one is:
    (offset of its character in the text read, start and end in ``text``); None when it holds none."""
    pieces, at, taken = [], [], 0
    shift = 0  # characters the ones so far have lost
    for start, end, value in written_otherwise(text):
        pieces += [text[taken:start], value]
        at.append((start - shift, start, end))
        shift += end - start - 1
        taken = end
    if not at:
        return None
    pieces.append(text[taken:])
    return "".join(pieces), at


def _original_offsets(offsets: list[int], chars: list[int], at: list[tuple[int, int, int]], end: bool) -> list[int]:
    """Offsets in the text read as offsets in the original: a token's start (``end`` False) or end.
    ``chars`` are the offsets of the characters written otherwise in the text read (``at``'s first items)."""
    out = []
    for offset in offsets:
        char = offset - 1 if end else offset  # the token's last or first character
        i = bisect_right(chars, char) - 1
        if i < 0:
            out.append(offset)
        elif chars[i] == char:  # a character written otherwise
            out.append(at[i][2] if end else at[i][1])
        else:  # after it: shifted by what it and those before it lost
            out.append(offset + at[i][2] - at[i][0] - 1)
    return out


def _segment(text: str) -> list[SentenceTokens]:
    c = _compiled()
    ms = list(c.token.finditer(text))
    if _HAS_INVISIBLE(text):
        ms = [m for m in ms if not _ALL_INVISIBLE(m.group())]
    if ">" in text:  # an e-mail's quote marks are no part of what it says
        quoted = {q.start() + i for q in c.quote_prefix.finditer(text) for i, ch in enumerate(q.group()) if ch == ">"}
        ms = [m for m in ms if m.start() not in quoted]
    if not ms:
        return []
    words = [m.group() for m in ms]
    starts = [m.start() for m in ms]
    ends = [m.end() for m in ms]
    marks: dict[int, int] = {}
    cuts = _sentence_starts(text, c, words, starts, ends, marks)
    out = []
    prev = 0
    for k in [*cuts, len(words)]:
        out.append(SentenceTokens(words[prev:k], starts[prev:k], ends[prev:k], marks.get(prev, 0)))
        prev = k
    return out


def _opener_follows(words: list[str], idx: int) -> bool:
    n = len(words)
    while idx < n and words[idx] in _OPENER_TOKENS:
        idx += 1
    if idx >= n:
        return False
    word = words[idx]
    if len(word) > 1 and word.isupper() and idx + 1 < n and words[idx + 1].isupper():
        return word.title() in _UPPER_TEXT_OPENERS  # "THE DEAL" in upper-case text, not "IT spending"
    if word not in _SENTENCE_OPENERS:
        return False
    if word not in _NAME_OPENERS or idx + 1 == n:
        return True
    following = words[idx + 1]
    return not following[0].isupper() or following in _DAYS_AND_MONTHS


def _looks_like_heading(line: str, first_in_paragraph: bool) -> bool:
    """A short line that ends without continuation punctuation and is either Title
    Cased / ALL CAPS (headline, byline, dateline, list of names) or, when at most
    50 characters, the first line of its paragraph (a sentence-case headline).
    Lines of hard-wrapped prose are long and mostly lower case, so they are not."""
    line = line.strip()
    if not line or len(line) > 70 or line[-1] in _CONTINUATION_END:
        return False
    tokens = line.split()
    if tokens[-1] in _TRAILING_FUNCTION_WORDS or tokens[-1] in _TITLE_SET:
        return False
    if first_in_paragraph and len(line) <= 50:
        return True
    alpha = [t for t in tokens if t[0].isalpha()]
    return bool(alpha) and 2 * sum(t[0].isupper() for t in alpha) >= len(alpha)


def _sentence_starts(
    text: str, c: _Compiled, words: list[str], starts: list[int], ends: list[int], marks: dict[int, int]
) -> list[int]:
    """Indices of the tokens that start a new sentence (sorted, without 0); adds to ``marks`` those that
    start one with a list item's number."""
    n = len(words)
    cuts: set[int] = set()
    # . ! ? … followed by whitespace and a sentence start
    for m in c.terminator.finditer(text):
        q = m.start()
        idx = bisect_left(starts, m.end())
        if idx >= n or idx == 0:
            continue
        k = bisect_right(starts, q) - 1
        if k < 0:
            continue
        w = words[k]
        if starts[k] == q:  # a stand-alone terminator token: . ! ? ?! ...
            if not (w.startswith("..") or w[0] == "\u2026"):
                cuts.add(idx)
            # an ellipsis ends a sentence before a sentence opener, or when a period
            # or a closing quote follows it ("...." / "…." / "…”")
            elif ends[k] < m.end() or w.startswith("....") or _opener_follows(words, idx):
                cuts.add(idx)
        elif k + 1 < idx and words[k + 1][0] in _STANDALONE_TERMINATORS:  # "in the U.S.? Obama": the ? ends it
            cuts.add(idx)
        elif w in _TITLE_SET:
            continue
        elif _opener_follows(words, idx):  # U.S. / Inc. / J. before "The", "He" ...
            cuts.add(idx)
    for m in c.joined_terminator.finditer(text):
        idx = bisect_left(starts, m.end())
        if (1 < idx < n and starts[idx - 1] == m.start() and ends[idx - 1] == m.end() and starts[idx] == m.end()
                and _joined_sentences(text, words, starts, ends, idx)):
            cuts.add(idx)
    if "\u3002" in text or "\uff01" in text or "\uff1f" in text or "\uff61" in text:
        for m in c.cjk_terminator.finditer(text):
            idx = bisect_left(starts, m.end())
            if 0 < idx < n:
                cuts.add(idx)
    # line breaks
    breaks = []  # (start, end, ends a paragraph)
    for m in c.linebreak.finditer(text):
        g = m.group()
        breaks.append((m.start(), m.end(), len(c.newline.findall(g)) >= 2 or any(ch in _PARA_BREAKS for ch in g)))
    quoted = c.quote_prefix.match(text)
    first_line_start = quoted.end() if quoted else 0  # the first line's quote marks, as a break takes the others'
    widths = _wrap_widths(text, breaks, first_line_start)
    inner = sorted(cuts)  # the sentence ends found so far, none at a line break: those inside lines
    if c.bullet.match(text, first_line_start):
        _keep_item_number(cuts, marks, words, 0)
    line_start = first_line_start
    line_first = 0  # index of the previous line's first token
    first_in_paragraph = True
    # Whether the previous line starts where a headline or list item may: a capitalised line inside
    # a sentence ("German Foreign Minister Frank-Walter") is wrapped prose, not a headline.
    opens = True
    in_list = False  # a list item came earlier in the paragraph
    for i, ((a, b, paragraph), width) in enumerate(zip(breaks, widths)):
        prev_line = text[line_start:a]
        line_start = b
        idx = bisect_left(starts, b)
        opens = opens or first_in_paragraph or line_first in cuts
        title = None  # whether the line is Title Cased, worked out where a rule asks
        if 0 < idx < n:
            bullet = c.bullet.match(text, b)
            lead = prev_line.rstrip().rstrip(_CLOSERS)[-1:] if bullet else ""  # '... forward."' leads as '.' does
            if (bullet and not in_list and bullet.group(1) and lead not in _ITEM_LEADS
                    and _wrapped(prev_line, text, c, b, width)
                    and not _next_item_alike(text, c, breaks, i, bullet.group(1))):
                bullet = None  # "on March / 3. Analysts", "the West Bank -- Jenin and Ramallah / -- will be"
            if paragraph or bullet:
                cuts.add(idx)
                # an item's number stays with its item where the line before leads into a list; after
                # "on July" with no evidence of wrapping, "10." may well end the sentence
                if bullet and (paragraph or in_list or lead in _ITEM_LEADS
                               or _looks_like_heading(prev_line, first_in_paragraph)):
                    _keep_item_number(cuts, marks, words, idx)
                in_list = bool(bullet) and not paragraph
            elif (c.sentence_start.match(text, b) and _looks_like_heading(prev_line, first_in_paragraph)
                  # "Prime Minister \n Boris Johnson\n said": a page's markup broke a sentence into lines
                  and not (prev_line[-1:].isspace() and _inline_fragment(text, breaks, i))
                  # "Monday. U.S. Ambassador Susan" is wrapped prose; "Fed holds rates. What it means" a headline
                  and ((title := _title_case(prev_line)) or (first_in_paragraph and len(prev_line.strip()) <= 50)
                       or not _ends_inside(inner, cuts, line_first, idx))
                  and ((title and opens) or not _wrapped(prev_line, text, c, b, width))):
                cuts.add(idx)
        elif paragraph:
            in_list = False
        # the next line opens too after a colon (a list) or after the first line of a capitalised block
        # that opened (a headline of two lines)
        opens = prev_line.rstrip().endswith(":") or (opens and (_title_case(prev_line) if title is None else title))
        line_first = idx
        first_in_paragraph = paragraph
    if "\t" in text:
        _add_cell_starts(text, c, words, starts, ends, cuts)
    return sorted(cuts)


_TABS = re.compile("\t+")


def _add_cell_starts(text: str, c: _Compiled, words: list[str], starts: list[int], ends: list[int],
                     cuts: set[int]) -> None:
    """A tab between two words of a line separates table cells ("Angela Merkel<TAB>Germany") or a label
    from its value: each side is read on its own, so no entity runs from one cell into the next. A list
    item's mark stays with its item ("1.<TAB>Angela Merkel")."""
    n = len(words)
    done = -1
    # the last tab run of each gap ("a \t \t b") decides it: scanning the gap again for each of its runs
    # was quadratic in its length
    for m in reversed(list(_TABS.finditer(text))):
        idx = bisect_left(starts, m.end())
        if idx == done:
            continue
        done = idx
        if not 0 < idx < n or ends[idx - 1] > m.start() or c.newline.search(text, ends[idx - 1], starts[idx]):
            continue
        first = idx - 1  # the line's first token, if the line holds at most two before the tab ("1" ".")
        while first > max(idx - 3, 0) and not c.newline.search(text, ends[first - 1], starts[first]):
            first -= 1
        on_line_start = first == 0 or c.newline.search(text, ends[first - 1], starts[first]) is not None
        bullet = c.bullet.match(text, starts[first]) if on_line_start else None
        if not (bullet and bullet.end() > ends[idx - 1]):  # the mark, and a space after it
            cuts.add(idx)


def _ends_inside(inner: list[int], cuts: set[int], first: int, end: int) -> bool:
    """Whether a sentence ends inside the line of tokens first..end-1 (``inner``: sorted candidates)."""
    j = bisect_right(inner, first)
    while j < len(inner) and inner[j] < end:
        if inner[j] in cuts:  # a list item's number may have taken its cut back
            return True
        j += 1
    return False


def _joined_sentences(text: str, words: list[str], starts: list[int], ends: list[int], idx: int) -> bool:
    """Whether "word.Word" ending at token ``idx`` is two sentences run together rather than a name with
    a dot in it: a domain (Amazon.Com), a dotted chain of code or a file name (java.util.ArrayList,
    Report.Final.docx), a CamelCase member (Console.WriteLine)."""
    right = words[idx]
    if right.lower() in _DOMAIN_ENDINGS or not right[1:].islower():
        return False
    left_start = starts[idx - 2]
    before = text[left_start - 1:left_start] if left_start else ""
    after = text[ends[idx]:ends[idx] + 1]
    return before not in (".", "/", "\\", "`") and after not in (".", "(", "/", "\\", "`") and ends[idx - 2] == starts[idx - 1]


def _inline_fragment(text: str, breaks: list[tuple[int, int, bool]], i: int) -> bool:
    """Whether the line after break ``i`` is a fragment of running text that a page's markup broke out
    ("Prime Minister \\nBoris Johnson\\n said"): it ends in a space, or the line after it goes on with a
    space or punctuation. A headline that merely ends in a space is followed by a whole sentence."""
    if i + 1 >= len(breaks) or breaks[i][2] or breaks[i + 1][2]:
        return False
    a, b, _ = breaks[i + 1]
    if text[breaks[i][1]:a][-1:].isspace():
        return True
    goes_on = text[b:b + 1]
    return bool(goes_on) and (goes_on.isspace() or goes_on in ",.;:)'\u2019")


def _next_item_alike(text: str, c: _Compiled, breaks: list[tuple[int, int, bool]], i: int, mark: str) -> bool:
    """Whether the line after break ``i``'s line starts with a dash like ``mark``: two dashed lines in a
    row are a list ("- Social Democrats go into opposition / - Turnout was high"), one is a dash of prose."""
    if mark[0].isdigit() or i + 1 >= len(breaks) or breaks[i + 1][2]:
        return False
    item = c.bullet.match(text, breaks[i + 1][1])
    return item is not None and item.group(1) == mark


def _keep_item_number(cuts: set[int], marks: dict[int, int], words: list[str], item: int) -> None:
    """A list item's number ("1. Roger Federer", "2) Oil prices") or bullet ("\u2022 Oil prices") is no sentence
    of its own, and marked so that the model reads the item without it (a number is not taken for a date)."""
    if item + 2 < len(words) and words[item].isdigit() and words[item + 1] in (".", ")"):
        cuts.discard(item + 2)
        marks[item] = 2
    elif item + 1 < len(words) and words[item] in _BULLET_GLYPHS:  # "• Angela Merkel", "- Oil prices"
        cuts.discard(item + 1)
        marks[item] = 1


def _title_case(line: str) -> bool:
    """Every word capitalised but for short function words: a headline, even one as long as the
    body's wrapped lines."""
    alpha = [t for t in line.split() if t[0].isalpha()]
    return bool(alpha) and all(t[0].isupper() or t[1:2].isupper() or t in _TITLE_MINOR_WORDS for t in alpha)


def _wrapped(line: str, text: str, c: _Compiled, b: int, width: int) -> bool:
    """Whether ``line``, whose break ends at ``b``, was ended by wrapping rather than on purpose.

    ``width`` is the longest of the paragraph's other wrapped-looking lines (0: no evidence). A
    wrapped line is about as long as those, and the next line's first word would not have fitted
    on it; a heading's break is deliberate (the word would have fitted), and a heading longer than
    the body's lines is no wrapped line of it.  So "Defense Secretary Donald / Rumsfeld met ..." is
    one sentence, and a headline above wrapped prose still ends its own.
    """
    length = len(line.rstrip())
    if width < _MIN_WRAP_WIDTH or length > width + _WRAP_SLACK:
        return False
    return length + 1 + len(c.next_word.match(text, b)[1]) > max(width, length)


def _wrap_widths(text: str, breaks: list[tuple[int, int, bool]], first_line_start: int) -> list[int]:
    """For each line break, the longest line of its paragraph other than the line it ends and the
    paragraph's last line (which wrapping leaves short). A paragraph of two lines takes the longest
    such line of the document's paragraphs of three lines or more (a page's headline-and-caption
    pairs are no evidence); 0 where there is none."""
    widths: list[int] = []
    lengths: list[int] = []  # the current paragraph's lines
    alone: list[tuple[int, int]] = []  # (position in widths, last line's length) of two-line paragraphs
    longest = 0  # the longest wrapped-looking line of the document's longer paragraphs
    line_start = first_line_start
    for a, b, paragraph in breaks + [(len(text), len(text), True)]:
        lengths.append(len(text[line_start:a].rstrip()))
        line_start = b
        if paragraph:
            wrapped = lengths[:-1]  # every line but the last ends in a line break of this paragraph
            if len(wrapped) == 1:
                alone.append((len(widths), lengths[-1]))
            elif wrapped:
                longest = max(longest, *wrapped)
            top = sorted(wrapped, reverse=True)[:2] + [0, 0]
            widths += [top[1] if length == top[0] else top[0] for length in wrapped]  # the longest of the others
            widths.append(0)  # the paragraph break itself: always a cut
            lengths = []
    for position, last in alone:
        if last <= longest + _WRAP_SLACK:  # a longer last line: this paragraph is not wrapped at that width
            widths[position] = longest
    return widths[: len(breaks)]

