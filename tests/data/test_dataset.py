"""The lazy dataset, the collator, bad-sample handling, the modality sampler and the validator."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch

from llava.constants import IMAGE_TOKEN_INDEX
from llava.data.checks import EmptyDatasetError
from llava.data.dataset import DataCollatorForSupervisedDataset, LazySupervisedDataset
from llava.data.records import BadSampleError
from llava.data.sampler import ModalityLengthGroupedSampler, modality_grouped_indices
from llava.data.toy import image_record, text_record, write_bomb_png, write_broken_dataset, write_dataset


def make_dataset(path, folder, tokenizer, image_processor, strict=False, max_length=256, template="v1"):
    return LazySupervisedDataset(
        path,
        tokenizer,
        image_processor,
        template=template,
        image_folder=folder,
        image_aspect_ratio="pad",
        model_max_length=max_length,
        num_image_tokens=16,
        strict=strict,
    )


def test_samples_text_only_multi_image_and_collation(tmp_path, tokenizer, image_processor):
    records = [
        image_record(0, "red", "a.png", turns=2),
        text_record(1),
        {
            "id": "two",
            "image": ["a.png", "b.png"],
            "conversations": [
                {"from": "human", "value": "<image>\n<image>\nWhat is in the image?"},
                {"from": "gpt", "value": "A red square."},
            ],
        },
    ]
    path, folder = write_dataset(tmp_path, records, {"a.png": "red", "b.png": "blue"})
    dataset = make_dataset(path, folder, tokenizer, image_processor)
    samples = [dataset[i] for i in range(3)]
    assert samples[0]["images"].shape == (1, 3, 32, 32)
    assert samples[1]["images"] is None
    assert samples[2]["images"].shape == (2, 3, 32, 32)
    assert (samples[2]["input_ids"] == IMAGE_TOKEN_INDEX).sum() == 2
    assert dataset.modality_lengths[0] > 0 > dataset.modality_lengths[1]

    batch = DataCollatorForSupervisedDataset(pad_token_id=tokenizer.pad_token_id)(samples)
    longest = max(s["input_ids"].shape[0] for s in samples)
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape == (3, longest)
    assert batch["images"].shape == (3, 3, 32, 32)  # images of the batch in order of appearance
    assert batch["attention_mask"][1].sum() == samples[1]["input_ids"].shape[0]
    assert batch["skipped_samples"] == []


def _validator_argv(path, folder, tiny_checkpoints, max_length=256) -> list[str]:
    """The validator's command line (`python -m llava.data.validate` flags) for a dataset."""
    return [
        "--data_path",
        path,
        "--image_folder",
        folder,
        "--tokenizer",
        tiny_checkpoints[0],
        "--model_max_length",
        str(max_length),
        "--num_image_tokens",
        "16",
    ]


def _long_record(i: int) -> dict:
    record = image_record(i, "red", "a.png")
    record["conversations"][1]["value"] = "A red square, " * 30 + "and that is all."
    return record


def test_an_over_length_sample_is_treated_alike_by_validator_and_dataset(
    tmp_path, tokenizer, image_processor, tiny_checkpoints, validator
):
    """A sample whose reply `model_max_length` would cut is never trained truncated: an error for
    the validator and under --strict_data, otherwise skipped and counted."""
    records = [image_record(0, "red", "a.png"), _long_record(1), text_record(2)]
    path, folder = write_dataset(tmp_path, records, {"a.png": "red"})
    status, out = validator(_validator_argv(path, folder, tiny_checkpoints, max_length=100))
    assert status == 1
    assert "record 1 (id 'img-1'): too_long:" in out and "> model_max_length 100" in out
    assert "3 records, 1 with problems" in out

    with pytest.raises(
        BadSampleError, match=r"record 1 \(id 'img-1'\): \d+ positions .* > model_max_length 100"
    ):
        [
            make_dataset(path, folder, tokenizer, image_processor, strict=True, max_length=100)[i]
            for i in range(3)
        ]
    dataset = make_dataset(path, folder, tokenizer, image_processor, max_length=100)
    sample = dataset[1]
    assert [(s.index, s.kind) for s in sample["skipped"]] == [(1, "too_long")]
    assert (sample["input_ids"] == IMAGE_TOKEN_INDEX).sum() == 0  # record 2 took its place, untruncated
    collated = DataCollatorForSupervisedDataset(pad_token_id=tokenizer.pad_token_id)([sample])
    assert [s.index for s in collated["skipped_samples"]] == [1]  # what the trainer counts


def test_an_empty_dataset_is_an_error_for_validator_and_dataset(
    tmp_path, tokenizer, image_processor, validator
):
    empty = tmp_path / "empty.json"
    empty.write_text("[]")
    status, out = validator(["--data_path", str(empty)])
    assert status == 1 and "holds no records" in out
    with pytest.raises(EmptyDatasetError, match="empty.json: the data set holds no records"):
        make_dataset(str(empty), None, tokenizer, image_processor)

    path, folder = write_dataset(tmp_path / "bad", [image_record(0, "red", "gone.png")])
    status, out = validator(["--data_path", path, "--image_folder", folder])
    assert status == 1 and "none of its 1 record(s) is usable" in out
    with pytest.raises(EmptyDatasetError, match=r"none of its 1 record\(s\) is usable"):
        make_dataset(path, folder, tokenizer, image_processor)


