"""LLaVA-1.5's Python API, called as its README quick start and its eval scripts call it
(https://github.com/haotian-liu/LLaVA: README.md, llava/eval/run_llava.py, llava/eval/model_vqa.py),
with `device="cpu"` / `.to("cpu")` where LLaVA has `.cuda()`."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from PIL import Image
from transformers import AutoTokenizer

from llava.constants import IMAGE_TOKEN_INDEX
from llava.conversation import SeparatorStyle, conv_templates
from llava.eval import run_llava
from llava.eval.run_llava import eval_model
from llava.mm_utils import (
    KeywordsStoppingCriteria,
    get_model_name_from_path,
    process_images,
    tokenizer_image_token,
)
from llava.model.builder import build_from_backbones, load_pretrained_model
from llava.model.vision_tower import load_image_processor

QUERY = "What is in the image?"


@pytest.fixture(scope="module")
def baseline_path(tiny_checkpoints, tmp_path_factory) -> str:
    """A complete `llava_llama` checkpoint (weights, tokenizer, image processor) named `llava-v1.5-tiny`."""
    llm, vision = tiny_checkpoints
    torch.manual_seed(0)
    model, _ = build_from_backbones("llava_llama", llm, vision)
    path = tmp_path_factory.mktemp("llava") / "llava-v1.5-tiny"
    model.save_pretrained(path)
    AutoTokenizer.from_pretrained(llm).save_pretrained(path)
    load_image_processor(vision).save_pretrained(path)
    return str(path)


@pytest.fixture(params=["llava_llama", "fusion_llama"])
def model_path(request, baseline_path, tiny_model_path) -> str:
    return baseline_path if request.param == "llava_llama" else tiny_model_path


def _load(model_path: str):
    return load_pretrained_model(
        model_path=model_path, model_base=None, model_name=get_model_name_from_path(model_path), device="cpu"
    )


def _open_prompt(conv_mode: str, query: str):
    conv = conv_templates[conv_mode].copy()
    conv.append_message(conv.roles[0], query)
    conv.append_message(conv.roles[1], None)
    return conv, conv.get_prompt()


def test_readme_quick_start_eval_model(baseline_path, image_folder, capsys):
    """The README's `args` object (plus `device`), whose missing fields (`dtype`) take the CLI's
    defaults: the answer is printed and returned, and is the CLI's greedy answer."""
    image_file = str(image_folder / "img0.png")
    args = type(
        "Args",
        (),
        {
            "model_path": baseline_path,
            "model_base": None,
            "model_name": get_model_name_from_path(baseline_path),
            "query": QUERY,
            "conv_mode": None,
            "image_file": image_file,
            "sep": ",",
            "temperature": 0,
            "top_p": None,
            "num_beams": 1,
            "max_new_tokens": 6,
            "device": "cpu",
        },
    )()
    answer = eval_model(args)
    assert answer and capsys.readouterr().out == answer + "\n"
    cli = ["--model-path", baseline_path, "--image-file", image_file, "--query", QUERY, "--device", "cpu"]
    assert run_llava.main([*cli, "--temperature", "0", "--max_new_tokens", "6"]) == answer
    assert capsys.readouterr().out == answer + "\n"  # the CLI prints it once too


def test_eval_model_names_the_missing_fields(baseline_path):
    args = type("Args", (), {"model_path": baseline_path, "image_file": None})()
    with pytest.raises(ValueError, match="args has no image_file, query"):
        eval_model(args)


def test_load_pretrained_model_keywords_and_the_cuda_default(baseline_path):
    """LLaVA's keywords; its default `device="cuda"` is refused, naming the fix, without CUDA."""
    tokenizer, model, image_processor, context_len = _load(baseline_path)
    assert model.device.type == "cpu" and image_processor is not None
    assert context_len == model.config.max_position_embeddings
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="pass device='cpu'"):
            load_pretrained_model(
                model_path=baseline_path,
                model_base=None,
                model_name=get_model_name_from_path(baseline_path),
            )


