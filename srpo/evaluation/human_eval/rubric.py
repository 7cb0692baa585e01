"""The paper's human-evaluation rubric: four dimensions, four levels, and the overall rule."""

from __future__ import annotations

from typing import Mapping

#: Ratings, best first. Index = ordinal value used for agreement (0 = Excellent).
LEVELS = ("Excellent", "Good", "Pass", "Failed")
#: (key, label) of the four rated dimensions, in the order they are shown.
DIMENSIONS = (
    ("alignment", "Text-image alignment"),
    ("realism", "Realism & AI artifacts"),
    ("detail", "Detail complexity"),
    ("aesthetics", "Aesthetic quality"),
)
DIMENSION_KEYS = tuple(k for k, _ in DIMENSIONS)
OVERALL = "overall"


def overall_rating(ratings: Mapping[str, str]) -> str:
    """The overall level from the four dimensions (the paper's human-evaluation rubric), in this order:

    Excellent when all four are Excellent; else Good when at least half (two or more) are
    Excellent; else Pass when none is Failed; else Failed. (So two Excellent and one Failed is
    Good: the rules are tried in order, as the rubric lists them.)
    """
    missing = [k for k in DIMENSION_KEYS if k not in ratings]
    if missing:
        raise ValueError(f"cannot derive the overall rating: missing dimension(s) {missing}")
    values = [ratings[k] for k in DIMENSION_KEYS]
    bad = [v for v in values if v not in LEVELS]
    if bad:
        raise ValueError(f"unknown rating(s) {bad}: use one of {', '.join(LEVELS)}")
    excellent = sum(v == "Excellent" for v in values)
    if excellent == len(values):
        return "Excellent"
    if 2 * excellent >= len(values):
        return "Good"
    if "Failed" not in values:
        return "Pass"
    return "Failed"


#: The rubric shown beside the images (the paper's supplementary table, condensed).
RUBRIC: dict[str, dict[str, object]] = {
    "alignment": {
        "question": "Does the image show what the prompt asks for?",
        "levels": {
            "Excellent": "Over 90% of the prompt's elements match and the style is fully consistent; any "
                         "requested text is fully generated and naturally embedded.",
            "Good": "70-90% of the elements match; minor errors in text are allowed.",
            "Pass": "50-70% of the elements match; most key elements are present, or the image looks like "
                    "the prompt at first glance.",
            "Failed": "Less than half of the elements match, or a key element is missing.",
        },
    },
    "realism": {
        "question": "Does the image look real and free of AI artifacts, compared with the other images?",
        "points": ["deformed bodies, hands or objects", "wrong text (if the image contains text)",
                   "oily surfaces or over-saturated colours", "abnormal highlights on edges or unnatural "
                   "transitions to the background", "overly simple or uniform textures"],
        "scoring": "Start at Excellent; go down one level for each problem that this image has and the others don't.",
    },
    "detail": {
        "question": "Is the main subject clear and detailed, with rich textures, compared with the other images?",
        "points": ["obvious blur", "main subject not clearly presented", "watermarks or garbled text",
                   "texture complexity (e.g. are individual leaves distinguishable?)",
                   "prominent light and shadow, identifiable light source"],
        "scoring": "Start at Excellent; go down one level for each problem that this image has and the others don't.",
    },
    "aesthetics": {
        "question": "How appealing is the image (composition, lighting, colour)? Ignore the prompt.",
        "levels": {
            "Excellent": "Strong atmosphere, highly appealing: you would save it as a wallpaper or share it.",
            "Good": "Stands out in at least one of composition, lighting or colour; comfortable to look at.",
            "Pass": "No obvious flaws, but its appeal is ordinary.",
            "Failed": "Unattractive or even unpleasant to look at.",
        },
    },
    "overall": {
        "question": "Derived from the four ratings, not rated separately.",
        "levels": {
            "Excellent": "All four dimensions are Excellent.",
            "Good": "At least half of the dimensions are Excellent.",
            "Pass": "No dimension is Failed.",
            "Failed": "Any dimension is Failed.",
        },
    },
}

HACKING_QUESTION = ("Do any of these three images show reward-hacking artifacts such as over-saturation, "
                    "over-smoothing or a lack of detail? Mark the worst one.")
STYLE_QUESTION = ("Which image follows the style named in the prompt better? If both follow it equally well, "
                  "pick the one with the better overall aesthetics.")
