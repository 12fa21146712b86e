"""FINDINGS and IMPRESSION of a MIMIC-CXR free-text report, and their sentences.

The text prompts of the model are excerpts of these two sections, so the parser must keep other
sections (EXAMINATION, INDICATION, HISTORY, COMPARISON, NOTIFICATION, WET READ, ...) out of them and
must not alter the text: only whitespace is normalised, "___" de-identification marks and decimals
such as "4.5 cm" stay as written (the reference script's "<digits>." removal broke them).

Decisions, so that no sentence is counted twice:

* "FINDINGS AND IMPRESSION:" / "FINDINGS/IMPRESSION:" text goes to ``impression`` only.
* "CONCLUSION:" (and misspellings such as "IMPRESSON:") is the impression.
* An all-caps header naming the views ("PA AND LATERAL VIEWS OF THE CHEST:", "CHEST, TWO VIEWS:")
  opens findings, as in MIT-LCP's section list; in mixed case such a line is ordinary text.
* Several findings (or impression) sections are joined in report order.
* A report with neither section gives two empty strings; we do not guess from the last paragraph.
* Where the "FINAL REPORT" banner is followed by findings or an impression, anything above it (a wet
  read, a preliminary read with its own "IMPRESSION:") is ignored.

Headers are recognised at line start (any case for known names, unknown names only in ALL CAPS),
on a line of their own without a colon ("IMPRESSION"), and after a sentence end inside a line
("... effusion. IMPRESSION: ..."), the latter for known names only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["ReportSections", "normalize_whitespace", "parse_report", "report_sentences", "split_sentences"]


@dataclass(frozen=True)
class ReportSections:
    findings: str  # "" when absent
    impression: str  # "" when absent


# ---------------------------------------------------------------------------------------------
# Section headers
# ---------------------------------------------------------------------------------------------

_FINDINGS, _IMPRESSION, _OTHER, _FINAL = "findings", "impression", "other", "final report"

# Header names recognised in any case (lower-cased, single spaces). Spelling variants and typos are
# those seen in MIMIC-CXR (counts in MIT-LCP's section_parser.py).
_KNOWN: dict[str, str] = {
    **dict.fromkeys(
        "findings|finding|findins|findindgs|findgings|findngs|findnings|finidngs".split("|"), _FINDINGS
    ),
    **dict.fromkeys(
        (
            "impression|impressions|conclusion|conclusions|final impression|findings and impression|"
            "findings/impression|findings / impression|findings/ impression|impression/findings|"
            "impression and findings|findings and conclusion|findings/conclusion|summary|impresson|"
            "imprression|imoression|impressoin|imprssion|impresion|imperssion|mpression|impession|impressio"
        ).split("|"),
        _IMPRESSION,
    ),
    **dict.fromkeys(
        (
            "examination|exam|examinations|type of examination|type of exam|study|indication|indications|"
            "clinical indication|reason for examination|reason for exam|reason for study|idication|history|"
            "clinical history|clinical information|patient history|history/indication|indication/history|"
            "pfi|technique|techniques|procedure|comparison|comparisons|comparison exam|comparison film|"
            "comparison study|comparison studies|reference exam|comparision|comparsion|comparrison|"
            "comparisions|notification|notifications|recommendation|recommendations|recommendation(s)|"
            "wet read|wetread|addendum|final addendum|preliminary report|date|comment|"
            "comments|clinical question"
        ).split("|"),
        _OTHER,
    ),
    "final report": _FINAL,  # the banner: what precedes it (a wet read, an addendum) is not the report
}

# Sub-headings inside findings of structured reports ("LUNGS: Clear.", "Lines/tubes: ..."): text, never
# a new section, even in ALL CAPS; so is any header made only of anatomy and device words.
_SUBHEADINGS = frozenset(
    {
        "lungs", "lung", "pleura", "pleural", "pleural spaces", "heart", "heart size", "mediastinum",
        "cardiomediastinal", "cardiomediastinal silhouette", "hila", "hilum", "hilar", "bones",
        "bony structures", "osseous", "osseous structures", "soft tissues", "lines", "lines/tubes",
        "lines and tubes", "tubes/lines", "tubes and lines", "tubes", "support devices", "devices",
        "lines/tubes/devices", "airways", "trachea", "aorta", "vasculature", "pulmonary vasculature",
        "diaphragm", "chest wall", "abdomen", "upper abdomen", "musculoskeletal", "skeleton", "other",
        "note", "notes",
    }
)  # fmt: skip
_ANATOMY_WORDS = frozenset(
    """right left bilateral lung lungs lobe lobes upper lower middle base bases apex apices pleura
    pleural space spaces heart cardiac size mediastinum mediastinal cardiomediastinal contours hila
    hilar hilum bone bones bony osseous soft tissue tissues line lines tube tubes device devices
    support catheter catheters et ng og picc ij enteric trachea airway airways aorta aortic vasculature
    vascular pulmonary diaphragm hemidiaphragm hemidiaphragms wall abdomen abdominal spine thoracic
    cervical clavicle clavicles shoulder shoulders and other""".split()
)

# ALL-CAPS headers that describe the views of the study stand for findings.
_VIEW_RE = re.compile(
    r"\b(chest|portable|pa and lat|lateral and pa|ap and lat|lateral and ap|frontal|two views|"
    r"one view|single view|pa view|ap view|lateral view|views of|upright|supine|radiographs?|ribs)\b"
)
_OTHER_STEMS = (
    "history", "indication", "comparison", "technique", "exam", "reason", "clinical", "recommend",
    "addendum", "procedure", "comment",
)  # fmt: skip
_ALWAYS_OTHER_STEMS = ("pfi", "wet read", "wetread", "preliminary", "provisional", "notif", "communicat")
_MAX_UNKNOWN_HEADER_WORDS = 6

_NAME = r"[A-Za-z][A-Za-z0-9_ ()/,&'#-]{0,60}?"
_LINE_HEADER_RE = re.compile(rf"^[ \t]*(?P<name>{_NAME})[ \t]*:(?=\s|$)")
_ALONE_HEADER_RE = re.compile(rf"^[ \t]*(?P<name>{_NAME})[ \t]*:?[ \t]*$")
_INLINE_HEADER_RE = re.compile(r"(?<=[.?!])[ \t]+(?P<name>[A-Z][A-Z ()/,&-]{1,40}?)[ \t]*:(?=\s|$)")


def _edit_distance(a: str, b: str) -> int:
    """Levenshtein distance where swapping two neighbours counts once ("IMPRESSOIN")."""
    rows = [list(range(len(b) + 1))]
    for i in range(1, len(a) + 1):
        row = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            row[j] = min(rows[-1][j] + 1, row[j - 1] + 1, rows[-1][j - 1] + (a[i - 1] != b[j - 1]))
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                row[j] = min(row[j], rows[-2][j - 2] + 1)
        rows.append(row)
    return rows[-1][-1]


def _classify(name: str) -> str | None:
    """Section kind of a header name, or None when the name is ordinary text."""
    key = " ".join(name.lower().split())
    if key in _SUBHEADINGS or set(re.findall(r"[a-z]+", key)) <= _ANATOMY_WORDS:
        return None
    if key in _KNOWN:
        return _KNOWN[key]
    if name.upper() != name:  # unknown mixed-case names ("Note:", "PA and lateral views:") are text
        return None
    if any(s in key for s in _ALWAYS_OTHER_STEMS):
        return _OTHER
    if "impression" in key or "conclusion" in key:
        return _IMPRESSION
    if "finding" in key:
        return _FINDINGS
    for word in re.findall(r"[a-z]+", key):  # one-letter slips: "IMPRESSSION", "FIDNINGS"; not "DEPRESSION"
        if _edit_distance(word, "impression") <= 1:
            return _IMPRESSION
        if _edit_distance(word, "findings") <= 1:
            return _FINDINGS
    if any(s in key for s in _OTHER_STEMS):
        return _OTHER
    if _VIEW_RE.search(key):
        return _FINDINGS
    # "SVC:", "CHF:" at a line start are text; "ADDENDUM:", "CRITICAL RESULT:" are headers
    words = key.split()
    if len(words) <= _MAX_UNKNOWN_HEADER_WORDS and any(len(w) >= 4 for w in words):
        return _OTHER
    return None


def _split_inline(line: str) -> list[tuple[str | None, str]]:
    """Cut a line at known headers that follow a sentence end: [(kind or None, text), ...]."""
    parts: list[tuple[str | None, str]] = []
    kind: str | None = None
    start = 0
    for m in _INLINE_HEADER_RE.finditer(line):
        new_kind = _classify(m.group("name"))
        if new_kind is None or " ".join(m.group("name").lower().split()) not in _KNOWN:
            continue
        parts.append((kind, line[start : m.start()]))
        kind, start = new_kind, m.end()
    parts.append((kind, line[start:]))
    return parts


def _sections(text: str) -> list[tuple[str, list[str]]]:
    """The report as [(kind, lines)], starting with a 'preamble' of kind other."""
    sections: list[tuple[str, list[str]]] = [(_OTHER, [])]
    for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        m = _LINE_HEADER_RE.match(line)
        kind = _classify(m.group("name")) if m else None
        if kind is not None:
            sections.append((kind, []))
            line = line[m.end() :]
        else:
            m = _ALONE_HEADER_RE.match(line)
            key = " ".join(m.group("name").lower().split()) if m else ""
            # a capitalised known name alone on its line ("IMPRESSION", "Findings"); a lower-case word
            # alone is more likely the wrapped end of a sentence ("... since the prior\n exam")
            if key in _KNOWN and m.group("name")[0].isupper():
                sections.append((_KNOWN[key], []))
                continue
        for inline_kind, piece in _split_inline(line):
            if inline_kind is not None:
                sections.append((inline_kind, []))
            sections[-1][1].append(piece)
    return sections


def normalize_whitespace(text: str) -> str:
    """Collapse every whitespace run (line breaks and wrap indentation included) into one space."""
    return " ".join(text.split())


def parse_report(text: str) -> ReportSections:
    """FINDINGS and IMPRESSION of a MIMIC-CXR report, whitespace-normalised, otherwise as written."""
    sections = [(kind, normalize_whitespace(" ".join(lines))) for kind, lines in _sections(text)]
    banners = [i for i, (kind, _) in enumerate(sections) if kind == _FINAL]
    if banners and any(kind in (_FINDINGS, _IMPRESSION) and body for kind, body in sections[banners[-1] :]):
        sections = sections[banners[-1] :]  # a wet read above the banner may carry its own IMPRESSION
    found: dict[str, list[str]] = {_FINDINGS: [], _IMPRESSION: []}
    for kind, body in sections:
        if kind in found and body:
            found[kind].append(body)
    return ReportSections(findings=" ".join(found[_FINDINGS]), impression=" ".join(found[_IMPRESSION]))


# ---------------------------------------------------------------------------------------------
# Sentences
# ---------------------------------------------------------------------------------------------

# A period after these never ends a sentence ("Dr. ___", "vs. prior", "e.g. CT").
_NEVER_TERMINAL = frozenset(
    "dr drs mr mrs ms prof st sr jr vs v approx appx e.g i.e eg ie cf fig figs".split()
)
# After "No." a number continues the sentence ("No. 2 tube"); after a time a connector does ("A.M. ON").
_NUMBER_ABBREVIATIONS = frozenset({"no", "nos", "num"})
_NO_END_BEFORE_NUMBER = _NEVER_TERMINAL | _NUMBER_ABBREVIATIONS
_TIME_ABBREVIATIONS = frozenset({"a.m", "p.m", "am", "pm"})
_TIME_CONNECTORS = frozenset("on by to and via with at in over from when after prior for of or".split())

_CANDIDATE_RE = re.compile(r"(?P<punct>[.?!]+)(?P<close>[\"')\]]*) +(?=\S)")
_HAS_WORD_RE = re.compile(r"[A-Za-z0-9]")
_MARKER_RE = re.compile(r"(?<!\S)(?P<num>\d{1,2})(?P<delim>[.)])(?= |$)")


def _previous_token(text: str, end: int) -> str:
    start = text.rfind(" ", 0, end) + 1
    return text[start:end].lstrip("(\"'[").lower()


def _is_boundary(text: str, m: re.Match[str]) -> bool:
    """Whether the sentence ends at candidate ``m`` (punctuation then a space)."""
    punct, nxt = m.group("punct"), text[m.end()]
    if nxt.islower():
        return False
    if punct[0] in "?!":
        # "? pneumonia" (a question mark standing alone) flags a query, it ends nothing
        return m.start() > 0 and text[m.start() - 1] != " "
    if len(punct) > 1:  # ellipsis or a doubled period
        return True
    prev = _previous_token(text, m.start())
    if prev in _NEVER_TERMINAL:
        return False
    if prev in _NUMBER_ABBREVIATIONS and nxt.isdigit():
        return False
    if prev in _TIME_ABBREVIATIONS:
        next_word = text[m.end() :].split(" ", 1)[0]
        if next_word.isupper() and next_word.lower() in _TIME_CONNECTORS:
            return False
    return nxt.isalnum() or nxt in "_\"'([-*#"


def _ends_sentence(prefix: str) -> bool:
    """Whether text ending in ``prefix`` (stripped) stops at a sentence end, so a number may open a list item."""
    if not prefix:
        return True
    if prefix[-1] in ":;?!":
        return True
    stripped = prefix.rstrip("\"')]")
    if not stripped.endswith("."):
        return False
    return _previous_token(stripped, len(stripped) - 1) not in _NO_END_BEFORE_NUMBER


def _list_markers(text: str) -> list[re.Match[str]]:
    """Numbered-list markers ("1." or "1)" opening an item), in order."""
    markers: list[re.Match[str]] = []
    last = 0
    for m in _MARKER_RE.finditer(text):
        num = int(m.group("num"))
        prefix = text[: m.start()].rstrip()
        if m.group("delim") == ")" and prefix.count("(") > prefix.count(")"):
            continue  # "(image 2) ..." closes a parenthesis, it numbers nothing
        after_end = _ends_sentence(prefix)
        in_sequence = last > 0 and num == last + 1
        if after_end or in_sequence:
            markers.append(m)
            last = num
    return markers


def split_sentences(text: str) -> list[str]:
    """Sentences of a section, whitespace-normalised, without numbered-list markers.

    ``" ".join(split_sentences(t))`` equals ``normalize_whitespace(t)`` less the list markers (and
    less any piece without a letter or digit, such as a stray "."). A period ends a sentence when the
    next word starts with a capital, a digit, a quote or "___", unless it closes a title or Latin
    abbreviation ("Dr.", "vs.", "e.g.", "No. 2"); "?" and "!" end one unless they stand alone ("? PNA").
    """
    text = normalize_whitespace(text)
    if not text:
        return []
    markers = _list_markers(text)
    marker_at = {m.start(): m.end() for m in markers}
    starts = {0} | set(marker_at)
    starts.update(m.end() for m in _CANDIDATE_RE.finditer(text) if _is_boundary(text, m))
    cuts = sorted(starts) + [len(text)]
    sentences = []
    for begin, end in zip(cuts, cuts[1:], strict=False):
        begin = marker_at.get(begin, begin)
        sentence = text[begin:end].strip()
        if _HAS_WORD_RE.search(sentence):  # a stray "." or "-" is no sentence
            sentences.append(sentence)
    return sentences


def report_sentences(sections: ReportSections) -> list[str]:
    """Findings' sentences, then the impression's."""
    return split_sentences(sections.findings) + split_sentences(sections.impression)
