"""The shipped backbones load with the standard Hugging Face loaders and work; the rebuild
command still runs."""

import dataclasses
import json
import math
import random

import numpy as np
import pytest
import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    CLIPImageProcessor,
    CLIPVisionConfig,
    CLIPVisionModel,
    LlamaConfig,
    LlamaForCausalLM,
)

from llava.conversation import get_conv_template
from llava.mm_utils import process_images, tokenize_conversation
from llava.playground import backbones, chat_lm, clip
from llava.playground.__main__ import main as playground_main
from llava.playground.scenes import (
    GRID,
    IMAGE_SIZE,
    SCENE_WORDS,
    render_scene,
    sample_scenes,
)
from llava.playground.tasks import CATEGORIES, Question
from llava.playground.tokenizer import text_conversation
from llava.tools.tokenizer import train_tokenizer
from tests.playground.scene_helpers import HAND_SCENE

SHIPPED = backbones.SHIPPED_BACKBONES


def _load(backbones_dir=SHIPPED):
    """`(vision tower, image processor, LM, tokenizer)` with the standard Hugging Face loaders."""
    llm, vision = backbones.check_backbones(backbones_dir)
    return (
        CLIPVisionModel.from_pretrained(vision),
        CLIPImageProcessor.from_pretrained(vision),
        AutoModelForCausalLM.from_pretrained(llm),
        AutoTokenizer.from_pretrained(llm),
    )


@pytest.fixture(scope="module")
def shipped():
    return _load()


@pytest.fixture(scope="module")
def shipped_vision():
    _, vision_dir = backbones.check_backbones()
    return CLIPVisionModel.from_pretrained(vision_dir), CLIPImageProcessor.from_pretrained(vision_dir)


def test_shipped_weights_are_safetensors_and_small():
    files = [p for p in SHIPPED.rglob("*") if p.is_file()]
    weights = [p for p in files if p.suffix in {".safetensors", ".bin", ".pt", ".pth", ".ckpt"}]
    assert {p.parent.name for p in weights} == {"vision", "llm"}
    assert all(p.suffix == ".safetensors" for p in weights)
    assert sum(p.stat().st_size for p in files) < 21 * 2**20


def test_vision_tower_sees_one_patch_per_cell(shipped_vision):
    vision, processor = shipped_vision
    pixels = process_images([render_scene(HAND_SCENE)], processor, "pad")  # [1, 3, 48, 48]
    assert pixels.shape == (1, 3, IMAGE_SIZE, IMAGE_SIZE)
    expected = (
        np.asarray(render_scene(HAND_SCENE), dtype=np.float32) / 255.0 - processor.image_mean
    ) / processor.image_std
    torch.testing.assert_close(
        pixels[0], torch.from_numpy(expected).permute(2, 0, 1).float(), atol=1e-4, rtol=0
    )
    with torch.no_grad():
        hidden = vision(pixel_values=pixels, output_hidden_states=True).hidden_states[-1]  # [1, 1 + 4, D]
    assert hidden.shape[1] == 1 + GRID * GRID


def test_vision_tower_patches_say_which_cell_they_are(shipped_vision):
    """The VLMs read an object's position from its patch's features (the LM sees image positions
    in sequence order only), so a linear probe must read the cell from either layer the
    pipelines select (-1: Inverse-LLaVA, -2: LLaVA-1.5) on held-out scenes."""
    vision, processor = shipped_vision
    scenes = sample_scenes(random.Random(7), 400)
    pixels = process_images([render_scene(s) for s in scenes], processor, "pad")
    with torch.no_grad():
        hidden = vision(pixel_values=pixels, output_hidden_states=True).hidden_states
    cells = torch.arange(GRID * GRID).repeat(len(scenes))  # [N * 4], patches in reading order
    train = 300 * GRID * GRID
    for layer in (-1, -2):
        features = hidden[layer][:, 1:].reshape(len(scenes) * GRID * GRID, -1)  # drop CLS
        features = (features - features[:train].mean(0)) / (features[:train].std(0) + 1e-5)
        torch.manual_seed(0)
        probe = torch.nn.Linear(features.shape[1], GRID * GRID)
        optimizer = torch.optim.Adam(probe.parameters(), lr=1e-2)
        for _ in range(200):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(probe(features[:train]), cells[:train]).backward()
            optimizer.step()
        accuracy = (probe(features[train:]).argmax(-1) == cells[train:]).float().mean().item()
        assert accuracy >= 0.9, (layer, accuracy)


