"""The playground's world: small synthetic scenes drawn with PIL. A scene is a 48x48 RGB image
on a 2x2 grid of 24 px cells: one cell holds a rendered digit (0-9), two or three others one
coloured shape each (3 colours x 3 shapes, each pair at most once, so "the red circle" names one
object). The playground's ViT uses 24 px patches: every cell is one patch (4 image positions).
The same seed draws the same scenes and renders byte-identical PNGs. Why the world is this small:
docs/playground_history.md.
"""

from __future__ import annotations

import dataclasses
import functools
import random

from PIL import Image, ImageDraw, ImageFont

IMAGE_SIZE = 48
GRID = 2
CELL_SIZE = IMAGE_SIZE // GRID
CELLS = ("top left", "top right", "bottom left", "bottom right")
CELL_WORDS = tuple(cell.replace(" ", "") for cell in CELLS)  # "topleft", ...: scene text only
COLORS = {"red": (220, 40, 40), "green": (30, 170, 60), "blue": (40, 80, 225)}  # RGB fills
SHAPES = ("circle", "square", "triangle")
DIGITS = tuple(range(10))  # every digit the world renders (the backbones learn all ten)
MIN_OBJECTS = 2
MAX_OBJECTS = GRID * GRID - 1
BACKGROUND = (255, 255, 255)
DIGIT_COLOR = (0, 0, 0)
_DIGIT_FONT_SIZE = 20
_SHAPE_HALF_SIZES = (7, 8, 9)  # half the side of a shape's bounding box, in pixels
_JITTER = 2  # max offset of a shape or digit from its cell's centre, in pixels


@dataclasses.dataclass(frozen=True)
class SceneObject:
    """One coloured shape in one grid cell (`cell` indexes `CELLS`)."""

    color: str
    shape: str
    cell: int

    @property
    def name(self) -> str:
        """`"red circle"`: unique within a scene."""
        return f"{self.color} {self.shape}"


@dataclasses.dataclass(frozen=True)
class Scene:
    """What an image shows: its shapes, its digit and where the digit is, plus the rendering
    jitter (offsets and sizes), so that the same `Scene` always renders the same pixels."""

    objects: tuple[SceneObject, ...]
    digit: int
    digit_cell: int
    jitter: tuple[tuple[int, int, int], ...]  # per object, then the digit: (dx, dy, half size)

    def __post_init__(self) -> None:
        cells = [o.cell for o in self.objects] + [self.digit_cell]
        if len(set(cells)) != len(cells):
            raise ValueError(f"scene has two things in one cell: {self}")
        names = [o.name for o in self.objects]
        if len(set(names)) != len(names):
            raise ValueError(f"scene has a repeated colour/shape pair: {names}")
        if len(self.jitter) != len(self.objects) + 1:
            raise ValueError(
                f"scene needs one jitter entry per object plus one for the digit, got {len(self.jitter)}"
            )

    @property
    def key(self) -> tuple:
        """The scene's content without rendering jitter: equal keys describe the same scene."""
        return (tuple(sorted((o.cell, o.color, o.shape) for o in self.objects)), self.digit, self.digit_cell)

    @property
    def distinct(self) -> bool:
        """Whether no two shapes share a colour or a shape, so that either word of "the red
        circle" alone picks it out (no conjunction to resolve)."""
        colors, shapes = {o.color for o in self.objects}, {o.shape for o in self.objects}
        return len(colors) == len(shapes) == len(self.objects)

    def count(self, color: str | None = None, shape: str | None = None) -> int:
        """Number of shapes matching `color` and/or `shape` (`None` matches any)."""
        return sum(color in (None, o.color) and shape in (None, o.shape) for o in self.objects)

    def cell_content(self, cell: int) -> str:
        if cell == self.digit_cell:
            return f"digit {self.digit}"
        for obj in self.objects:
            if obj.cell == cell:
                return obj.name
        return "empty"

    def describe(self) -> str:
        """The structured scene text the chat LM reads in place of an image: one word per cell,
        in reading order, binding the cell and what it holds as one patch binds them, e.g.
        `topleftredcircle. toprightdigit 7. bottomleftempty. bottomrightbluesquare.` (the digit
        stays a word of its own: digits are single tokens). `SCENE_WORDS` lists the words."""
        contents = [self.cell_content(cell) for cell in range(GRID * GRID)]
        words = [
            text if cell == self.digit_cell else text.replace(" ", "") for cell, text in enumerate(contents)
        ]
        return " ".join(f"{CELL_WORDS[cell]}{word}." for cell, word in enumerate(words))

    def caption(self) -> str:
        """A one-sentence caption (CLIP's text side)."""
        parts = [
            f"{'the' if cell == self.digit_cell else 'a'} {self.cell_content(cell)} at the {CELLS[cell]}"
            for cell in range(GRID * GRID)
            if self.cell_content(cell) != "empty"
        ]
        return "An image with " + ", ".join(parts[:-1]) + " and " + parts[-1] + "."