def test_a_decompression_bomb_names_the_record_in_validator_and_dataset(
    tmp_path, tokenizer, image_processor, validator
):
    records = [image_record(0, "red", "a.png"), image_record(1, "red", "bomb.png"), text_record(2)]
    path, folder = write_dataset(tmp_path, records, {"a.png": "red"})
    write_bomb_png(Path(folder, "bomb.png"))
    status, out = validator(["--data_path", path, "--image_folder", folder])
    assert status == 1
    assert "record 1 (id 'img-1'): unreadable_image: image " in out and "bomb.png refused" in out

    with pytest.raises(
        BadSampleError,
        match=r"record 1 \(id 'img-1'\): image .*bomb.png refused as a possible decompression bomb",
    ):
        make_dataset(path, folder, tokenizer, image_processor, strict=True)[1]
    sample = make_dataset(path, folder, tokenizer, image_processor)[1]
    assert [(s.index, s.kind) for s in sample["skipped"]] == [(1, "unreadable_image")]


@pytest.mark.parametrize("suffix", [".json", ".jsonl"])
def test_a_non_utf8_data_file_is_named_with_its_line(tmp_path, tokenizer, image_processor, validator, suffix):
    lines = [json.dumps(text_record(0)), json.dumps(text_record(1)).replace("three", "tr\u00e8s")]
    text = "\n".join(lines) if suffix == ".jsonl" else "[" + ",\n".join(lines) + "]"
    path = tmp_path / f"data{suffix}"
    path.write_bytes(text.encode("latin-1"))  # the 'e-grave' as one byte, 0xe8: not UTF-8
    message = rf"data{suffix}:2: not UTF-8 text \(byte b'\\xe8' at offset \d+"
    with pytest.raises(ValueError, match=message):
        make_dataset(str(path), None, tokenizer, image_processor)
    status, out = validator(["--data_path", str(path)])
    assert status == 1 and re.search(message, out)
    path.write_text(text)  # the same text in UTF-8 loads
    assert len(make_dataset(str(path), None, tokenizer, image_processor)) == 2


def test_bad_samples_are_skipped_and_counted(tmp_path, tokenizer, image_processor):
    path, folder = write_broken_dataset(tmp_path)
    dataset = make_dataset(path, folder, tokenizer, image_processor)
    assert dataset.rejected_at_start == 2 and len(dataset) == 6  # missing image and malformed record
    sample = dataset[1]  # the truncated PNG: the next good record takes its place
    assert [s.index for s in sample["skipped"]] == [2]
    assert "truncated.png" in sample["skipped"][0].reason
    assert (sample["input_ids"] == IMAGE_TOKEN_INDEX).sum() == 1  # record 4


def test_strict_data_names_the_first_bad_record(tmp_path, tokenizer, image_processor):
    path, folder = write_broken_dataset(tmp_path)
    with pytest.raises(BadSampleError, match=r"record 1 \(id 'img-1'\): image file not found: .*missing.png"):
        make_dataset(path, folder, tokenizer, image_processor, strict=True)


def test_modality_grouped_sampler():
    lengths = [5, -3, 7, -2, 9, 4, -8, 6, 3, -1, 2]
    indices = modality_grouped_indices(
        lengths, batch_size=2, world_size=2, generator=torch.Generator().manual_seed(0)
    )
    assert sorted(indices) == list(range(len(lengths)))
    full = len(indices) // 4 * 4
    steps = [indices[i : i + 4] for i in range(0, full, 4)]
    complete = [s for s in steps if len({lengths[i] > 0 for i in s}) == 1]
    assert len(complete) >= 1 and all(
        [abs(lengths[i]) for i in s] == sorted((abs(lengths[i]) for i in s), reverse=True) for s in complete
    )
    sampler = ModalityLengthGroupedSampler(lengths, batch_size=2, world_size=2, seed=3)
    first = list(sampler)
    assert list(sampler) == first  # same epoch, same order (a resume sees the same data)
    sampler.set_epoch(1)
    assert sorted(sampler) == sorted(first)


def test_validator_lists_problems_by_index(tmp_path, tokenizer, tiny_checkpoints, validator):
    path, folder = write_broken_dataset(tmp_path)
    records = json.loads(Path(path).read_text())
    records.append(image_record(8, "red", "0.png"))
    records[8]["conversations"][0]["value"] = "Describe the picture in detail. " * 30 + "<image>"
    Path(path).write_text(json.dumps(records))
    status, out = validator(_validator_argv(path, folder, tiny_checkpoints, max_length=128))
    assert status == 1
    assert "record 1 (id 'img-1'): missing_image" in out
    assert "record 2 (id 'img-2'): unreadable_image" in out and "truncated.png" in out
    assert "record 3 (id 'broken'): malformed" in out
    assert "record 8 (id 'img-8'): too_long" in out
    assert "9 records, 4 with problems" in out


