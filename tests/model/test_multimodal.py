"""The shared input routine and the baseline against an independent computation."""

from __future__ import annotations

import base64

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import LlamaForCausalLM

from llava.constants import IGNORE_INDEX, IMAGE_TOKEN_INDEX
from llava.data.toy import write_bomb_png, write_png16
from llava.mm_utils import MAX_IMAGE_PIXELS, ImageTooLargeError, load_image, load_image_from_base64

IMG = IMAGE_TOKEN_INDEX


def test_count_mismatch_raises_with_per_sample_counts(build, images):
    model = build("fusion_llama")
    ids = torch.tensor([[1, 40, IMG, 41], [1, IMG, IMG, 42]])
    with pytest.raises(ValueError, match=r"3 image placeholder\(s\) \(per sample: \[1, 2\]\) but 2 image"):
        model(input_ids=ids, images=images[:2])
    with pytest.raises(ValueError, match="no images were given"):
        model(input_ids=ids)


def test_missing_image_file_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.png"):
        load_image(tmp_path / "nothere.png")
    broken = tmp_path / "broken.png"
    Image.new("RGB", (8, 8)).save(broken)
    broken.write_bytes(broken.read_bytes()[:20])
    with pytest.raises(OSError, match="broken.png"):
        load_image(broken)


MID_GREY_16 = 32896  # 128 x 257: mid-grey on the 16-bit scale


def _save_grey16(path, mode: str) -> None:
    grey = np.full((6, 5), MID_GREY_16, dtype=np.uint16)
    if mode == "I;16":
        write_png16(path, grey)  # a 16-bit greyscale PNG, which Pillow opens as I;16
    elif mode == "I;16B":
        Image.fromarray(grey.astype(">u2")).save(path)  # a big-endian 16-bit TIFF
    else:
        Image.fromarray(grey.astype(np.int32)).save(path)  # mode I (older Pillow's 16-bit PNGs)


@pytest.mark.parametrize("mode, name", [("I;16", "grey.png"), ("I;16B", "grey.tif"), ("I", "grey.tif")])
def test_a_16_bit_grey_image_becomes_mid_grey_rgb_not_white(tmp_path, mode, name):
    _save_grey16(tmp_path / name, mode)
    with Image.open(tmp_path / name) as raw:
        assert raw.mode == mode
    image = load_image(tmp_path / name)
    assert image.mode == "RGB" and image.size == (5, 6)
    assert set(image.getdata()) == {(128, 128, 128)}


@pytest.mark.parametrize("channels", [3, 4])
def test_a_16_bit_rgb_png_keeps_its_colours(tmp_path, channels):
    pixels = np.zeros((4, 4, channels), dtype=np.uint16)
    pixels[..., 0], pixels[..., 1], pixels[..., 2] = 65535, MID_GREY_16, 0
    if channels == 4:
        pixels[..., 3] = 65535
    write_png16(tmp_path / "rgb16.png", pixels)
    assert set(load_image(tmp_path / "rgb16.png").getdata()) == {(255, 128, 0)}


def test_an_image_without_an_8_bit_form_is_named(tmp_path):
    Image.fromarray(np.full((4, 4), 0.5, dtype=np.float32)).save(tmp_path / "float.tif")
    with pytest.raises(OSError, match="float.tif: floating-point"):
        load_image(tmp_path / "float.tif")
    Image.fromarray(np.full((4, 4), 70000, dtype=np.int32)).save(tmp_path / "wide.tif")
    with pytest.raises(OSError, match=r"wide.tif: mode I image with values 70000..70000"):
        load_image(tmp_path / "wide.tif")


def test_a_decompression_bomb_is_refused_naming_the_file(tmp_path):
    write_bomb_png(tmp_path / "bomb.png")  # over twice Pillow's limit: Pillow's error
    with pytest.raises(
        ImageTooLargeError, match=r"image .*bomb.png refused as a possible decompression bomb"
    ):
        load_image(tmp_path / "bomb.png")
    data = base64.b64encode((tmp_path / "bomb.png").read_bytes()).decode()
    with pytest.raises(ImageTooLargeError, match="question 7 refused"):
        load_image_from_base64(data, name="question 7")


