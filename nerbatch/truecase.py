"""Sentences written in capitals or in Title Case, read by the model in the case of running text.

The corpus is running text, where a capital letter marks a name: a headline in capitals
("UN SAYS IRAN MUST STOP") or in Title Case ("Obama Meets Leaders of the European Union") reads to
the model as a row of names. The model reads such a sentence with each word in the form the
training part writes it most often away from a sentence's start ("says", "must", "meets",
"Iran", "UN"); records keep the document's own text and offsets.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from nerbatch.vocab import composed

# Words that Title Case styles leave in lower case: a headline may hold them and still be one.
MINOR_WORDS = frozenset(
    "a an the and but or nor for so yet as at by in of off on per to up via with from into over than onto upon 's"
    .split()
)
_CAPITALS_SHARE = 0.8  # of a sentence's words of two or more letters, written in capitals


def _key(word: str) -> str:
    return composed(word).lower()


def _has_case(word: str) -> bool:
    return word.lower() != word.upper()


@dataclass(frozen=True)
class Truecaser:
    """The written form of each word of a training corpus, and the sentences that need it."""

    lowercase: frozenset[str]  # words written in lower case most often
    cased: dict[str, str] = field(default_factory=dict)  # the others: lower-cased word -> its usual form

    @classmethod
    def build(cls, sentences: Iterable[Sequence[str]]) -> "Truecaser":
        """From a corpus's sentences; a sentence's first word is left out (capitalised there whatever it is)."""
        forms: dict[str, Counter] = defaultdict(Counter)
        for words in sentences:
            first = True
            for word in words:
                if not _has_case(word):
                    continue
                if not first:
                    word = composed(word)
                    forms[word.lower()][word] += 1
                first = False
        lowercase, cased = set(), {}
        for key, counts in forms.items():
            # most frequent; on a tie the lower-case form, then the greater string (the same in any corpus order)
            form = max(counts.items(), key=lambda item: (item[1], item[0] == key, item[0]))[0]
            if form == key:
                lowercase.add(key)
            else:
                cased[key] = form
        return cls(frozenset(lowercase), cased)

    def to_json(self) -> dict:
        return {"lowercase": sorted(self.lowercase), "cased": dict(sorted(self.cased.items()))}

    @classmethod
    def from_json(cls, data) -> "Truecaser":
        """``ValueError`` unless ``data`` is what ``to_json`` writes."""
        if not isinstance(data, dict) or not isinstance(data.get("lowercase"), list) \
                or not isinstance(data.get("cased"), dict):
            raise ValueError("not an object with a 'lowercase' list and a 'cased' object")
        if not all(isinstance(w, str) for w in data["lowercase"]) or \
                not all(isinstance(k, str) and isinstance(v, str) for k, v in data["cased"].items()):
            raise ValueError("holds an item that is not a string")
        return cls(frozenset(data["lowercase"]), dict(data["cased"]))

    def __len__(self) -> int:
        return len(self.lowercase) + len(self.cased)

    def _usually_lower(self, word: str) -> bool:
        return _key(word) in self.lowercase

    def sentence(self, words: Sequence[str]) -> Sequence[str]:
        """The words as the model reads them: ``words`` itself unless the sentence is in capitals or Title Case."""
        long_words = capitals = common_capitals = common_titled = 0
        first_word = None  # index of the first word with letters: capitalised in any sentence
        lower_word = False  # a lower-case word no Title Case style writes so
        for i, word in enumerate(words):
            if word.islower():
                long_words += len(word) > 1
                if first_word is None:
                    first_word = i
                elif word not in MINOR_WORDS:
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
        if common_capitals >= 2 and capitals >= _CAPITALS_SHARE * long_words:
            return self._from_capitals(words, first_word)
        if common_titled >= 2 and not lower_word:
            return [word.lower() if i != first_word and word.istitle() and self._usually_lower(word) else word
                    for i, word in enumerate(words)]
        return words

    def _from_capitals(self, words: Sequence[str], first_word: int) -> list[str]:
        out = list(words)
        for i, word in enumerate(words):
            if not word.isupper():
                continue
            key = _key(word)
            if key in self.lowercase:
                form = word.lower()
            elif key in self.cased:
                usual = self.cased[key]
                form = "".join(c.upper() if u.isupper() else c.lower() for c, u in zip(word, usual)) \
                    if len(usual) == len(word) else word
            else:  # a word the corpus never wrote: a short one is likely an acronym, a longer one a name
                form = word if len(word) <= 3 else word[0] + word[1:].lower()
            if i == first_word:
                form = form[:1].upper() + form[1:]
            out[i] = form
        return out