def test_validator_passes_a_clean_set(toy_dataset, validator):
    status, out = validator(["--data_path", toy_dataset[0], "--image_folder", toy_dataset[1]])
    assert status == 0 and "24 records, 0 with problems" in out


def test_the_trainer_counts_an_over_length_sample_and_strict_data_refuses_it(tiny_checkpoints, tmp_path):
    """The training entry point, not just the dataset: the over-length record is left out of
    training and in `skipped_samples`, and `--strict_data` stops naming it."""
    from llava.train.arguments import parse_arguments
    from llava.train.train import train

    records = [
        image_record(0, "red", "a.png"),
        _long_record(1),
        text_record(2),
        image_record(3, "red", "a.png"),
    ]
    path, folder = write_dataset(tmp_path / "data", records, {"a.png": "red"})
    llm, vision = tiny_checkpoints

    def flags(run: str, *extra: str) -> list[str]:
        common = {
            "model_name_or_path": llm,
            "vision_tower": vision,
            "model_type": "fusion_llama",
            "version": "v1",
            "data_path": path,
            "image_folder": folder,
            "output_dir": str(tmp_path / run),
            "per_device_train_batch_size": "2",
            "num_train_epochs": "1",
            "save_strategy": "no",
            "model_max_length": "100",
            "lora_enable": "True",
            "report_to": "none",
            "disable_tqdm": "True",
        }
        return [item for name, value in common.items() for item in (f"--{name}", value)] + list(extra)

    summary = train(*parse_arguments(flags("run")))
    assert summary["skipped_samples"] == 1 and summary["global_step"] == 2
    with pytest.raises(BadSampleError, match=r"record 1 \(id 'img-1'\): .* > model_max_length 100.*too_long"):
        train(*parse_arguments(flags("strict", "--strict_data", "True")))


def _reply_of(words: int, i: int = 0) -> dict:
    record = text_record(i)
    record["conversations"][1]["value"] = " ".join(["square"] * words)
    return record


def test_the_validator_checks_training_default_length_with_a_tokenizer(tmp_path, tiny_checkpoints, validator):
    """--tokenizer without --model_max_length: training's default (2048) applies, as in training."""
    path, folder = write_dataset(tmp_path, [text_record(0), _reply_of(2100, 1)])
    status, out = validator(["--data_path", path, "--tokenizer", tiny_checkpoints[0]])
    assert status == 1
    assert "record 1 (id 'txt-1'): too_long:" in out and "> model_max_length 2048" in out
    assert "record 0" not in out


def test_the_validator_counts_image_positions_from_the_vision_tower(tmp_path, tiny_checkpoints, validator):
    """The tiny CLIP tower puts 16 positions per image (32 px, patch 8, CLS dropped): a sample
    of about 40 positions fits 100, which the 576 of CLIP-L/336 would not."""
    llm, tower = tiny_checkpoints
    path, folder = write_dataset(tmp_path, [image_record(0, "red", "a.png")], {"a.png": "red"})
    common = ["--data_path", path, "--image_folder", folder, "--tokenizer", llm, "--model_max_length", "100"]
    status, out = validator([*common, "--vision_tower", tower])
    assert status == 0, out
    assert f"16 positions per image (from --vision_tower {tower})" in out

    status, out = validator(common)  # no tower: the named default
    assert status == 1 and "images expanded to 576 each" in out and "counting 576 positions per image" in out
    with pytest.raises(SystemExit):
        validator([*common, "--vision_tower", tower, "--num_image_tokens", "576"])


def test_strict_data_checks_every_record_before_training(tmp_path, tokenizer, image_processor):
    """Under strict, over-length, masking and unreadable-image records fail when the dataset is
    built (not when drawn), naming the record; without strict they are still found when drawn."""
    records = [
        image_record(0, "red", "a.png"),
        text_record(1),
        image_record(2, "red", "bad.png"),
        _long_record(3),
    ]
    path, folder = write_dataset(tmp_path, records, {"a.png": "red"})
    Path(folder, "bad.png").write_bytes(b"not a png")
    with pytest.raises(BadSampleError, match=r"record 2 \(id 'img-2'\): .*bad.png.*unreadable_image"):
        make_dataset(path, folder, tokenizer, image_processor, strict=True, max_length=100)
    shutil.copy(Path(folder, "a.png"), Path(folder, "bad.png"))  # every image good now; record 3 is too long
    with pytest.raises(BadSampleError, match=r"record 3 \(id 'img-3'\): .* > model_max_length 100"):
        make_dataset(path, folder, tokenizer, image_processor, strict=True, max_length=100)
    assert len(make_dataset(path, folder, tokenizer, image_processor, max_length=100)) == 4