def test_an_image_over_the_pixel_budget_is_refused_from_its_header(tmp_path, monkeypatch):
    """The budget is checked on the header's size, before anything is decoded: a PNG declaring
    12000 x 12000 pixels (under twice Pillow's limit, which Pillow itself would decode) is refused
    at once, and a larger budget reads a genuine image."""
    write_bomb_png(tmp_path / "wide.png", side=12000)
    with pytest.raises(
        ImageTooLargeError, match=r"wide.png: 12000x12000 = 144,000,000 pixels, over the budget"
    ):
        load_image(tmp_path / "wide.png")
    assert MAX_IMAGE_PIXELS == 4096 * 4096
    Image.new("RGB", (12, 12), (10, 20, 30)).save(tmp_path / "small.png")
    with pytest.raises(ImageTooLargeError, match="over the budget of 100 per image"):
        load_image(tmp_path / "small.png", max_pixels=100)
    image = load_image(tmp_path / "small.png", max_pixels=144)
    assert image.size == (12, 12) and image.getpixel((0, 0)) == (10, 20, 30)
    data = base64.b64encode((tmp_path / "small.png").read_bytes()).decode()
    with pytest.raises(ImageTooLargeError, match="question 3: 12x12"):
        load_image_from_base64(data, name="question 3", max_pixels=100)


def test_a_mode_i_image_of_8_bit_values_keeps_them(tmp_path):
    Image.fromarray(np.full((4, 4), 200, dtype=np.int32)).save(tmp_path / "eight.tif")
    assert set(load_image(tmp_path / "eight.tif").getdata()) == {(200, 200, 200)}
    Image.fromarray(np.full((4, 4), 32896, dtype=np.int32)).save(tmp_path / "sixteen.tif")
    assert set(load_image(tmp_path / "sixteen.tif").getdata()) == {(128, 128, 128)}


def test_merge_layout_labels_padding_and_vision_stream(build, images):
    model = build("fusion_llama")
    ids = torch.tensor([[1, 40, IMG, 41, 0, 0], [1, 42, 43, 44, 45, 46], [1, IMG, 47, IMG, 48, 49]])
    mask = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]])
    labels = ids.masked_fill(ids == IMG, IGNORE_INDEX).masked_fill(mask == 0, IGNORE_INDEX)
    for side in ("right", "left"):
        mm = model.prepare_multimodal_inputs(ids, images[:3], mask, labels, padding_side=side)
        lengths = [3 + 16, 6, 4 + 32]
        assert mm.inputs_embeds.shape[:2] == (3, max(lengths))
        assert mm.attention_mask.sum(1).tolist() == lengths
        assert mm.image_mask.sum(1).tolist() == [16, 0, 32]
        assert (mm.labels[mm.image_mask] == IGNORE_INDEX).all()
        assert (mm.inputs_embeds[mm.image_mask] == 0).all()  # H_0 = 0 at image positions
        features = model.get_image_features(images[:3])
        assert torch.equal(mm.vision_stream[mm.image_mask], features.reshape(-1, features.shape[-1]))
        assert (mm.vision_stream[~mm.image_mask] == 0).all()
        row0 = mm.attention_mask[0].bool()
        assert mm.position_ids[0][row0].tolist() == list(range(lengths[0]))
        if side == "left":
            assert mm.attention_mask[0, : max(lengths) - lengths[0]].sum() == 0
        expected_labels = [40, *[IGNORE_INDEX] * 16, 41]
        assert mm.labels[0][row0].tolist()[1:] == expected_labels


def test_baseline_equals_projector_output_spliced_into_embeddings(build, images, tiny_checkpoints):
    llm, _ = tiny_checkpoints
    model = build("llava_llama")
    ids = [1, 40, IMG, 41, 42]
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids]), images=images[:1]).logits
        tower = model.model.vision_tower.vision_tower
        hidden = tower(images[:1], output_hidden_states=True).hidden_states[-2][
            :, 1:
        ]  # LLaVA: layer -2, no CLS
        projected = model.model.mm_projector(hidden)[0]  # [16, d_h]
        plain = LlamaForCausalLM.from_pretrained(llm, attn_implementation="eager").eval()
        embed = plain.get_input_embeddings()
        spliced = torch.cat([embed(torch.tensor(ids[:2])), projected, embed(torch.tensor(ids[3:]))])[None]
        expected = plain(inputs_embeds=spliced).logits
    assert logits.shape == expected.shape == (1, 4 + 16, plain.config.vocab_size)
    assert torch.equal(logits, expected)  # the same modules on the same values in the same order


def test_text_only_training_batch_keeps_vision_modules_in_the_graph(build):
    model = build("llava_llama").train()
    ids = torch.tensor([[1, 40, 41, 42]])
    model(input_ids=ids, labels=ids).loss.backward()
    grads = [p.grad for p in model.model.mm_projector.parameters()]
    assert all(g is not None and torch.count_nonzero(g) == 0 for g in grads)
