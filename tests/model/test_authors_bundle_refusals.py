"""Every refusal of the authors' bundle loader, one test each: a hand-written bundle, changed in
one place (and re-sealed where the change must get past the checksums), is refused with a
message naming the file (and the field or tensor)."""

from __future__ import annotations

import json
import re
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoConfig

from llava.cli_errors import UserError
from llava.model.formats.authors_bundle_load import open_bundle, read_authors_bundle
from llava.model.formats.authors_bundle_spec import BundleError
from tests.model.authors_bundle_helpers import (
    LANGUAGE_ID,
    add_to_cache,
    edit_json,
    random_delta,
    reseal,
    revision_of,
    tiny_spec,
    write_bundle,
)


@pytest.fixture(scope="module")
def pristine(tiny_hub, tmp_path_factory):
    spec = tiny_spec(tiny_hub)
    delta = random_delta(spec, AutoConfig.from_pretrained(tiny_hub.language))
    return write_bundle(tmp_path_factory.mktemp("pristine") / "bundle", spec, delta)


@pytest.fixture
def bundle(pristine, tmp_path):
    """A fresh copy of a valid bundle, to break."""
    return shutil.copytree(pristine, tmp_path / "bundle")


def _refused(folder, hub, match: str, **options) -> BundleError:
    with pytest.raises(BundleError, match=match) as caught:
        read_authors_bundle(
            folder, dtype=torch.float32, cache_dir=hub.cache, local_files_only=True, **options
        )
    assert isinstance(caught.value, UserError)  # a command ends on it with its message, no traceback
    return caught.value


def test_loads_unchanged(bundle, tiny_hub):
    """The copy the other tests break loads as it is."""
    assert read_authors_bundle(bundle, dtype=torch.float32, cache_dir=tiny_hub.cache, local_files_only=True)


def test_refuses_a_tampered_delta(bundle, tiny_hub):
    data = bytearray((bundle / "model_delta.safetensors").read_bytes())
    data[-1] ^= 1  # one bit of one tensor
    (bundle / "model_delta.safetensors").write_bytes(bytes(data))
    _refused(bundle, tiny_hub, r"model_delta\.safetensors: sha256 \w+ differs from \w+ in checksums\.sha256")


def test_refuses_tampered_metadata(bundle, tiny_hub):
    edit_json(bundle, "metadata.json", lambda m: m.update(base_model_revision=revision_of("other")))
    _refused(bundle, tiny_hub, r"metadata\.json: sha256 .* differs")


def test_refuses_a_bundle_without_complete(bundle, tiny_hub):
    (bundle / "COMPLETE").unlink()
    _refused(bundle, tiny_hub, r"COMPLETE is missing: the bundle is incomplete")


def test_refuses_a_complete_marker_with_other_text(bundle, tiny_hub):
    (bundle / "COMPLETE").write_text("complete")  # no final newline
    _refused(bundle, tiny_hub, r"COMPLETE holds 'complete', not 'complete\\n'")


def test_refuses_a_listed_file_that_is_missing(bundle, tiny_hub):
    (bundle / "metadata.json").unlink()
    _refused(bundle, tiny_hub, r"metadata\.json is missing, though checksums\.sha256 lists it")


def test_refuses_a_bundle_without_checksums(bundle, tiny_hub):
    (bundle / "checksums.sha256").unlink()
    _refused(bundle, tiny_hub, r"checksums\.sha256 is missing")


def test_refuses_checksums_that_omit_a_required_file(bundle, tiny_hub):
    lines = (bundle / "checksums.sha256").read_text().splitlines(keepends=True)
    (bundle / "checksums.sha256").write_text("".join(x for x in lines if "model_delta" not in x))
    _refused(
        bundle, tiny_hub, r"checksums\.sha256: omits the required file\(s\) \['model_delta\.safetensors'\]"
    )


def test_refuses_a_malformed_checksum_line(bundle, tiny_hub):
    text = (bundle / "checksums.sha256").read_text().replace("  COMPLETE", " COMPLETE")  # one space
    (bundle / "checksums.sha256").write_text(text)
    _refused(bundle, tiny_hub, r"checksums\.sha256: line 1 .* is not '<sha256>  <file name>'")


