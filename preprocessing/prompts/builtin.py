"""Deterministic, offline caption -> short motion prompt ("slide left", "smile", "sway").

Rules, not a model: find the first motion verb in the caption (any inflection: slides, sliding,
slid), return its lemma plus a direction or particle that follows it ("to the left" -> left,
"up", "around"). Returns None when the caption names no motion ("a still photo of a vase").
Handwritten because a tagger/lemmatiser (spaCy, NLTK) would need model downloads at run time and
is not deterministic across versions; the lexicon below covers the motion verbs common in WebVid
captions and MovingShapes.
"""

from __future__ import annotations

import re
from functools import lru_cache

# Motion verbs (lemmas). Static verbs (stand, sit, lie, hold) are separate: they count only with
# a particle ("stands up", "sits down").
MOTION_VERBS = """
walk run jog sprint move slide roll fly swim jump hop leap dance spin rotate turn twist sway wave
shake nod blink smile laugh talk speak sing eat drink chew cry wink breathe clap drive ride cycle
bike ski skate skateboard surf climb crawl fall drop rise float drift flow pour splash drip burn
flicker flutter flap blow bounce swing rock tilt pan zoom push pull throw catch kick punch play
type write draw paint cut chop stir cook wash brush comb touch hug kiss shrug stretch bend kneel
crouch lean raise lift lower open close pick graze gallop trot wag peck march stroll wander hurry
rush race chase cross approach enter exit circle orbit spread grow melt bloom sparkle glitter
twinkle shimmer ripple crash collapse explode erupt dive paddle row sail glide soar hover land
bob wiggle wobble tremble shiver vibrate pulse beat flash stream rain snow pace swirl whirl spiral
tumble toss juggle dribble pedal steer tap knock scratch rub lick sniff bark yawn sneeze cough
frown gesture point applaud cheer fight box wrestle exercise squat fold unfold wipe sweep mop knit
sew dig plant drill shoot hunt fish feed bite scroll flip slice knead whisk fry boil bubble steam
smoke pass overtake accelerate travel commute navigate descend ascend advance retreat emerge sink
shuffle skip stumble slip limp tiptoe sneak swagger strut waddle scurry dash bolt flee escape
approach follow lead carry drag haul lift wheel spray sprinkle shower bathe groom pet stroke
caress rotate revolve oscillate pulsate throb flood surge crawl slither wriggle writhe squirm
hatch peel grate mix blend shake nibble munch gulp sip puff inhale exhale whistle shout scream
yell wave flick snap clench grip grasp reach wave shovel rake mow chop saw_ hammer_ skydive
paraglide parachute hike trek jog kayak canoe row sled snowboard
"""
STATIC_VERBS = {"stand", "sit", "lie", "lay", "pose", "hold", "look", "stare", "gaze", "wait", "rest", "sleep"}

# Words that look like verb forms but are mostly nouns in captions ("leaves", "falls" is fine).
NOT_VERBS = {"leaves", "saw", "ring", "spring", "building", "ceiling", "painting", "clothing",
             "evening", "morning", "wing", "king", "thing", "bedding", "wedding", "pudding",
             "boxes", "box", "landing", "plants", "plant", "points", "rows", "row", "fish",
             "snow", "rain", "stream", "streams", "steam", "smoke", "beat", "drill", "flash",
             "type", "land", "lands", "shot", "shots", "bit", "pan", "close", "open", "point", "feed", "fight",
             "play", "race", "circle", "walk", "dance", "swing", "lead"}
# ... unless directly after a subject-ish word; see _is_verb_context.
IRREGULAR = {
    "ran": "run", "swam": "swim", "swum": "swim", "flew": "fly", "flown": "fly", "fell": "fall",
    "fallen": "fall", "rose": "rise", "risen": "rise", "spun": "spin", "blew": "blow",
    "blown": "blow", "shook": "shake", "shaken": "shake", "sat": "sit", "stood": "stand",
    "drove": "drive", "driven": "drive", "rode": "ride", "ridden": "ride", "threw": "throw",
    "thrown": "throw", "ate": "eat", "eaten": "eat", "drank": "drink", "sang": "sing",
    "sung": "sing", "swung": "swing", "slid": "slide", "caught": "catch", "dove": "dive",
    "dug": "dig", "lit": "light", "leapt": "leap", "lay": "lie", "lain": "lie", "wrote": "write",
    "drew": "draw", "drawn": "draw", "grew": "grow", "grown": "grow", "sank": "sink",
    "fled": "flee", "bit": "bite", "bitten": "bite", "shot": "shoot",
    "spoke": "speak", "spoken": "speak", "wove": "weave", "strode": "stride",
}
DOUBLING = {"run", "swim", "jog", "hop", "spin", "nod", "skip", "wag", "stir", "drip", "flap",
            "slip", "grab", "hug", "chop", "drop", "stop", "step", "shrug", "clap", "tap", "pat",
            "dig", "rub", "sit", "get", "hit", "cut", "shut", "drum", "trim", "bob", "zip", "dip",
            "grin", "pan", "plan", "snap", "flip", "grip", "sip", "wrap", "scrub", "jam", "beg",
            "pet", "sob", "rap", "bat", "fan", "skim", "knit", "spit", "swap", "trot", "plod",
            "strut", "flick"}