def test_lm_tokenizer_is_a_vicuna_chat_tokenizer(shipped):
    _, _, llm, tokenizer = shipped
    assert llm.config.vocab_size >= len(tokenizer)
    question = Question("OCR", "What digit is shown in the image?", "7", "short")
    assert (
        tokenizer.unk_token_id
        not in tokenizer(text_conversation(HAND_SCENE, [question], open_last=True).get_prompt()).input_ids
    )
    conv = get_conv_template("vicuna_v1")
    conv.append_message(conv.roles[0], "<image>\nWhat digit is shown in the image?")
    conv.append_message(conv.roles[1], "7")
    input_ids, labels = tokenize_conversation(conv, tokenizer)
    supervised = [t for t, label in zip(input_ids, labels, strict=True) if label != -100]
    assert tokenizer.decode(supervised) == "7</s>"


def test_lm_answers_text_described_questions(shipped):
    """What the shipped LM has learnt: reading the digit, and OCR yes/no questions both ways."""
    _, _, llm, tokenizer = shipped
    questions = [
        Question("OCR", "What digit is shown in the image?", "7", "short"),
        Question("OCR", "Is the digit in the image 7?", "Yes", "yes_no"),
        Question("OCR", "Is the digit in the image 3?", "No", "yes_no"),
    ]
    answers = chat_lm.answer_conversations(
        llm, tokenizer, [text_conversation(HAND_SCENE, [q], open_last=True) for q in questions]
    )
    assert answers == [q.answer for q in questions]


def test_lm_looks_objects_up_in_the_scene_text(shipped):
    """Measured live on held-out text scenes: the shipped LM's yes/no answers beat chance (0.5)
    on every category, and its colour and position answers follow the scene (no constant
    answer)."""
    _, _, llm, tokenizer = shipped
    ceiling = chat_lm.evaluate_lm(llm, tokenizer, per_category=40, seed=0)
    for category in CATEGORIES:
        assert ceiling[category]["yes_no_acc"] >= 0.6, (category, ceiling[category])
    for category in ("color", "position"):
        assert ceiling[category]["short_answer_top_share"] < 0.7, (category, ceiling[category])


def test_score_ceiling_counts_pairs_and_constant_answers():
    meta = [
        ("color", "yes_no", 0, "Yes"), ("color", "yes_no", 0, "No"), ("color", "short", 0, "red"),
        ("color", "yes_no", 1, "Yes"), ("color", "yes_no", 1, "No"), ("color", "short", 1, "blue"),
        ("OCR", "yes_no", 0, "Yes"), ("OCR", "yes_no", 0, "No"), ("OCR", "short", 0, "3"),
        ("OCR", "yes_no", 1, "Yes"), ("OCR", "yes_no", 1, "No"), ("OCR", "short", 1, "4"),
    ]  # fmt: skip
    predictions = ["Yes", "Yes", "red", "yes", "No", "Red", "No", "No", "3", "Yes", "No", "4"]
    scores = chat_lm.score_ceiling(meta, predictions)
    assert list(scores) == ["color", "OCR"]
    assert scores["color"] == {
        "yes_no_acc": 0.75, "yes_no_acc_plus": 0.5, "short_answer_acc": 0.5, "short_answer_top_share": 1.0,
    }  # fmt: skip
    assert scores["OCR"] == {
        "yes_no_acc": 0.75, "yes_no_acc_plus": 0.5, "short_answer_acc": 1.0, "short_answer_top_share": 0.5,
    }  # fmt: skip
    with pytest.raises(ValueError):
        chat_lm.score_ceiling(meta, predictions[:-1])


def test_recorded_clip_retrieval_meets_the_target():
    metrics = json.loads((SHIPPED / "metrics.json").read_text())
    assert metrics["clip"]["image_to_text_top1"] >= 0.8
    assert metrics["clip"]["rearranged_top1"] >= 0.8  # chance 0.25: positions tell them apart


@pytest.mark.xfail(
    strict=True,
    reason="chat LM yes/no acc under 0.7 on count (0.675; see docs/playground.md)",
)
def test_recorded_lm_ceiling_meets_the_target():
    metrics = json.loads((SHIPPED / "metrics.json").read_text())
    for category, row in metrics["lm"]["ceiling"].items():
        assert row["yes_no_acc"] >= 0.7, category