def test_refuses_checksums_that_list_themselves(bundle, tiny_hub):
    with (bundle / "checksums.sha256").open("a") as stream:
        stream.write(f"{'0' * 64}  checksums.sha256\n")
    _refused(bundle, tiny_hub, r"checksums\.sha256: lists itself")


@pytest.mark.parametrize("name", ["inverse_llava_config.json", "metadata.json"])
def test_refuses_another_format(bundle, tiny_hub, name):
    edit_json(bundle, name, lambda value: value.update(format="invllava-hub-release-v2"))
    reseal(bundle)
    _refused(bundle, tiny_hub, rf"{re.escape(name)}: format is 'invllava-hub-release-v2', this loader reads")


def test_refuses_another_weights_file(bundle, tiny_hub):
    edit_json(bundle, "inverse_llava_config.json", lambda c: c.update(weights="model.safetensors"))
    reseal(bundle)
    _refused(bundle, tiny_hub, r"inverse_llava_config\.json: weights is 'model\.safetensors'")


@pytest.mark.parametrize("section", ["language", "vision"])
@pytest.mark.parametrize("revision", ["", "main", "pending-freeze"])
def test_refuses_an_unpinned_revision(bundle, tiny_hub, section, revision):
    edit_json(bundle, "inverse_llava_config.json", lambda c: c["model"][section].update(revision=revision))
    reseal(bundle)
    _refused(
        bundle, tiny_hub, rf"inverse_llava_config\.json: model\.{section}\.revision of .* is '{revision}'"
    )


def test_refuses_a_delta_whose_sha256_differs_from_metadata(bundle, tiny_hub):
    edit_json(bundle, "metadata.json", lambda m: m.update(model_delta_sha256="0" * 64))
    reseal(bundle, delta_record=False)
    _refused(bundle, tiny_hub, r"metadata\.json: model_delta_sha256 '0{64}' is not the sha256 of model_delta")


def test_refuses_metadata_without_the_base_verification(bundle, tiny_hub):
    edit_json(
        bundle, "metadata.json", lambda m: m["upstream_base_projection_verification"].update(status="skipped")
    )
    reseal(bundle)
    _refused(
        bundle, tiny_hub, r"metadata\.json: upstream_base_projection_verification does not record an exact"
    )


def test_refuses_metadata_recording_another_base(bundle, tiny_hub):
    edit_json(bundle, "metadata.json", lambda m: m.update(vision_model="openai/clip-vit-large-patch14-336"))
    reseal(bundle)
    _refused(bundle, tiny_hub, r"metadata\.json: vision_model = 'openai/clip-vit-large-patch14-336', but")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda m: m["fusion"].update(operator="add"), r"model\.fusion\.operator = 'add'"),
        (lambda m: m["fusion"].update(mapper_rank=256), r"model\.fusion\.mapper_rank = 256"),
        (lambda m: m["vision"].update(freeze=False), r"model\.vision\.freeze = False"),
        (lambda m: m["adaptation"].update(method="full"), r"model\.adaptation\.method = 'full'"),
        (lambda m: m.update(projector={"kind": "mlp2x_gelu"}), r"model\.projector is set"),
        (
            lambda m: m["fusion"].update(hidden_dim=4096),
            r"model\.fusion has unknown field\(s\) \['hidden_dim'\]",
        ),
        (lambda m: m["fusion"].pop("initialization_id"), r"model\.fusion lacks the required field"),
    ],
    ids=["operator", "mapper_rank", "trained_tower", "full_adaptation", "projector", "unknown", "required"],
)
def test_refuses_a_spec_it_does_not_build(bundle, tiny_hub, change, message):
    edit_json(bundle, "inverse_llava_config.json", lambda c: change(c["model"]))
    reseal(bundle)
    _refused(bundle, tiny_hub, r"inverse_llava_config\.json: " + message)


def test_refuses_a_pinned_revision_missing_from_the_cache(bundle, tiny_hub):
    """Offline, a revision the cache lacks is not replaced by another one."""
    edit_json(
        bundle,
        "inverse_llava_config.json",
        lambda c: c["model"]["language"].update(revision=revision_of("x")),
    )
    edit_json(bundle, "metadata.json", lambda m: m.pop("base_model_revision"))
    edit_json(
        bundle,
        "metadata.json",
        lambda m: m["upstream_base_projection_verification"].update(base_model_revision=revision_of("x")),
    )
    reseal(bundle)
    _refused(bundle, tiny_hub, rf"language model {LANGUAGE_ID}@{revision_of('x')}: not available")


