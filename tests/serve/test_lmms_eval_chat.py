"""lmms-eval's chat type (`--model inverse_llava`, the default) on local tasks with their own
`doc_to_messages`: images given as PIL images and as file paths, several images or none in a
message, and the task's generation settings (`max_new_tokens`, `temperature: 0`, `until`).

Answers are compared exactly: with `llava.eval.model_vqa_loader`'s for one-image questions, and
with the engine's answers to the same conversation built by hand (LLaVA's layout, `run_llava`'s
path) where a question holds several images or none, which the runner's question file cannot."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from llava.inference import DecodingSettings, LoadedModel, open_conversation, with_image_tokens

pytest.importorskip("lmms_eval", reason="needs lmms-eval, installed as .ci/run does")

from lmms_eval.api.instance import Instance  # noqa: E402 (after the skip)

from llava.serve.lmms_eval_model import InverseLlavaChat  # noqa: E402
from tests.serve.lmms_eval_helpers import loader_answers, logged_samples, run_lmms_eval, sample_answers

MAX_NEW_TOKENS = 10
VQA = [
    "What colour is the picture?",
    "Is there a white square?",
    "Describe the image.",
    "What shape is shown?",
]
# (question, indices of its images): two images, none, one, three
MIXED = [
    ("Which picture is brighter?", [0, 1]),
    ("Describe a red circle.", []),
    ("What colour is the picture?", [2]),
    ("How many pictures are there?", [3, 0, 2]),
]
MIXED_NEW_TOKENS = 8

TASK_YAML = """\
task: {task}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: generate_until
doc_to_messages: !function inverse_llava_chat_utils.{task}_messages
doc_to_text: !function inverse_llava_chat_utils.doc_to_text
doc_to_target: answer
generation_kwargs: {generation}
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
metadata:
  version: 0.0
"""

# Images as lmms-eval tasks give them: PIL images, or file paths (every other VQA question).
TASK_UTILS = '''\
"""Hooks of the local chat tasks: a question's messages, and its text (for lmms-eval's logs)."""

from PIL import Image


def _pil(path):
    with Image.open(path) as image:
        return image.convert("RGB")


def inverse_llava_chat_vqa_messages(doc):
    image = _pil(doc["image"]) if doc["question_id"] % 2 == 0 else doc["image"]
    content = [{"type": "image", "url": image}, {"type": "text", "text": doc["text"]}]
    return [{"role": "user", "content": content}]


def inverse_llava_chat_mixed_messages(doc):
    content = [{"type": "image", "url": _pil(path)} for path in doc["images"]]
    return [{"role": "user", "content": content + [{"type": "text", "text": doc["text"]}]}]


def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    return doc["text"]
'''


@pytest.fixture(scope="module")
def engine(tiny_model_path) -> LoadedModel:
    return LoadedModel.load(tiny_model_path, device="cpu")


def _image_paths(image_folder: Path, indices: list[int]) -> list[str]:
    return [str(image_folder / f"img{i}.png") for i in indices]


def engine_answers(engine: LoadedModel, image_folder: Path, settings: DecodingSettings) -> list[str]:
    """The MIXED questions answered by the engine, their conversations built as `run_llava` builds them."""
    answers = []
    for text, indices in MIXED:
        images = [Image.open(path).convert("RGB") for path in _image_paths(image_folder, indices)]
        conv = open_conversation("vicuna_v1", with_image_tokens(text, len(images)))
        answers += engine.generate([engine.prompt_ids(conv)], [engine.encode_images(images)], settings)
    return answers


@pytest.fixture(scope="module")
def mixed_expected(engine, image_folder) -> tuple[str, list[str]]:
    """`(stop string, expected answers)`: the stop string is a piece of an unstopped answer, so
    that `until` cuts it."""
    unstopped = engine_answers(engine, image_folder, DecodingSettings(max_new_tokens=MIXED_NEW_TOKENS))
    longest = max(unstopped, key=len)
    assert len(longest) >= 4, unstopped
    stop = longest[2:4]
    stopped = engine_answers(
        engine, image_folder, DecodingSettings(max_new_tokens=MIXED_NEW_TOKENS, stop=(stop,))
    )
    assert stopped != unstopped  # `until` changes some answer
    return stop, stopped


@pytest.fixture(scope="module")
def chat_tasks(image_folder, mixed_expected, tmp_path_factory) -> tuple[Path, Path]:
    """`(VQA question file in LLaVA's format, task folder)`."""
    root = tmp_path_factory.mktemp("lmms-chat")
    questions = root / "questions.jsonl"
    with questions.open("w", encoding="utf-8") as f:
        for i, text in enumerate(VQA):
            f.write(
                json.dumps(
                    {
                        "question_id": i,
                        "image": _image_paths(image_folder, [i])[0],
                        "text": text,
                        "answer": "red",
                    }
                )
                + "\n"
            )
    mixed = root / "mixed.jsonl"
    with mixed.open("w", encoding="utf-8") as f:
        for i, (text, indices) in enumerate(MIXED):
            record = {"id": i, "images": _image_paths(image_folder, indices), "text": text, "answer": "red"}
            f.write(json.dumps(record) + "\n")
    stop, _ = mixed_expected
    tasks = root / "tasks"
    tasks.mkdir()
    generations = {
        "inverse_llava_chat_vqa": (
            questions,
            {"max_new_tokens": MAX_NEW_TOKENS, "temperature": 0, "do_sample": False},
        ),
        "inverse_llava_chat_mixed": (
            mixed,
            {"max_new_tokens": MIXED_NEW_TOKENS, "temperature": 0, "until": [stop]},
        ),
    }
    for task, (data, generation) in generations.items():
        yaml = TASK_YAML.format(task=task, data=data, generation=json.dumps(generation))
        (tasks / f"{task}.yaml").write_text(yaml, encoding="utf-8")
    (tasks / "inverse_llava_chat_utils.py").write_text(TASK_UTILS, encoding="utf-8")
    return questions, tasks


@pytest.fixture(scope="module")
def runner_answers(tiny_model_path, chat_tasks, tmp_path_factory) -> list[str]:
    questions, _ = chat_tasks
    return loader_answers(tiny_model_path, questions, tmp_path_factory.mktemp("runner"), MAX_NEW_TOKENS)


@pytest.mark.slow
def test_lmms_eval_chat_tasks_answer_as_the_runner_and_the_engine(
    tiny_model_path, chat_tasks, runner_answers, mixed_expected, tmp_path
):
    _, tasks = chat_tasks
    out = run_lmms_eval(tiny_model_path, tasks, "inverse_llava_chat_vqa,inverse_llava_chat_mixed", tmp_path)
    assert sample_answers(logged_samples(out, "inverse_llava_chat_vqa")) == runner_answers
    _, expected = mixed_expected
    assert sample_answers(logged_samples(out, "inverse_llava_chat_mixed")) == expected


def _request(model: InverseLlavaChat, messages: list, gen_kwargs: dict | None = None) -> Instance:
    """lmms-eval's request for a one-doc task whose `doc_to_messages` returns `messages`."""
    model.task_dict = {"local": {"test": [{"id": 0}]}}
    arguments = ("", lambda doc: messages, gen_kwargs or {"max_new_tokens": 4}, 0, "local", "test")
    return Instance("generate_until", arguments, idx=0, metadata={"task": "local", "doc_id": 0, "repeats": 1})