def test_run_llava_call_sequence(model_path, image_folder):
    """`run_llava.eval_model`'s calls, literally: `process_images` with the model's config, and
    `generate` with `image_sizes`, `temperature=0` and `top_p=None` (no warning raised) gives the
    plain greedy answer."""
    tokenizer, model, image_processor, context_len = _load(model_path)
    _, prompt = _open_prompt("llava_v1", "<image>\n" + QUERY)
    image_files = [str(image_folder / "img0.png")]
    images = [Image.open(image_file).convert("RGB") for image_file in image_files]
    image_sizes = [x.size for x in images]
    images_tensor = process_images(images, image_processor, model.config).to(
        model.device, dtype=torch.float16
    )
    input_ids = (
        tokenizer_image_token(prompt, tokenizer, IMAGE_TOKEN_INDEX, return_tensors="pt")
        .unsqueeze(0)
        .to("cpu")
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        output_ids = model.generate(
            input_ids,
            images=images_tensor,
            image_sizes=image_sizes,
            do_sample=False,
            temperature=0,
            top_p=None,
            num_beams=1,
            max_new_tokens=6,
            use_cache=True,
        )
    outputs = tokenizer.batch_decode(output_ids, skip_special_tokens=True)[0].strip()
    assert outputs
    greedy = model.generate(input_ids, images=images_tensor, max_new_tokens=6, do_sample=False)
    assert torch.equal(output_ids, greedy)
    with pytest.raises(ValueError, match="image_sizes holds 2 size"):
        model.generate(input_ids, images=images_tensor, image_sizes=image_sizes * 2, max_new_tokens=2)


def test_process_images_takes_the_model_config(baseline_path, image_folder):
    """LLaVA's third argument is the model's config; its `image_aspect_ratio` decides (None: the
    processor alone, as LLaVA does), as the aspect ratio given directly does."""
    _, model, image_processor, _ = _load(baseline_path)
    images = [Image.open(image_folder / "img2.png").convert("RGB")]  # 24 x 48: not square
    assert model.config.image_aspect_ratio == "pad"
    pixels = process_images(images, image_processor, model.config)
    assert torch.equal(pixels, process_images(images, image_processor, "pad"))
    for aspect, expected in (("resize", "resize"), ("square", "square"), (None, "square")):
        config = copy.deepcopy(model.config)
        config.image_aspect_ratio = aspect
        assert torch.equal(
            process_images(images, image_processor, config), process_images(images, image_processor, expected)
        )
    assert not torch.equal(pixels, process_images(images, image_processor, "square"))
    with pytest.raises(ValueError, match="int has no image_aspect_ratio"):
        process_images(images, image_processor, 3)


def test_model_vqa_call_sequence_with_keywords_stopping_criteria(model_path, image_folder):
    """`model_vqa`'s stop string (`sep2`, Vicuna's `</s>`) in `KeywordsStoppingCriteria`: the
    answer is the one generated without it, with the stop string cut off as LLaVA does."""
    tokenizer, model, image_processor, _ = _load(model_path)
    conv, prompt = _open_prompt("vicuna_v1", "<image>\n" + QUERY)
    input_ids = (
        tokenizer_image_token(prompt, tokenizer, IMAGE_TOKEN_INDEX, return_tensors="pt")
        .unsqueeze(0)
        .to("cpu")
    )
    image = Image.open(image_folder / "img1.png").convert("RGB")
    image_tensor = process_images([image], image_processor, model.config)[0]
    stop_str = conv.sep if conv.sep_style != SeparatorStyle.TWO else conv.sep2
    assert stop_str == "</s>"
    keywords = [stop_str]
    stopping_criteria = KeywordsStoppingCriteria(keywords, tokenizer, input_ids)
    output_ids = model.generate(
        input_ids,
        images=image_tensor.unsqueeze(0).half().to("cpu"),
        image_sizes=[image.size],
        do_sample=False,
        temperature=0,
        top_p=None,
        num_beams=1,
        max_new_tokens=8,
        use_cache=True,
        stopping_criteria=[stopping_criteria],
    )
    outputs = tokenizer.batch_decode(output_ids, skip_special_tokens=True)[0].strip()
    if outputs.endswith(stop_str):
        outputs = outputs[: -len(stop_str)]
    unstopped = model.generate(input_ids, images=image_tensor.unsqueeze(0), max_new_tokens=8, do_sample=False)
    assert torch.equal(output_ids, unstopped)
    assert outputs.strip() == tokenizer.decode(unstopped[0], skip_special_tokens=True).strip()


def test_keywords_stopping_criteria_stops_generation_at_a_keyword(tiny_model_path, image_folder):
    """A word of the free answer as the keyword: the answer stops right after it."""
    tokenizer, model, image_processor, _ = _load(tiny_model_path)
    _, prompt = _open_prompt("vicuna_v1", "<image>\n" + QUERY)
    input_ids = tokenizer_image_token(prompt, tokenizer, IMAGE_TOKEN_INDEX, return_tensors="pt").unsqueeze(0)
    images = process_images(
        [Image.open(image_folder / "img0.png").convert("RGB")], image_processor, model.config
    )
    free = model.generate(input_ids, images=images, max_new_tokens=10, do_sample=False)[0].tolist()
    # The first generated word that the text before it does not hold.
    stop = next(
        j
        for j in range(1, len(free))
        if (word := tokenizer.decode(free[j : j + 1]).strip()) and word not in tokenizer.decode(free[:j])
    )
    keyword = tokenizer.decode(free[stop : stop + 1]).strip()
    assert len(free) > stop + 1  # the free answer goes on after the keyword
    criteria = KeywordsStoppingCriteria([keyword], tokenizer, input_ids)
    output_ids = model.generate(
        input_ids, images=images, do_sample=False, max_new_tokens=10, stopping_criteria=[criteria]
    )
    assert output_ids[0].tolist() == free[: stop + 1]


def test_keywords_stopping_criteria_rows_and_prompt(tiny_checkpoints):
    """One bool per row; a keyword's ids (BOS dropped) or its text in the last generated tokens
    end a row; a plain LM's output starts with the prompt, which is never searched."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_checkpoints[0])

    def ids(*texts: str) -> torch.Tensor:
        return torch.tensor([tokenizer(text, add_special_tokens=False).input_ids for text in texts])

    prompt = ids("USER: red or blue? ASSISTANT:", "USER: red or blue? ASSISTANT:")  # [2, L]
    red = KeywordsStoppingCriteria(["red"], tokenizer, prompt)
    assert red.keyword_ids == ids("red").tolist()
    new = ids("blue red", "blue blue")  # [2, 2]
    assert red(new, None).tolist() == [True, False]  # only the new tokens (the multimodal models)
    assert red(torch.cat([prompt, new], dim=1), None).tolist() == [True, False]  # prompt + new (a plain LM)
    spanning = KeywordsStoppingCriteria(["ASSISTANT: blue"], tokenizer, prompt)
    assert spanning(torch.cat([prompt, ids("blue", "blue")], dim=1), None).tolist() == [False, False]
    assert spanning(ids("ASSISTANT: blue", "red ASSISTANT:"), None).tolist() == [True, False]
    hashes = KeywordsStoppingCriteria(["###"], tokenizer, prompt)
    assert hashes.keyword_ids[0] != ids("red###")[0, -4:].tolist()  # found by its text, not its ids
    assert hashes(ids("red###", "red ##"), None).tolist() == [True, False]
    with pytest.raises(ValueError, match="non-empty list"):
        KeywordsStoppingCriteria("red", tokenizer, prompt)
