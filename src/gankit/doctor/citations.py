"""Plain-language citations for the doctor's texts.

The doctor's explanations cite the project's source documents by author and title (:data:`SOURCES`
lists them in full for a references section). Diagnoses written by earlier versions cited them by
their numbers (``seed 002 §3.1``, ``deck 003``), and a run directory keeps its diagnoses: every
text shown to a user goes through :func:`plain_citations`, which rewrites such old references.
"""

from __future__ import annotations

import re

__all__ = ["SOURCES", "plain_citations"]

#: The documents the doctor's explanations quote, as a reader can find them.
SOURCES: list[tuple[str, str]] = [
    ("Wenzel (2023)", ("M. Wenzel, 'Generative Adversarial Networks and Other Generative Models', "
                      "in Machine Learning for Brain Disorders (O. Colliot, ed.), Springer, 2023, "
                      "chapter 5")),
    ("Cohen & Giryes (2022)", ("G. Cohen and R. Giryes, 'Generative Adversarial Networks', "
                              "arXiv:2203.00667, 2022 (mode collapse, vanishing gradients, "
                              "image quality)")),
    ("the BIOS 740 GAN lecture", ("BIOS 740 lecture notes, chapter 6: 'Generative Adversarial "
                                 "Networks' (training challenges, hyperparameter sensitivity)")),
    ("Bénédict's GAN survey", ("G. Bénédict, 'Generative Adversarial Networks' (survey post: the "
                              "original GAN's challenges, variants, evaluation)")),
]

_RULES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"Box 4 \(000/001\)"), "Wenzel (2023), Box 4"),
    (re.compile(r"\b[Ss]eeds? 000/001\b"), "Wenzel (2023)"),
    (re.compile(r"\b000/001\b"), "Wenzel (2023)"),
    (re.compile(r"\b[Ss]eed 00[01]\b"), "Wenzel (2023)"),
    (re.compile(r"\b(?:[Ss]eed|[Cc]hapter) 002\b"), "Cohen & Giryes (2022)"),
    (re.compile(r"\bDeck 003\b"), "The BIOS 740 GAN lecture"),
    (re.compile(r"\bdeck 003\b"), "the BIOS 740 GAN lecture"),
    (re.compile(r"\b[Ss]eed 004 \[1\]"), "cited by Bénédict"),
    (re.compile(r"\bSeed 004\b"), "Bénédict's GAN survey"),
    (re.compile(r"\bseed 004\b"), "Bénédict's GAN survey"),
    (re.compile(r"\bthe seeds'"), "the sources'"),
    (re.compile(r"\b[Tt]he seeds\b"), "the sources"),
]


def plain_citations(text: str) -> str:
    """``text`` with every numbered source-document reference replaced by its author/title."""
    for pat, repl in _RULES:
        text = pat.sub(repl, text)
    return text
