"""medspaCy's ConText against the project's labeler, on the phrasing suite: what issue 18 asked to measure.

The project decides negation, uncertainty and not-current scope with negspacy's NegEx because medspaCy cannot be
installed beside it (docs/evaluation.md). This script measures what ConText would have given: the same target
phrases, sides and aggregation (``cxr_ldm.metrics.report_labels``, unchanged), with ConText's assertions in place
of the three NegEx passes. It needs medspaCy, so it runs in a venv of its own (medspaCy 1.3.1 pulls spaCy 3.7 and
numpy 1.26 on Python < 3.12, not the project's environment):

    python3.11 -m venv /tmp/medspacy && /tmp/medspacy/bin/pip install medspacy==1.3.1 pyyaml
    OMP_NUM_THREADS=1 /tmp/medspacy/bin/python benchmarks/medspacy_context.py --rules default
    OMP_NUM_THREADS=1 /tmp/medspacy/bin/python benchmarks/medspacy_context.py --rules default+ours
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/medspacy_context.py --rules negspacy   # the project's, for comparison

``default``: ConText's own rules. ``default+ours``: plus the cue lists of ``report_rules.yaml`` as ConText rules
(:func:`our_rules`). Prints the texts read exactly right per suite group, a few misreads, and the time for 10,000
texts on one core.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "metrics"))

from phrasing_suite import compared_labels, expected_labels, load_suite  # noqa: E402

from cxr_ldm.metrics import report_labels  # noqa: E402

# the ConText categories standing for our three assertions
CATEGORY = {"negated": "NEGATED_EXISTENCE", "uncertain": "POSSIBLE_EXISTENCE", "not_current": "HYPOTHETICAL"}
PRIORITY = ("not_current", "uncertain", "negated")  # the order report_labels reads the assertions


def our_rules(default_rules: list) -> tuple[list, dict[str, list[str]]]:
    """``report_rules.yaml``'s cue lists as ConText rules, merged into ConText's defaults.

    One rule per literal (medspaCy prunes equal-length overlapping matches); a literal that is a cue of several
    passes goes to the first of :data:`PRIORITY`; preceding -> FORWARD, following -> BACKWARD, both ->
    BIDIRECTIONAL; ours replace a default of the same wording. Pseudo cues -> PSEUDO. A termination phrase of all
    three passes -> TERMINATE; of some -> a category that ends only those passes' scopes (``terminating_types``);
    one that is another pass's cue makes that pass's category end this pass's scope.
    """
    from medspacy.context import ConTextRule

    context = report_labels.load_rules()["context"]
    cues: dict[str, dict[str, set[str]]] = {}  # literal -> pass -> {"preceding", "following"}
    for name in PRIORITY:
        for kind in ("preceding", "following"):
            for literal in context[name][kind]:
                cues.setdefault(str(literal).lower(), {}).setdefault(name, set()).add(kind)
    rules, terminating = [], {category: set() for category in CATEGORY.values()}
    for literal, by_pass in cues.items():
        name = next(n for n in PRIORITY if n in by_pass)
        kinds = by_pass[name]
        direction = "BIDIRECTIONAL" if len(kinds) == 2 else ("FORWARD" if "preceding" in kinds else "BACKWARD")
        rules.append(ConTextRule(literal, CATEGORY[name], direction=direction))
    pseudo = {str(c).lower() for name in PRIORITY for c in context[name]["pseudo"]} - set(cues)
    rules += [ConTextRule(literal, "PSEUDO", direction="PSEUDO") for literal in sorted(pseudo)]
    ends: dict[str, set[str]] = {}
    for name in PRIORITY:
        for literal in map(lambda c: str(c).lower(), context[name]["termination"]):
            if literal in cues:
                other = next(n for n in PRIORITY if n in cues[literal])
                if other != name:
                    terminating[CATEGORY[name]].add(CATEGORY[other])
                continue
            ends.setdefault(literal, set()).add(name)
    for literal, names in ends.items():
        if names == set(PRIORITY):
            rules.append(ConTextRule(literal, "TERMINATE", direction="TERMINATE"))
        else:
            category = "TERM_" + "_".join(sorted(names)).upper()
            rules.append(ConTextRule(literal, category, direction="BIDIRECTIONAL"))
            for name in names:
                terminating[CATEGORY[name]].add(category)
    ours = {rule.literal.lower() for rule in rules}
    kept = [rule for rule in default_rules if rule.literal.lower() not in ours]
    return kept + rules, {k: sorted(v) for k, v in terminating.items() if v}


def context_pipeline(with_our_cues: bool):
    """Blank English, sentencizer, our target matcher, then medspaCy's ConText; its assertions are read through
    the three span attributes report_labels reads (negated, uncertain, not_current)."""
    import medspacy.context
    import spacy
    from medspacy.context import ConTextRule
    from spacy.language import Language
    from spacy.tokens import Span

    if "cxr_targets" not in Language.factories:
        Language.component("cxr_targets", func=report_labels._set_targets)
    nlp = spacy.blank("en")
    nlp.add_pipe("sentencizer")
    nlp.add_pipe("cxr_targets")
    if with_our_cues:
        defaults = Path(medspacy.context.__file__).resolve().parents[2] / "resources" / "en" / "context_rules.json"
        rules, terminating = our_rules(ConTextRule.from_json(str(defaults)))
        context = nlp.add_pipe("medspacy_context", config={"rules": None})
        # set after construction: through spaCy's config the lists arrive as one-shot iterators, so only the
        # first rule of a category would get them
        context.terminating_types = {k.upper(): [v.upper() for v in vs] for k, vs in terminating.items()}
        context.add(rules)
    else:
        nlp.add_pipe("medspacy_context", config={"rules": "default"})
    getters = {
        "negated": lambda span: span._.is_negated,
        "uncertain": lambda span: span._.is_uncertain,
        "not_current": lambda span: span._.is_historical or span._.is_hypothetical or span._.is_family,
    }
    for name, getter in getters.items():
        Span.set_extension(name, getter=getter, force=True)
    return nlp


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rules", choices=["default", "default+ours", "negspacy"], default="default")
    parser.add_argument("--misreads", type=int, default=8, help="how many misread texts to print")
    args = parser.parse_args()
    if args.rules != "negspacy":
        nlp = context_pipeline(args.rules == "default+ours")
        report_labels.pipeline = lambda: nlp  # label_texts reads the module's pipeline()
    suite = load_suite()
    report_labels.label_texts(["Warm up."])
    results = report_labels.label_texts([c["text"] for c in suite])
    right, total, wrong = Counter(), Counter(), []
    for case, labels in zip(suite, results, strict=True):
        total[case["group"]] += 1
        if compared_labels(case, labels) == expected_labels(case):
            right[case["group"]] += 1
        else:
            wrong.append((case, compared_labels(case, labels)))
    print(f"{args.rules}: {sum(right.values())} of {len(suite)} texts read exactly right")
    for group in total:
        print(f"  {group:24s} {right[group]:4d} / {total[group]}")
    for case, got in wrong[: args.misreads]:
        print(f"  misread: {case['text']!r}\n    expected {expected_labels(case)}\n    got      {got}")
    texts = [f"{suite[i % len(suite)]['text']} Compared with study {i}." for i in range(10_000)]
    start = time.perf_counter()
    report_labels.label_texts(texts)
    print(f"  10,000 texts: {time.perf_counter() - start:.2f} s")


if __name__ == "__main__":
    main()