@pytest.fixture(scope="module")
def chat_model(tiny_model_path) -> InverseLlavaChat:
    return InverseLlavaChat(pretrained=tiny_model_path, device="cpu")


def test_chat_image_paths_relative_to_the_working_directory(chat_model, image_folder, monkeypatch):
    monkeypatch.chdir(image_folder)
    by_path = [{"type": "image", "url": "img1.png"}, {"type": "text", "text": "What is it?"}]
    by_pil = [
        {"type": "image", "url": Image.open("img1.png").convert("RGB")},
        {"type": "text", "text": "What is it?"},
    ]
    answers = chat_model.generate_until(
        [_request(chat_model, [{"role": "user", "content": content}]) for content in (by_path, by_pil)]
    )
    assert answers[0] == answers[1]


@pytest.mark.parametrize(
    ("content", "error"),
    [
        ([{"type": "video", "url": "clip.mp4"}, {"type": "text", "text": "?"}], "holds video or audio"),
        (
            [{"type": "image", "url": "https://example.com/a.png"}, {"type": "text", "text": "?"}],
            "remote images",
        ),
        (
            [{"type": "image", "url": "/nowhere/missing.png"}, {"type": "text", "text": "?"}],
            "no such image file",
        ),
        (
            [{"type": "text", "text": "<image> and <image>?"}, {"type": "image", "url": "x.png"}],
            "placeholder",
        ),
    ],
)
def test_chat_refusals_name_the_task_and_doc(chat_model, content, error):
    with pytest.raises(ValueError, match=error) as caught:
        chat_model.generate_until([_request(chat_model, [{"role": "user", "content": content}])])
    assert "task local doc 0" in str(caught.value)


def test_chat_refuses_messages_outside_lmms_evals_protocol(chat_model):
    with pytest.raises(ValueError, match="task local doc 0: doc_to_messages returned messages"):
        chat_model.generate_until([_request(chat_model, [{"role": "user", "content": "a bare string"}])])
