"""A hand-made scene whose answers the playground's tests check by hand."""

from llava.playground.scenes import Scene, SceneObject

# top left: red circle, top right: digit 7, bottom left: blue circle, bottom right: red square
HAND_SCENE = Scene(
    objects=(
        SceneObject("red", "circle", 0),
        SceneObject("blue", "circle", 2),
        SceneObject("red", "square", 3),
    ),
    digit=7,
    digit_cell=1,
    jitter=((0, 0, 8),) * 4,
)
