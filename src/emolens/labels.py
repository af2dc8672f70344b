"""The fixed vocabularies of the protocol: emotion labels and appraisal dimensions.

Orders matter: Tak et al. (2025) index every weight tensor by these ids, so results stay
comparable with theirs only if the orders are kept (paper-protocol §1.2 and §1.3).
"""

from __future__ import annotations

#: The 13 crowd-enVENT emotions in the paper's id order (``no-emotion`` renamed ``neutral``).
EMOTIONS: tuple[str, ...] = (
    "anger", "boredom", "disgust", "fear", "guilt", "joy", "neutral",
    "pride", "relief", "sadness", "shame", "surprise", "trust",
)

#: All 21 appraisal columns of crowd-enVENT, in the corpus' column order.
ALL_APPRAISALS: tuple[str, ...] = (
    "suddenness", "familiarity", "predict_event", "pleasantness", "unpleasantness",
    "goal_relevance", "chance_responsblt", "self_responsblt", "other_responsblt",
    "predict_conseq", "goal_support", "urgency", "self_control", "other_control",
    "chance_control", "accept_conseq", "standards", "social_norms", "attention",
    "not_consider", "effort",
)

#: The 20 appraisals the paper probes, in its id order (it drops ``chance_responsblt``).
PAPER_APPRAISALS: tuple[str, ...] = (
    "predict_event", "pleasantness", "other_responsblt", "chance_control", "suddenness",
    "familiarity", "unpleasantness", "goal_relevance", "self_responsblt", "predict_conseq",
    "goal_support", "urgency", "self_control", "other_control", "accept_conseq", "standards",
    "social_norms", "attention", "not_consider", "effort",
)

#: Named appraisal presets usable wherever a list of appraisals is asked for.
APPRAISAL_PRESETS: dict[str, tuple[str, ...]] = {"paper": PAPER_APPRAISALS, "all": ALL_APPRAISALS}

#: The first-word control task vocabulary (paper §5.5), case-sensitive.
FIRST_WORDS: tuple[str, ...] = (
    "I", "My", "my", "When", "when", "i", "A", "a", "The", "the", "someone", "Someone", "we",
)
