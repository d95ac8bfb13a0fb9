"""The scene generator: determinism, validation and rendering."""

import io
import random

import numpy as np
import pytest

from llava.playground.scenes import (
    CELL_SIZE,
    COLORS,
    GRID,
    IMAGE_SIZE,
    SCENE_WORDS,
    Scene,
    SceneObject,
    rearranged,
    render_scene,
    sample_scene,
    sample_scenes,
)
from tests.playground.scene_helpers import HAND_SCENE


def _png(scene: Scene) -> bytes:
    buffer = io.BytesIO()
    render_scene(scene).save(buffer, format="PNG")
    return buffer.getvalue()


def test_same_seed_same_scenes_and_pixels():
    a = [sample_scene(random.Random(3)) for _ in range(1)] + sample_scenes(random.Random(4), 20)
    b = [sample_scene(random.Random(3)) for _ in range(1)] + sample_scenes(random.Random(4), 20)
    assert a == b
    assert [_png(s) for s in a] == [_png(s) for s in b]


def test_different_seeds_differ():
    assert sample_scenes(random.Random(0), 20) != sample_scenes(random.Random(1), 20)


def test_scene_invariants_hold_over_many_draws():
    for scene in sample_scenes(random.Random(0), 500):
        cells = [o.cell for o in scene.objects] + [scene.digit_cell]
        assert len(set(cells)) == len(cells)
        assert 2 <= len(scene.objects) <= 3
        assert len({o.name for o in scene.objects}) == len(scene.objects)


def test_exclude_redraws_listed_scenes():
    excluded = {s.key for s in sample_scenes(random.Random(0), 50)}
    assert not excluded & {s.key for s in sample_scenes(random.Random(0), 200, exclude=excluded)}


def test_invalid_scenes_are_rejected():
    with pytest.raises(ValueError, match="two things in one cell"):
        Scene((SceneObject("red", "circle", 1),), digit=3, digit_cell=1, jitter=((0, 0, 8),) * 2)
    with pytest.raises(ValueError, match="repeated colour/shape"):
        Scene(
            (SceneObject("red", "circle", 0), SceneObject("red", "circle", 2)),
            digit=3,
            digit_cell=1,
            jitter=((0, 0, 8),) * 3,
        )


def test_descriptions_of_a_hand_made_scene():
    scene = HAND_SCENE
    assert (
        scene.describe() == "topleftredcircle. toprightdigit 7. bottomleftbluecircle. bottomrightredsquare."
    )
    assert SCENE_WORDS["bottomleftbluecircle"] == ("bottom", "left", "blue", "circle")
    assert SCENE_WORDS["toprightdigit"] == ("top", "right", "digit")
    assert scene.caption() == (
        "An image with a red circle at the top left, the digit 7 at the top right, "
        "a blue circle at the bottom left and a red square at the bottom right."
    )
    assert scene.count(color="red") == 2 and scene.count(shape="circle") == 2 and scene.count() == 3


def test_distinct_scenes_name_every_shape_by_one_word():
    assert not HAND_SCENE.distinct  # two red shapes, two circles
    blue_square = SceneObject("blue", "square", 2)
    assert Scene((SceneObject("red", "circle", 0), blue_square), 7, 1, ((0, 0, 8),) * 3).distinct
    assert not Scene(
        (SceneObject("red", "circle", 0), SceneObject("blue", "circle", 2)), 7, 1, ((0, 0, 8),) * 3
    ).distinct


def test_rendering_puts_each_colour_in_its_cell():
    image = np.asarray(render_scene(HAND_SCENE))
    assert image.shape == (IMAGE_SIZE, IMAGE_SIZE, 3)
    centre = CELL_SIZE // 2
    assert tuple(image[centre, centre]) == COLORS["red"]  # top left
    assert tuple(image[CELL_SIZE + centre, centre]) == COLORS["blue"]  # bottom left
    assert tuple(image[CELL_SIZE + centre, CELL_SIZE + centre]) == COLORS["red"]  # bottom right
    digit_cell = image[:CELL_SIZE, CELL_SIZE:]
    assert (digit_cell.sum(axis=-1) < 100).any()  # dark digit strokes in the top right


def _cell_pixels(scene: Scene) -> list[np.ndarray]:
    """The rendered pixels of each cell, in reading order."""
    image = np.asarray(render_scene(scene))
    return [
        image[row * CELL_SIZE : (row + 1) * CELL_SIZE, column * CELL_SIZE : (column + 1) * CELL_SIZE]
        for row, column in (divmod(cell, GRID) for cell in range(GRID * GRID))
    ]


def test_rearranged_scenes_move_the_same_things_to_other_cells():
    rng = random.Random(0)
    for scene in sample_scenes(random.Random(1), 200):
        moved = rearranged(scene, rng)
        assert moved.key != scene.key and moved.digit == scene.digit
        assert sorted(o.name for o in moved.objects) == sorted(o.name for o in scene.objects)
        assert [o.cell for o in moved.objects] == sorted(o.cell for o in moved.objects)
    scene = HAND_SCENE
    moved = rearranged(scene, random.Random(3))
    moved_cells = {o.name: o.cell for o in moved.objects}
    pairs = [(o.cell, moved_cells[o.name]) for o in scene.objects]
    pixels, moved_pixels = _cell_pixels(scene), _cell_pixels(moved)
    for before, after in [*pairs, (scene.digit_cell, moved.digit_cell)]:  # pixels travel with the thing
        np.testing.assert_array_equal(pixels[before], moved_pixels[after])