def test_rebuild_command_runs(tmp_path, caplog):
    torch.manual_seed(0)
    random.seed(0)
    caplog.set_level("INFO", logger="llava.playground")
    metrics = playground_main(
        ["backbones", "--output-dir", str(tmp_path), "--preset", "smoke", "--seed", "1"]
    )
    assert "LM ceiling OCR" in caplog.text
    assert set(metrics["lm"]["ceiling"]) == set(CATEGORIES) and "image_to_text_top1" in metrics["clip"]
    assert 0.0 < metrics["lm"]["ceiling"]["OCR"]["short_answer_top_share"] <= 1.0
    vision, processor, llm, tokenizer = _load(tmp_path)
    assert processor.crop_size == {"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    assert isinstance(vision, CLIPVisionModel) and llm.config.model_type == "llama"
    assert json.loads((tmp_path / "metrics.json").read_text())["lm"]["settings"]["seed"] == 1
    before = (tmp_path / "llm" / "model.safetensors").stat().st_mtime_ns
    playground_main(
        ["backbones", "--output-dir", str(tmp_path), "--preset", "smoke", "--seed", "1"]
    )  # skipped
    assert (tmp_path / "llm" / "model.safetensors").stat().st_mtime_ns == before
    # A stage finished under other settings is refused (the one stage cache), never retrained over.
    longer = dataclasses.replace(backbones.PRESETS["smoke"], clip_steps=4)
    with pytest.raises(FileExistsError, match=r"vision holds a stage run with other settings"):
        backbones.build_backbones(tmp_path, seed=1, preset=longer)
    assert (tmp_path / "llm" / "model.safetensors").stat().st_mtime_ns == before


def test_stages_are_keyed_on_the_tokenizers_vocabulary():
    preset = backbones.PRESETS["smoke"]
    tokenizer = backbones.preset_tokenizer(preset, seed=0)
    fields = backbones.stage_settings(preset, "lm_", tokenizer, 0)
    assert fields == backbones.stage_settings(preset, "lm_", backbones.preset_tokenizer(preset, seed=0), 0)
    assert fields["lm_hidden"] == preset.lm_hidden and "clip_steps" not in fields
    other = train_tokenizer([" ".join(SCENE_WORDS), "Is there a red circle?"], vocab_size=preset.vocab_size)
    assert backbones.stage_settings(preset, "lm_", other, 0)["tokenizer_sha256"] != fields["tokenizer_sha256"]


def test_check_backbones_names_a_missing_folder_and_a_foreign_tokenizer(tmp_path):
    with pytest.raises(
        FileNotFoundError,
        match=r"no backbone at .*llm \(rebuild with `python -m llava\.playground backbones",
    ):
        backbones.check_backbones(tmp_path)
    LlamaConfig().save_pretrained(tmp_path / "llm")
    with pytest.raises(FileNotFoundError, match=r"no backbone at .*vision"):
        backbones.check_backbones(tmp_path)
    CLIPVisionConfig().save_pretrained(tmp_path / "vision")
    train_tokenizer(["toprightdigit 7. a red circle"], vocab_size=300).save_pretrained(tmp_path / "llm")
    with pytest.raises(
        ValueError, match=r"'topleftredcircle' is not one token of the chat LM's tokenizer in .*llm"
    ):
        backbones.check_backbones(tmp_path)


def test_yes_no_token_mask_marks_exactly_the_yes_no_answers(shipped):
    tokenizer = shipped[3]
    marked = chat_lm.yes_no_token_mask(tokenizer).nonzero().squeeze(1).tolist()
    assert marked and {tokenizer.decode([i]).strip() for i in marked} == {"Yes", "No"}
    question = Question("OCR", "Is the digit in the image 7?", "Yes", "yes_no")
    _, labels = tokenize_conversation(text_conversation(HAND_SCENE, [question]), tokenizer, add_bos=True)
    answer_tokens = [t for t in labels if t != -100]  # "Yes", "</s>"
    assert [chat_lm.yes_no_token_mask(tokenizer)[t].item() for t in answer_tokens] == [True, False]


def test_lm_loss_up_weights_yes_no_answer_tokens():
    torch.manual_seed(0)
    vocab = 6
    yes_no = torch.tensor([False, False, True, True, False, False])  # tokens 2 and 3 are Yes/No
    input_ids = torch.tensor([[1, 4, 2, 5, 0], [1, 3, 5, 0, 0]])  # [B=2, T=5]
    mask = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 0, 0]])
    labels = torch.tensor([[-100, -100, 2, 5, -100], [-100, 3, 5, -100, -100]])
    logits = torch.randn(2, 5, vocab)
    loss, answer, all_tokens = chat_lm.lm_loss(logits, input_ids, labels, mask, yes_no, 4.0, 0.5)
    ce = torch.nn.functional.cross_entropy
    # answer targets (position t predicts t+1): (0,1)->2 yes/no, (0,2)->5, (1,0)->3 yes/no, (1,1)->5
    terms = [ce(logits[b, t], torch.tensor(y)) for b, t, y in ((0, 1, 2), (0, 2, 5), (1, 0, 3), (1, 1, 5))]
    expected = (4 * terms[0] + terms[1] + 4 * terms[2] + terms[3]) / 10
    torch.testing.assert_close(answer, expected)
    real = [(0, 0, 4), (0, 1, 2), (0, 2, 5), (1, 0, 3), (1, 1, 5)]  # every next token inside the mask
    expected_all = torch.stack([ce(logits[b, t], torch.tensor(y)) for b, t, y in real]).mean()
    torch.testing.assert_close(all_tokens, expected_all)
    torch.testing.assert_close(loss, expected + 0.5 * expected_all)
    unweighted = chat_lm.lm_loss(logits, input_ids, labels, mask, yes_no, 1.0, 0.5)[1]
    torch.testing.assert_close(unweighted, torch.stack(terms).mean())