def test_refuses_a_local_base_of_another_shape(bundle, tiny_hub, tmp_path):
    other = shutil.copytree(tiny_hub.language, tmp_path / "llm", symlinks=False)
    config = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 3}))
    _refused(bundle, tiny_hub, r"llm/config\.json: num_hidden_layers is 3, but .* records 4", language=other)


def test_refuses_a_cached_base_of_another_revision(bundle, tiny_hub, tmp_path):
    """A local folder in a Hugging Face cache says which revision it is: not the pinned one."""
    other = add_to_cache(tmp_path / "cache", LANGUAGE_ID, revision_of("newer"), tiny_hub.language)
    _refused(
        bundle,
        tiny_hub,
        rf"{revision_of('newer')}: is {LANGUAGE_ID}@{revision_of('newer')} .* pins",
        language=other,
    )


def _rewrite_delta(bundle, change) -> None:
    delta = load_file(bundle / "model_delta.safetensors")
    change(delta)
    save_file(delta, bundle / "model_delta.safetensors")
    reseal(bundle)


def test_refuses_a_delta_missing_a_tensor(bundle, tiny_hub):
    _rewrite_delta(bundle, lambda d: d.pop("language_model.model.layers.2.mlp.up_proj.lora_b.weight"))
    _refused(
        bundle,
        tiny_hub,
        r"model_delta\.safetensors: its tensors are not the spec's: 1 missing .*layers\.2\.mlp\.up_proj",
    )


def test_refuses_a_delta_holding_base_weights(bundle, tiny_hub):
    extra = "language_model.model.layers.0.self_attn.q_proj.weight"
    _rewrite_delta(bundle, lambda d: d.update({extra: torch.zeros(64, 64, dtype=torch.bfloat16)}))
    _refused(
        bundle, tiny_hub, r"model_delta\.safetensors: .* 1 unexpected .*layers\.0\.self_attn\.q_proj\.weight"
    )


def test_refuses_a_tensor_of_another_shape(bundle, tiny_hub):
    name = "language_model.model.layers.0.self_attn.fusion.scales.q"
    _rewrite_delta(bundle, lambda d: d.update({name: d[name].reshape(1)}))
    _refused(
        bundle,
        tiny_hub,
        r"model_delta\.safetensors: 1 tensor\(s\) have another shape: .*scales\.q \(1,\) \(expected \(\)\)",
    )


def test_refuses_metadata_listing_other_tensors(bundle, tiny_hub):
    edit_json(bundle, "metadata.json", lambda m: m.update(tensor_names=m["tensor_names"][1:]))
    reseal(bundle, delta_record=False)
    _refused(bundle, tiny_hub, r"metadata\.json: tensor_names are not the names of the tensors")


def _training_inputs(hub, language_revision: str) -> dict:
    """Their other provenance record (`export_training_checkpoint`): a run's pinned inputs."""
    return {
        "kind": "pinned-training-inputs",
        "checkpoint_inputs": {
            "language": f"{LANGUAGE_ID}@{language_revision}",
            "vision": f"tiny-org/tiny-clip@{hub.vision_revision}",
        },
        "integrity": {"complete": True},
        "resolved_config_sha256": "0" * 64,
    }


def test_accepts_pinned_training_inputs_as_provenance(bundle, tiny_hub):
    inputs = _training_inputs(tiny_hub, tiny_hub.language_revision)
    edit_json(bundle, "metadata.json", lambda m: m.update(training_provenance=inputs))
    edit_json(bundle, "metadata.json", lambda m: m.pop("upstream_base_projection_verification"))
    reseal(bundle)
    assert open_bundle(bundle, cache_dir=tiny_hub.cache, local_files_only=True)


def test_refuses_training_inputs_of_another_base(bundle, tiny_hub):
    inputs = _training_inputs(tiny_hub, revision_of("other"))
    edit_json(bundle, "metadata.json", lambda m: m.update(training_provenance=inputs))
    reseal(bundle)
    _refused(bundle, tiny_hub, r"metadata\.json: training_provenance disagrees with the spec's pinned inputs")
