"""Sentences written in capitals, in Title Case or in lower case, read by the model in the case of running text.

The corpus is running text, where a capital letter marks a name: a headline in capitals
("UN SAYS IRAN MUST STOP") or in Title Case ("Obama Meets Leaders of the European Union") reads to
the model as a row of names. The model reads such a sentence with each word in the form the
training part writes it most often away from a sentence's start ("says", "must", "meets",
"Iran", "UN"), but that two words it writes capitalised together keep their capitals ("World Health
Organization", though "world" and "health" are lower case most often); records keep the document's
own text and offsets. Such names are no sign of a headline: "Welcome to the World Health
Organization." is running text. The sentences of a document written wholly in lower case (a speech
transcript, a lower-cased text) are read with the words and pairs the training part writes capitalised
nearly always in their usual form.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from nerbatch.vocab import composed

_CAPITALS_SHARE = 0.8  # of a sentence's words of two or more letters, written in capitals
# Words Title Case styles leave in lower case: fewer than the segmenter's heading test allows ("near",
# "after", "that"), as running text holds those too and a sentence taken for a headline has names lowered.
_MINOR_WORDS = frozenset(
    "a an the and but or nor for so yet as at by in of off on per to up via with from into onto over upon than vs vs."
    .split()
)
_PROPER_EVIDENCE = 3  # times written capitalised, at least
_PROPER_SHARE = 0.9  # of the times written
_ORDINAL = re.compile(r"\d+(?:st|nd|rd|th)").fullmatch


def _key(word: str) -> str:
    return composed(word).lower()


def _has_case(word: str) -> bool:
    return word.lower() != word.upper()


def _minor(word: str) -> bool:
    """A lower-case word a Title Case headline holds: a minor word, a clitic ("'s", "n't"), an ordinal ("2nd")."""
    key = _key(word)
    return key in _MINOR_WORDS or key[0] == "'" or key == "n't" or _ORDINAL(key) is not None


def _nearly_always(capitalised: int, lower_case: int) -> bool:
    """Whether a word or pair is written capitalised often and nearly always: a name even in lower-case text."""
    return capitalised >= _PROPER_EVIDENCE and capitalised >= _PROPER_SHARE * (capitalised + lower_case)


def _capitalised(word: str) -> bool:
    return word[:1].isupper()


def _capitalise(word: str) -> str:
    return word[:1].upper() + word[1:]


def _in_form(word: str, usual: str) -> str:
    """``word`` with the capitals of its usual form ("UN", "McCain"); as it is when their lengths differ."""
    if len(usual) != len(word):
        return word
    return "".join(c.upper() if u.isupper() else c.lower() for c, u in zip(word, usual))


@dataclass(frozen=True)
class Truecaser:
    """The written form of each word of a training corpus, and the sentences that need it."""

    lowercase: frozenset[str]  # words written in lower case most often
    cased: dict[str, str] = field(default_factory=dict)  # the others: lower-cased word -> its usual form
    # two words, one of them usually lower case, written capitalised together most often: "world bank"
    names: frozenset[str] = frozenset()
    # what a document in lower case is read with: the words and pairs the training part writes
    # capitalised nearly always and often enough ("iran", "world health"; not "river", "brand new")
    proper: frozenset[str] = frozenset()
    proper_names: frozenset[str] = frozenset()

    @classmethod
    def build(cls, sentences: Iterable[Sequence[str]]) -> "Truecaser":
        """From a corpus's sentences; a sentence's first word is left out (capitalised there whatever it is)."""
        forms: dict[str, Counter] = defaultdict(Counter)
        pairs: dict[str, Counter] = defaultdict(Counter)
        for words in sentences:
            first, previous = True, None  # previous: the word just before, when its case says something
            for word in words:
                if not _has_case(word):
                    previous = None
                    continue
                word = composed(word)
                if first:
                    first = False
                    continue
                forms[word.lower()][word] += 1
                if previous is not None:
                    pairs[f"{previous.lower()} {word.lower()}"][_capitalised(previous) and _capitalised(word)] += 1
                previous = word
        lowercase, cased, proper = set(), {}, set()
        for key, counts in forms.items():
            # most frequent; on a tie the lower-case form, then the greater string (the same in any corpus order)
            form = max(counts.items(), key=lambda item: (item[1], item[0] == key, item[0]))[0]
            if form == key:
                lowercase.add(key)
            else:
                cased[key] = form
                if _nearly_always(sum(counts.values()) - counts[key], counts[key]):
                    proper.add(key)
        names = {pair for pair, counts in pairs.items()
                 if counts[True] > counts[False] and any(key in lowercase for key in pair.split(" "))}
        proper_names = {pair for pair in names if _nearly_always(pairs[pair][True], pairs[pair][False])}
        return cls(frozenset(lowercase), cased, frozenset(names), frozenset(proper), frozenset(proper_names))

    def to_json(self) -> dict:
        return {"lowercase": sorted(self.lowercase), "cased": dict(sorted(self.cased.items())),
                "names": sorted(self.names), "proper": sorted(self.proper), "proper_names": sorted(self.proper_names)}

    @classmethod
    def from_json(cls, data) -> "Truecaser":
        """``ValueError`` unless ``data`` is what ``to_json`` writes (the first bundles with the file have only
        'lowercase' and 'cased', or 'names' too)."""
        lists = ("lowercase", "names", "proper", "proper_names")
        if not isinstance(data, dict) or not isinstance(data.get("cased"), dict) or "lowercase" not in data \
                or not all(isinstance(data.setdefault(name, []), list) for name in lists):
            raise ValueError(f"not an object with {', '.join(map(repr, lists))} lists and a 'cased' object")
        if not all(isinstance(w, str) for name in lists for w in data[name]) or \
                not all(isinstance(k, str) and isinstance(v, str) for k, v in data["cased"].items()):
            raise ValueError("holds an item that is not a string")
        return cls(frozenset(data["lowercase"]), dict(data["cased"]),
                   *(frozenset(data[name]) for name in lists[1:]))

    def __len__(self) -> int:
        return len(self.lowercase) + len(self.cased)

    def _usually_lower(self, word: str) -> bool:
        return _key(word) in self.lowercase

    def _named(self, words: Sequence[str], i: int) -> bool:
        """Whether ``words[i]`` and a capitalised word beside it are a name ("World Bank", "Health Organization")."""
        return (i > 0 and _capitalised(words[i - 1]) and f"{_key(words[i - 1])} {_key(words[i])}" in self.names) or \
            (i + 1 < len(words) and _capitalised(words[i + 1]) and f"{_key(words[i])} {_key(words[i + 1])}" in self.names)

    def sentence(self, words: Sequence[str]) -> Sequence[str]:
        """The words as the model reads them: ``words`` itself unless the sentence is in capitals or in Title
        Case."""
        long_words = capitals = common_capitals = common_titled = 0
        first_word = None  # index of the first word with letters: capitalised in any sentence
        lower_word = False  # a lower-case word no Title Case style writes so
        for i, word in enumerate(words):
            if word.islower():
                long_words += len(word) > 1
                if first_word is None:
                    first_word = i
                elif not _minor(word):
                    lower_word = True
                    if long_words - capitals > (1 - _CAPITALS_SHARE) * len(words):
                        return words  # neither in capitals nor in Title Case: running text
            elif word.isupper():
                if len(word) > 1:
                    long_words += 1
                    capitals += 1
                    common_capitals += self._usually_lower(word)
                if first_word is None:
                    first_word = i
            elif _has_case(word):
                long_words += len(word) > 1
                if first_word is None:
                    first_word = i
                elif word.istitle() and self._usually_lower(word):
                    common_titled += 1
        # a headline holds a word written in lower case elsewhere that is not part of a name: "Welcome to
        # the World Health Organization." holds none
        if common_capitals >= 2 and capitals >= _CAPITALS_SHARE * long_words:
            if any(len(word) > 1 and word.isupper() and self._usually_lower(word) and not self._named(words, i)
                   for i, word in enumerate(words)):
                return self._from_capitals(words, first_word)
        elif common_titled >= 2 and not lower_word:
            common = [i for i, word in enumerate(words)
                      if i != first_word and word.istitle() and self._usually_lower(word) and not self._named(words, i)]
            if common:
                out = list(words)
                for i in common:
                    out[i] = words[i].lower()
                return out
        return words

    def lower_case_sentence(self, words: Sequence[str]) -> Sequence[str]:
        """A sentence of a document written in lower case as the model reads it: the words and pairs the
        training part writes capitalised nearly always in their usual form, the first word capitalised
        unless a number comes first."""
        out = list(words)
        for i, word in enumerate(words):
            key = _key(word)
            usual = self.cased.get(key) if key in self.proper else None
            if usual is not None:
                out[i] = _in_form(word, usual)
        for i in range(len(words) - 1):  # names: "world health organization"
            if f"{_key(words[i])} {_key(words[i + 1])}" in self.proper_names:
                out[i], out[i + 1] = _capitalise(out[i]), _capitalise(out[i + 1])
        first_word = next((i for i, word in enumerate(words) if _has_case(word)), None)
        if first_word is not None and not any(ch.isdigit() for word in words[:first_word] for ch in word):
            out[first_word] = _capitalise(out[first_word])  # ("43 of the workers ...")
        return out if out != words else words

    def _from_capitals(self, words: Sequence[str], first_word: int) -> list[str]:
        out = list(words)
        for i, word in enumerate(words):
            if not word.isupper():
                continue
            key = _key(word)
            if key in self.lowercase:
                form = word[0] + word[1:].lower() if self._named(words, i) else word.lower()
            elif key in self.cased:
                form = _in_form(word, self.cased[key])
            else:  # a word the corpus never wrote: a short one is likely an acronym, a longer one a name
                form = word if len(word) <= 3 else word[0] + word[1:].lower()
            if i == first_word:
                form = _capitalise(form)
            out[i] = form
        return out