def test_lm_phase_errors_name_the_culprit():
    with pytest.raises(ValueError, match="unknown or empty \\['colour'\\]"):
        chat_lm.LMPhase(steps=1, lr=1e-3, categories=("colour",))
    with pytest.raises(ValueError, match="schedule"):
        chat_lm.LMPhase(steps=1, lr=1e-3, schedule="linear")


def _phase_rates(optimizer, phase: chat_lm.LMPhase, warmup_ratio: float) -> list[float]:
    scheduler = chat_lm.phase_scheduler(optimizer, phase, warmup_ratio)
    rates = []
    for _ in range(phase.steps):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return rates


def test_lm_phases_follow_transformers_warmup_schedules_each_from_its_own_rate():
    """Each phase restarts transformers' warm-up on the one optimizer, at its own peak rate: a
    LambdaLR made on an optimizer that already has `initial_lr` would otherwise keep the first
    phase's rate for every later phase."""
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=0.0)
    cosine = _phase_rates(optimizer, chat_lm.LMPhase(steps=20, lr=1e-3, schedule="cosine"), 0.1)
    constant = _phase_rates(optimizer, chat_lm.LMPhase(steps=10, lr=5e-4, schedule="constant"), 0.2)
    # warm-up k / W from 0 (transformers' convention), then cosine to 0 over the remaining 18 steps
    assert cosine[:3] == pytest.approx([0.0, 5e-4, 1e-3])
    assert cosine[11] == pytest.approx(1e-3 * 0.5 * (1 + math.cos(math.pi * 9 / 18)))
    assert constant == pytest.approx([0.0, 2.5e-4] + [5e-4] * 8)


def test_the_shipped_backbones_are_the_default_presets_finished_stages():
    """The stage cache's records in the shipped folders match what `build_backbones` computes
    for the default preset and seed 0, so the rebuild command finds both stages done."""
    preset = backbones.PRESETS["default"]
    tokenizer = backbones.preset_tokenizer(preset, seed=0)
    for stage, prefix in (("vision", "clip_"), ("llm", "lm_")):
        record = json.loads((SHIPPED / stage / "DONE.json").read_text())
        assert record["settings"] == backbones.stage_settings(preset, prefix, tokenizer, 0), stage


def test_the_ceiling_uses_mmes_yes_no_parsing():
    """Yes/no predictions are read as `llava.eval.eval_mme` reads them ("Yes." counts as yes)."""
    meta = [("OCR", "yes_no", 0, "Yes"), ("OCR", "yes_no", 0, "No"), ("OCR", "short", 0, "3")]
    scores = chat_lm.score_ceiling(meta, ["Yes.", "no, it is not", "3"])
    assert scores["OCR"]["yes_no_acc"] == 1.0 and scores["OCR"]["yes_no_acc_plus"] == 1.0


