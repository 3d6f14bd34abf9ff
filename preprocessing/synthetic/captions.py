"""Natural-language captions for MovingShapes scenes.

Captions vary verbs, direction phrases, speed adverbs and sentence structure, like real
captions do, while keeping one property the pipeline relies on: the direction of the target
object is stated with a plain direction word right after the verb (left/right/up/down, leftward,
"to the left", ...) and nothing else in the caption uses such words, so a rule-based extractor recovers
it ("A red disc slides to the left ..." -> "slide left"). The target object is always the
first moving object mentioned.
"""

from __future__ import annotations

import numpy as np

from preprocessing.synthetic.render import BACKGROUND_KINDS, SceneSpec, ShapeObject

MOTION_VERBS = ("slides", "moves", "drifts", "glides", "travels", "floats")
ROUND_ONLY_VERBS = ("rolls",)  # only for shapes that can roll
ROUND_SHAPES = ("disc", "ring")
# Plain direction words right after the verb; no "towards the top" or negations ("does not
# move"): rule-based extractors (ours included) read those as a different direction or as motion.
DIRECTION_PHRASES: dict[str, tuple[str, ...]] = {
    "left": ("to the left", "left", "leftward", "leftwards"),
    "right": ("to the right", "right", "rightward", "rightwards"),
    "up": ("up", "upward", "upwards"),
    "down": ("down", "downward", "downwards"),
}
# Caption nouns for shapes whose name is also a motion verb ("a cross" vs "cross the road").
SHAPE_NOUNS = {"plus": "plus sign"}
SLOW_ADVERBS = ("slowly", "gently", "lazily")
FAST_ADVERBS = ("quickly", "rapidly", "swiftly")
MEDIUM_ADVERBS = ("", "", "steadily")
SLOW_BELOW, FAST_ABOVE = 1.2, 2.2  # px per native frame

STILL_SINGULAR = ("stays still", "stays put", "sits motionless", "remains still", "stays in place")
STILL_PLURAL = ("stay still", "stay put", "sit motionless", "remain still", "stay in place")
STATIC_SCENE_VERBS = ("sits", "rests", "lies")
STATIC_SCENE_VERBS_PLURAL = ("sit", "rest", "lie")


def _pick(rng: np.random.Generator, options: tuple[str, ...] | list[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def noun_phrase(obj: ShapeObject) -> str:
    words = f"{obj.color_name} {SHAPE_NOUNS.get(obj.shape, obj.shape)}"
    return f"{_article(words)} {words}"


def _join(phrases: list[str]) -> str:
    if len(phrases) <= 1:
        return "".join(phrases)
    return ", ".join(phrases[:-1]) + " and " + phrases[-1]


def speed_adverb(speed: float, rng: np.random.Generator) -> str:
    if speed < SLOW_BELOW:
        return _pick(rng, SLOW_ADVERBS)
    if speed > FAST_ABOVE:
        return _pick(rng, FAST_ADVERBS)
    return _pick(rng, MEDIUM_ADVERBS)


def motion_clause(obj: ShapeObject, rng: np.random.Generator) -> str:
    """"a red disc slowly slides to the left" (verb, adverb position and phrase vary)."""
    verbs = MOTION_VERBS + (ROUND_ONLY_VERBS if obj.shape in ROUND_SHAPES else ())
    verb = _pick(rng, verbs)
    direction = _pick(rng, DIRECTION_PHRASES[obj.direction])
    adverb = speed_adverb(obj.speed, rng)
    if not adverb:
        return f"{noun_phrase(obj)} {verb} {direction}"
    if rng.random() < 0.5:
        return f"{noun_phrase(obj)} {adverb} {verb} {direction}"
    return f"{noun_phrase(obj)} {verb} {direction} {adverb}"


def background_phrase(spec: SceneSpec, rng: np.random.Generator) -> str:
    adjective = BACKGROUND_KINDS[spec.background.kind]
    noun = _pick(rng, ("background", "background", "backdrop"))
    preposition = _pick(rng, ("across", "over", "on", "in front of"))
    return f"{preposition} {_article(adjective)} {adjective} {spec.background.color_name} {noun}"


def _still_clause(static: list[ShapeObject], rng: np.random.Generator) -> str:
    if not static:
        return ""
    subjects = _join([noun_phrase(o) for o in static])
    still = _pick(rng, STILL_PLURAL if len(static) > 1 else STILL_SINGULAR)
    return f"{_pick(rng, ('while', 'as', 'whereas'))} {subjects} {still}"


def describe_scene(spec: SceneSpec, rng: np.random.Generator) -> str:
    """A caption for `spec`; the target object is the first moving object mentioned."""
    moving = [o for o in spec.objects if o.moving]
    if spec.target is not None and spec.objects[spec.target].moving:
        moving.remove(spec.objects[spec.target])
        moving.insert(0, spec.objects[spec.target])
    static = [o for o in spec.objects if not o.moving]
    if not moving:
        return _static_caption(spec, static, rng)
    motion = " and ".join(motion_clause(o, rng) for o in moving)
    background = background_phrase(spec, rng)
    still = _still_clause(static, rng)
    template = int(rng.integers(4))
    if template == 0 or not still:
        sentence = f"{motion} {background}" + (f" {still}" if still else "")
    elif template == 1:
        adjective = BACKGROUND_KINDS[spec.background.kind]
        sentence = f"on {_article(adjective)} {adjective} {spec.background.color_name} background, {motion}, {still}"
    elif template == 2:
        subjects = _join([noun_phrase(o) for o in static])
        verb = _pick(rng, STILL_PLURAL if len(static) > 1 else STILL_SINGULAR)
        sentence = f"{subjects} {verb} while {motion} {background}"
    else:
        sentence = f"in this clip, {motion} {background}, {still}"
    return sentence[0].upper() + sentence[1:] + "."


def _static_caption(spec: SceneSpec, static: list[ShapeObject], rng: np.random.Generator) -> str:
    adjective = BACKGROUND_KINDS[spec.background.kind]
    background = f"{_article(adjective)} {adjective} {spec.background.color_name} background"
    subjects = _join([noun_phrase(o) for o in static])
    verb = _pick(rng, STATIC_SCENE_VERBS_PLURAL if len(static) > 1 else STATIC_SCENE_VERBS)
    if rng.random() < 0.5:
        sentence = f"{subjects} {verb} on {background}"
    else:
        sentence = f"a still picture of {subjects} on {background}"
    return sentence[0].upper() + sentence[1:] + "."


def motion_prompt(direction: str | None) -> str:
    """The canonical short motion prompt for a direction ("move left"); "" for no motion."""
    return f"move {direction}" if direction else ""