_NO_DOUBLE = {"flick"}

DIRECTIONS = {
    "left": "left", "leftward": "left", "leftwards": "left",
    "right": "right", "rightward": "right", "rightwards": "right",
    "up": "up", "upward": "up", "upwards": "up", "uphill": "up", "upstairs": "up",
    "down": "down", "downward": "down", "downwards": "down", "downhill": "down", "downstairs": "down",
    "forward": "forward", "forwards": "forward", "ahead": "forward",
    "backward": "backward", "backwards": "backward", "back": "back",
    "away": "away", "toward": "toward", "towards": "toward", "around": "around", "round": "around",
    "across": "across", "sideways": "sideways", "clockwise": "clockwise",
    "counterclockwise": "counterclockwise", "anticlockwise": "counterclockwise",
}
# Words that end the search for a direction (a new clause or object starts).
_CLAUSE_BREAK = {"and", "while", "as", "but", "then", "with", "when", "where", "which", "who", ","}
_DIRECTION_WINDOW = 5
_TOKEN = re.compile(r"[a-z]+|,")


def _inflections(lemma: str) -> set[str]:
    forms = {lemma}
    if lemma.endswith(("s", "sh", "ch", "x", "z", "o")):
        forms.add(lemma + "es")
    elif lemma.endswith("y") and lemma[-2:-1] not in "aeiou":
        forms.add(lemma[:-1] + "ies")
    else:
        forms.add(lemma + "s")
    if lemma in DOUBLING and lemma not in _NO_DOUBLE:
        stem = lemma + lemma[-1]
    elif lemma.endswith("ie"):
        stem = lemma[:-2] + "y"
    elif lemma.endswith("e") and not lemma.endswith(("ee", "ye", "oe")):
        stem = lemma[:-1]
    else:
        stem = lemma
    forms.add(stem + "ing")
    if lemma.endswith("e"):
        forms.add(lemma + "d")
    elif lemma.endswith("y") and lemma[-2:-1] not in "aeiou":
        forms.add(lemma[:-1] + "ied")
    else:
        forms.add((stem if lemma in DOUBLING else lemma) + "ed")
    return forms


@lru_cache(maxsize=1)
def _lexicon() -> dict[str, tuple[str, bool]]:
    """word form -> (lemma, is_static)."""
    table: dict[str, tuple[str, bool]] = {}
    for lemma in MOTION_VERBS.split():
        if lemma.endswith("_"):
            continue
        for form in _inflections(lemma):
            table.setdefault(form, (lemma, False))
    for lemma in STATIC_VERBS:
        for form in _inflections(lemma):
            table.setdefault(form, (lemma, True))
    for form, lemma in IRREGULAR.items():
        table.setdefault(form, (lemma, lemma in STATIC_VERBS))
    return table


_SUBJECT_HINTS = {"is", "are", "was", "were", "be", "being", "it", "they", "he", "she", "and", "to"}
_DETERMINERS = {"a", "an", "the", "some", "two", "three", "several", "many", "of", "his", "her", "their", "its"}


def _is_verb_context(tokens: list[str], i: int) -> bool:
    """Ambiguous noun/verb forms ("walk", "play") count as verbs unless a determiner precedes."""
    word = tokens[i]
    if word not in NOT_VERBS:
        return True
    if word.endswith("ing") or word.endswith("ed"):
        return i > 0 and tokens[i - 1] not in _DETERMINERS
    return i > 0 and tokens[i - 1] not in _DETERMINERS and tokens[i - 1] in _SUBJECT_HINTS | {"s"}


def _direction_after(tokens: list[str], i: int) -> str | None:
    for word in tokens[i + 1 : i + 1 + _DIRECTION_WINDOW]:
        if word in _CLAUSE_BREAK:
            return None
        if word in DIRECTIONS:
            return DIRECTIONS[word]
    return None


def extract_motion(caption: str) -> str | None:
    """Short motion prompt for `caption`, or None when it names no motion."""
    tokens = _TOKEN.findall(caption.lower())
    lexicon = _lexicon()
    for i, word in enumerate(tokens):
        entry = lexicon.get(word)
        if entry is None or (word in NOT_VERBS and not _is_verb_context(tokens, i)):
            continue
        lemma, static = entry
        direction = _direction_after(tokens, i)
        if static:
            nxt = tokens[i + 1] if i + 1 < len(tokens) else ""
            if nxt in ("up", "down", "around"):
                return f"{lemma} {nxt}"
            continue
        return f"{lemma} {direction}" if direction else lemma
    return None