def test_scene_words_are_single_tokens_that_start_as_the_sum_of_their_parts():
    preset = backbones.PRESETS["smoke"]
    tokenizer = backbones.preset_tokenizer(preset, seed=0)
    torch.manual_seed(0)
    llm = chat_lm.build_lm(preset, tokenizer)
    torch.manual_seed(0)
    plain = LlamaForCausalLM(llm.config).get_input_embeddings().weight  # the same draw, no init
    init = llm.get_input_embeddings().weight
    vocab = tokenizer.get_vocab()
    for word in SCENE_WORDS:
        assert tokenizer.tokenize(f"USER: {word}.")[-2:] == [f"▁{word}", "."]
    parts = [vocab[f"▁{p}"] for p in ("top", "left", "red", "circle")]
    word = vocab["▁topleftredcircle"]
    torch.testing.assert_close(init[word], plain[parts].sum(dim=0))
    changed = (init != plain).any(dim=1).nonzero().squeeze(1).tolist()
    assert sorted(changed) == sorted(vocab[f"▁{w}"] for w in SCENE_WORDS)
    other = train_tokenizer(["a red circle at the top left"], vocab_size=300)
    with pytest.raises(ValueError, match="scene word 'topleftredcircle' is not one token"):
        chat_lm.init_scene_word_embeddings(LlamaForCausalLM(llm.config), other)


def test_distinct_phases_draw_only_distinct_scenes():
    tokenizer = backbones.preset_tokenizer(backbones.PRESETS["smoke"], seed=0)
    phase = chat_lm.LMPhase(
        steps=1, lr=1e-3, categories=("color",), min_turns=1, max_turns=1, scenes="distinct"
    )
    input_ids, _, _ = next(chat_lm.lm_batches(tokenizer, random.Random(0), 16, phase))
    for row in tokenizer.batch_decode(input_ids, skip_special_tokens=True):
        objects = [SCENE_WORDS[w.rstrip(".")] for w in row.split() if w.rstrip(".") in SCENE_WORDS]
        shapes = [parts[2:] for parts in objects if len(parts) == 4]  # (colour, shape) per shape
        assert len(shapes) >= 2
        assert len({c for c, _ in shapes}) == len({s for _, s in shapes}) == len(shapes)
    with pytest.raises(ValueError, match="scenes must be 'any' or 'distinct'"):
        chat_lm.LMPhase(steps=1, lr=1e-3, scenes="unique")


def test_clip_batches_pair_scenes_with_their_rearrangements():
    scenes = clip.clip_batch_scenes(random.Random(0), 16, 0.25)
    fresh, moved = scenes[:12], scenes[12:]
    assert len(moved) == 4
    for original, other in zip(fresh[:4], moved, strict=True):
        assert other.key != original.key
        assert sorted(o.name for o in other.objects) == sorted(o.name for o in original.objects)
    assert len({s.key for s in clip.clip_batch_scenes(random.Random(0), 16, 0.0)}) == 16
    with pytest.raises(ValueError, match="clip_rearranged must be in \\[0, 0.5\\], got 0.7"):
        backbones.BackbonePreset(clip_rearranged=0.7)


def test_replay_mixes_every_category_into_a_focused_phase():
    tokenizer = backbones.preset_tokenizer(backbones.PRESETS["smoke"], seed=0)

    def questions(replay: float) -> set[str]:
        phase = chat_lm.LMPhase(
            steps=1, lr=1e-3, categories=("OCR",), min_turns=1, max_turns=1, yes_no_ratio=0.0, replay=replay
        )
        input_ids, _, _ = next(chat_lm.lm_batches(tokenizer, random.Random(0), 32, phase))
        rows = tokenizer.batch_decode(input_ids, skip_special_tokens=True)
        return {row.split("USER:")[1].split("\n")[1] for row in rows}  # scene \n question \n suffix

    assert questions(0.0) == {"What digit is shown in the image?"}
    assert len(questions(1.0)) > 4
    with pytest.raises(ValueError, match="replay in \\[0, 1\\]"):
        chat_lm.LMPhase(steps=1, lr=1e-3, replay=1.5)