def _scene_words() -> dict[str, tuple[str, ...]]:
    words = {}
    contents = [(color, shape) for color in COLORS for shape in SHAPES] + [("digit",), ("empty",)]
    for cell, cell_word in zip(CELLS, CELL_WORDS, strict=True):
        for content in contents:
            words[cell_word + "".join(content)] = (*cell.split(), *content)
    return words


# Every one-word cell description `Scene.describe()` uses, and the words it stands for:
# {"topleftredcircle": ("top", "left", "red", "circle"), ..., "bottomrightempty": (...)}.
SCENE_WORDS: dict[str, tuple[str, ...]] = _scene_words()


def sample_scene(rng: random.Random, digits: tuple[int, ...] = DIGITS) -> Scene:
    """Draw one scene: a digit (one of `digits`) in one cell, 2-3 distinct shapes in other cells."""
    cells = list(range(GRID * GRID))
    rng.shuffle(cells)
    digit_cell, free = cells[0], cells[1:]
    n_objects = rng.randint(MIN_OBJECTS, MAX_OBJECTS)
    kinds = rng.sample([(c, s) for c in COLORS for s in SHAPES], n_objects)
    objects = tuple(
        SceneObject(color, shape, cell)
        for (color, shape), cell in zip(kinds, sorted(free[:n_objects]), strict=True)
    )
    jitter = tuple(
        (rng.randint(-_JITTER, _JITTER), rng.randint(-_JITTER, _JITTER), rng.choice(_SHAPE_HALF_SIZES))
        for _ in range(n_objects + 1)
    )
    return Scene(objects=objects, digit=rng.choice(digits), digit_cell=digit_cell, jitter=jitter)


def rearranged(scene: Scene, rng: random.Random) -> Scene:
    """The same shapes and digit (and rendering jitter) moved to other cells: a random
    permutation of the cells that moves at least one thing."""
    cells = list(range(GRID * GRID))
    occupied = {o.cell for o in scene.objects} | {scene.digit_cell}
    while True:
        moved = rng.sample(cells, len(cells))
        if any(moved[c] != c for c in occupied):
            break
    pairs = sorted(zip(scene.objects, scene.jitter[:-1], strict=True), key=lambda p: moved[p[0].cell])
    objects = tuple(dataclasses.replace(obj, cell=moved[obj.cell]) for obj, _ in pairs)
    jitter = tuple(j for _, j in pairs) + (scene.jitter[-1],)
    return Scene(objects=objects, digit=scene.digit, digit_cell=moved[scene.digit_cell], jitter=jitter)


def sample_scenes(
    rng: random.Random, n: int, exclude: set[tuple] | None = None, digits: tuple[int, ...] = DIGITS
) -> list[Scene]:
    """`n` scenes with a digit from `digits`; scenes whose `key` is in `exclude` (e.g. the
    evaluation scenes) are redrawn."""
    exclude = exclude or set()
    scenes: list[Scene] = []
    while len(scenes) < n:
        scene = sample_scene(rng, digits)
        if scene.key not in exclude:
            scenes.append(scene)
    return scenes


@functools.cache
def _digit_font() -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=_DIGIT_FONT_SIZE)


def _cell_centre(cell: int, dx: int, dy: int) -> tuple[int, int]:
    """The centre of `cell`, moved by `(dx, dy)` pixels."""
    return (cell % GRID) * CELL_SIZE + CELL_SIZE // 2 + dx, (cell // GRID) * CELL_SIZE + CELL_SIZE // 2 + dy


def render_scene(scene: Scene) -> Image.Image:
    """The scene as a 48x48 RGB image."""
    image = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), BACKGROUND)
    draw = ImageDraw.Draw(image)
    for obj, (dx, dy, half) in zip(scene.objects, scene.jitter, strict=False):
        cx, cy = _cell_centre(obj.cell, dx, dy)
        box = (cx - half, cy - half, cx + half, cy + half)
        fill = COLORS[obj.color]
        if obj.shape == "circle":
            draw.ellipse(box, fill=fill)
        elif obj.shape == "square":
            draw.rectangle(box, fill=fill)
        elif obj.shape == "triangle":
            draw.polygon([(cx, cy - half), (cx + half, cy + half), (cx - half, cy + half)], fill=fill)
        else:
            raise ValueError(f"unknown shape {obj.shape!r}; expected one of {SHAPES}")
    dx, dy, _ = scene.jitter[-1]
    draw.text(
        _cell_centre(scene.digit_cell, dx, dy),
        str(scene.digit),
        fill=DIGIT_COLOR,
        font=_digit_font(),
        anchor="mm",
    )
    return image
