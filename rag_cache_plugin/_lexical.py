"""Cheap, explainable lexical evidence about whether two questions ask the same thing.

Everything here is plain Python over the ORIGINAL texts (casing kept, so capitalised
words can be read as names).  A parsed question is memoised, so verifying one query
against several candidates parses the query once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

__all__ = ["FEATURES", "GUARDS", "Parsed", "features", "guards", "parse"]

_WORD = re.compile(r"\d+(?:[.,]\d+)+%?|[^\W_]+(?:[.'\u2019+#-][^\W_]+)*[+#]*", re.UNICODE)
_NUMBER = re.compile(r"^\d+(?:[.,]\d+)*(?:st|nd|rd|th|s|k|m|bn|%)?$")



def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


_STOP = _words(
    """a an the of to in on at for from by with about as into onto over under is are was
    were be been being am do does did doing done have has had having i me my mine we us
    our you your he him his she her it its they them their this that these those there
    here and or but if so than then too very can could would should will shall may might
    must get got gets getting what which who whom whose why how when where whats hows
    whys wheres whos some any all each every more most much many other such own same
    just also only really one ones thing things way ways s t ll re ve d m quora anyone
    someone something people person good best better know make makes made use using
    used like want wants need needs"""
)
_NEGATION = _words(
    "not no never none nobody nothing neither nor cannot cant dont doesnt didnt isnt "
    "arent wasnt werent wont wouldnt shouldnt couldnt hasnt havent hadnt without"
)
_WH = ("what", "why", "how", "when", "where", "who", "which", "whom", "whose")
# Words whose swap reverses a question's meaning.  Either side of a pair set counts.
_OPPOSITES: tuple[tuple[frozenset[str], frozenset[str]], ...] = tuple(
    (frozenset(x.split("|")), frozenset(y.split("|")))
    for x, y in (
        ("to|into|towards", "from"),
        ("increase|increases|increased|increasing|raise|raises|rise|rises",
         "decrease|decreases|decreased|decreasing|reduce|reduces|reduced|lower|lowers|fall|falls"
         "|drop|drops"),
        ("before", "after"),
        ("more", "less|fewer"),
        ("higher|high", "lower|low"),
        ("best", "worst"),
        ("better", "worse"),
        ("advantages|advantage|pros|benefits|benefit",
         "disadvantages|disadvantage|cons|drawbacks|drawback"),
        ("buy|buying|purchase", "sell|selling"),
        ("up", "down"),
        ("gain|gaining", "lose|losing"),
        ("import|imports|importing", "export|exports|exporting"),
        ("male|males|men|man|boys|boy", "female|females|women|woman|girls|girl"),
        ("husband|boyfriend", "wife|girlfriend"),
        ("start|starting|begin|beginning", "stop|stopping|end|ending|quit|quitting"),
        ("open|opening", "close|closing"),
        ("first", "last"),
        ("positive", "negative"),
        ("rich", "poor"),
        ("cheap|cheapest", "expensive|costly"),
        ("fast|faster|fastest", "slow|slower|slowest"),
        ("big|bigger|biggest|large|larger|largest", "small|smaller|smallest"),
        ("hot|hotter|warm", "cold|colder|cool"),
        ("easy|easiest|easier", "hard|hardest|harder|difficult"),
        ("win|winning|won", "lose|losing|lost"),
        ("love", "hate"),
        ("in", "out"),
        ("north|northern", "south|southern"),
        ("east|eastern", "west|western"),
        ("old|older|oldest", "new|newer|newest|young|younger|youngest"),
    )
)
_ALL_OPPOSITE_WORDS = frozenset().union(*(x | y for x, y in _OPPOSITES))
_NOT_NAMES = _words("i i'm i've i'll i'd")
# Words that give the content words after them a role.  Symmetric ones (and, or, vs,
# between, with) are left out: "between A and B" may swap A and B freely.
_DETERMINERS = _words("the a an my your his her their our its this that these those")
_ROLE_MARKERS = _words("from to into than in for by of on at over under onto towards")
_SYMMETRIC = _words("and or vs versus nor plus with between")


def _stem(w: str) -> str:
    # Just enough folding that "cars"/"car", "learning"/"learn" meet; never aggressive.
    for suf, keep in (("ies", 4), ("ing", 5), ("ed", 5), ("es", 5), ("s", 4)):
        if len(w) >= keep and w.endswith(suf) and not w.endswith("ss"):
            return w[: -len(suf)] + ("y" if suf == "ies" else "")
    return w


@dataclass(frozen=True, slots=True)
class Parsed:
    words: frozenset[str]
    """All words, casefolded, apostrophes removed."""
    content: frozenset[str]
    """Stemmed content words (stop words, numbers and question words removed)."""
    numbers: frozenset[str]
    names: frozenset[str]
    """Casefolded capitalised words not opening the sentence, and all-caps acronyms."""
    negations: int
    wh: str
    n_words: int
    opp_x: frozenset[int]
    """Indexes of opposite pairs whose first side alone occurs."""
    opp_y: frozenset[int]
    roles: tuple[tuple[str, str], ...]
    """(stemmed content word, the role marker last seen before it), in order."""
    spans: frozenset[tuple[str, tuple[str, ...], str]]
    """(content stem, the 1-4 words between, content stem) for nearby content words."""


@lru_cache(maxsize=8192)
def parse(text: str) -> Parsed:
    tokens = _WORD.findall(text)
    words: list[str] = []
    numbers: set[str] = set()
    names: set[str] = set()
    negations = 0
    wh = ""
    for pos, tok in enumerate(tokens):
        low = tok.casefold()
        if low.endswith(("n't", "n\u2019t")):
            negations += 1
        w = low.replace("'", "").replace("\u2019", "")
        words.append(w)
        if w in _NEGATION:
            negations += 1 if not low.endswith(("n't", "n\u2019t")) else 0
        if not wh and w in _WH:
            wh = w
        if tok[0].isdigit() and _NUMBER.match(low):
            numbers.add(low.replace(",", ""))
        elif (
            (tok[0].isupper() and pos > 0 and low not in _NOT_NAMES and low not in _STOP)
            or (len(tok) >= 2 and tok.isupper() and tok.isalpha())
        ):
            names.add(w)
    stems: list[str] = []
    roles: list[tuple[str, str]] = []
    role = "^"
    for w in words:
        if w in _ROLE_MARKERS:
            role = w
        elif w in _DETERMINERS:
            continue  # "from the USA": the role reaches over determiners
        elif w not in _STOP and w not in _NEGATION and not w[:1].isdigit():
            st = _stem(w)
            stems.append(st)
            roles.append((st, role))
            role = "^"  # a role marks the word right after it only
        else:
            role = "^"
    content = frozenset(stems)
    wset = frozenset(words)
    opp_x: set[int] = set()
    opp_y: set[int] = set()
    if wset & _ALL_OPPOSITE_WORDS:
        for i, (x, y) in enumerate(_OPPOSITES):
            hx, hy = bool(wset & x), bool(wset & y)
            if hx and not hy:
                opp_x.add(i)
            elif hy and not hx:
                opp_y.add(i)
    return Parsed(wset, content, frozenset(numbers), frozenset(names), negations,
                  wh, len(words), frozenset(opp_x), frozenset(opp_y), tuple(roles),
                  _spans(words))


def _spans(words: list[str]) -> frozenset[tuple[str, tuple[str, ...], str]]:
    """Pairs of content words at most 4 words apart, with the words between them."""
    at = [(i, _stem(w)) for i, w in enumerate(words)
          if w not in _STOP and w not in _NEGATION and w not in _DETERMINERS
          and not w[:1].isdigit()]
    out = set()
    for k, (i, u) in enumerate(at):
        for j, v in at[k + 1 :]:
            if j - i > 5:
                break
            mid = tuple(words[i + 1 : j])
            if u != v and mid and not _SYMMETRIC.intersection(mid):
                out.add((u, mid, v))
    return frozenset(out)


# Guards: rules that reject a look-alike whatever its cosine.  Each returns a short
# reason when it fires and "" when it does not.
GUARDS = ("number", "name", "negation", "direction", "roles")


def _number_guard(p: Parsed, q: Parsed) -> str:
    if p.numbers != q.numbers and (p.numbers - q.words) and (q.numbers - p.words):
        return f"{sorted(p.numbers - q.numbers)} vs {sorted(q.numbers - p.numbers)}"
    return ""


def _name_guard(p: Parsed, q: Parsed) -> str:
    # A substitution: each side names something the other does not mention at all.
    only_p = {n for n in p.names if n not in q.words and _stem(n) not in q.content}
    only_q = {n for n in q.names if n not in p.words and _stem(n) not in p.content}
    if only_p and only_q:
        return f"{sorted(only_p)} vs {sorted(only_q)}"
    return ""


def _negation_guard(p: Parsed, q: Parsed) -> str:
    if (p.negations > 0) != (q.negations > 0):
        return f"negated {p.negations} vs {q.negations}"
    return ""


def _direction_guard(p: Parsed, q: Parsed) -> str:
    hit = (p.opp_x & q.opp_y) or (p.opp_y & q.opp_x)
    if not hit:
        return ""
    x, y = _OPPOSITES[min(hit)]
    return f"{sorted(p.words & (x | y))} vs {sorted(q.words & (x | y))}"


def _roles_guard(p: Parsed, q: Parsed) -> str:
    # Two shared words that trade roles: "import from Canada, sell in India" vs "import
    # from India, sell in Canada"; "Apple better than Samsung" vs "Samsung ... than Apple".
    rp = {w: r for w, r in p.roles}
    rq = {w: r for w, r in q.roles}
    moved = [w for w in rp if w in rq and rp[w] != rq[w]]
    for i, u in enumerate(moved):
        for v in moved[i + 1 :]:
            if rp[u] == rq[v] and rp[v] == rq[u]:
                return f"{u}:{rp[u]}/{v}:{rp[v]} vs {u}:{rq[u]}/{v}:{rq[v]}"
    # Two words that trade places around the same words: "life after death" vs "death
    # after life", "North Indians think about South Indians" vs the reverse.
    for u, mid, v in p.spans:
        if (v, mid, u) in q.spans and (u, mid, v) not in q.spans:
            between = " ".join(mid)
            return f"{u} {between} {v} vs {v} {between} {u}"
    return ""


_GUARD_FUNCS = (_number_guard, _name_guard, _negation_guard, _direction_guard, _roles_guard)


def guards(p: Parsed, q: Parsed) -> dict[str, str]:
    """Reasons of the guards that fire (empty when none does)."""
    out = {}
    for name, fn in zip(GUARDS, _GUARD_FUNCS, strict=True):
        why = fn(p, q)
        if why:
            out[name] = why
    return out


# Features of the calibrated score, each in a bounded range (so the minimum cosine that
# can still reach a threshold is computable: see MatchVerifier.candidate_floor).
FEATURES = (
    "content_jaccard",  # [0, 1]
    "content_missing",  # unmatched content words, larger side, capped at 6, /6
    "content_extra",  # unmatched content words, smaller side, capped at 6, /6
    "number_diff",  # numbers on one side only
    "name_diff",  # a name on one side only
    "negation_diff",
    "direction_diff",
    "wh_diff",  # different question words (what/why/how/...)
    "length_ratio",  # shorter / longer, in words
)
FEATURE_RANGES = tuple((0.0, 1.0) for _ in FEATURES)


def features(p: Parsed, q: Parsed, g: dict[str, str] | None = None) -> list[float]:
    if g is None:
        g = guards(p, q)
    union = p.content | q.content
    inter = p.content & q.content
    miss_p = len(p.content - inter)
    miss_q = len(q.content - inter)
    names_p = {n for n in p.names if n not in q.words}
    names_q = {n for n in q.names if n not in p.words}
    return [
        len(inter) / len(union) if union else 1.0,
        min(max(miss_p, miss_q), 6) / 6.0,
        min(min(miss_p, miss_q), 6) / 6.0,
        1.0 if (p.numbers - q.words) or (q.numbers - p.words) else 0.0,
        1.0 if names_p or names_q else 0.0,
        1.0 if "negation" in g else 0.0,
        1.0 if "direction" in g else 0.0,
        1.0 if p.wh != q.wh else 0.0,
        min(p.n_words, q.n_words) / max(p.n_words, q.n_words, 1),
    ]
