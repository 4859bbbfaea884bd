"""The catalog: shipped models, request validation, file rules, signatures, cost, image target."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from batchgen.job import catalog
from batchgen.job.catalog import (
    MB,
    Catalog,
    ReferenceInfo,
    aspect_of,
)
from batchgen.job.filetypes import kind_of_mime, sniff_mime

CAT = Catalog.default()
PNG_REF = ReferenceInfo(kind="image", mime_type="image/png", size=1000, name="a.png")


def rules(violations: list) -> set[tuple[str, str]]:
    return {(v.field, v.rule) for v in violations}


def image_bytes(fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (4, 4), (1, 2, 3)).save(buf, format=fmt)
    return buf.getvalue()


# --------------------------------------------------------------------------- the shipped catalog


def test_shipped_payload_is_the_models_endpoint_shape() -> None:
    payload = CAT.to_api()
    raw = json.loads((Path(catalog.__file__).parent.parent / "data" / "models.json").read_text())
    assert payload == raw
    assert payload["object"] == "list"
    ids = [e["id"] for e in payload["data"]]
    for model_id in (
        "qwen-image",
        "qwen2-image",
        "z-image",
        "nano-banana",
        "nano-banana-2",
        "nano-banana-pro",
        "veo3-1-fast",
        "veo3-1-lite",
    ):
        assert model_id in ids
    for entry in payload["data"]:
        for key in (
            "id",
            "display_name",
            "category",
            "runtime",
            "base_credits",
            "billing_type",
            "max_prompt_length",
            "params",
            "api_status",
            "api_input_status",
            "supported_api_inputs",
            "requires_files_api",
            "file_kinds",
            "reference_media",
        ):
            assert key in entry, (entry["id"], key)
    payload["data"].clear()  # to_api returns a copy
    assert CAT.to_api()["data"]


def test_qwen_image_spec() -> None:
    m = CAT.get("qwen-image")
    assert m is not None
    assert (m.base_credits, m.billing_type, m.max_prompt_length, m.prompt_required) == (
        4,
        "FIXED",
        5000,
        True,
    )
    assert set(m.params) == {"image_size", "output_format"}
    size = m.params["image_size"]
    assert size.type == "select" and size.default == "square_hd"
    assert size.options == (
        "square",
        "square_hd",
        "portrait_4_3",
        "portrait_16_9",
        "landscape_4_3",
        "landscape_16_9",
    )
    assert m.params["output_format"].options == ("png", "jpeg")
    assert m.params["output_format"].default == "png"
    assert m.reference is not None
    assert m.reference.max_files == 1
    assert m.reference.kinds == frozenset({"image"})
    assert m.reference.mime_types == frozenset({"image/jpeg", "image/png", "image/webp"})
    assert m.reference.max_bytes == 10 * MB == 10_000_000


def test_qwen2_image_spec() -> None:
    m = CAT.get("qwen2-image")
    assert m is not None
    assert (m.base_credits, m.max_prompt_length) == (6, 800)
    assert m.params["image_size"].default == "16:9"
    assert m.params["image_size"].options == ("1:1", "3:4", "4:3", "9:16", "16:9")
    seed = m.params["seed"]
    assert seed.type == "number" and seed.integer and seed.minimum == 0 and not seed.required
    assert m.params["nsfw_checker"].options == ("false", "true")
    assert m.params["nsfw_checker"].default == "false"
    assert m.reference is not None and m.reference.max_files == 1


def test_other_documented_models_credits() -> None:
    expected = {
        "z-image": 1,
        "nano-banana": 3,
        "nano-banana-2": 5,
        "nano-banana-pro": 8,
        "veo3-1-fast": 20,
        "veo3-1-lite": 10,
    }
    for model_id, credits in expected.items():
        assert CAT.cost(model_id, {}) == credits
    z = CAT.get("z-image")
    assert z is not None and z.max_prompt_length == 1000 and "aspect_ratio" in z.params
    assert z.reference is None
    assert CAT.get("veo3-1-fast").category == "video"  # type: ignore[union-attr]


DOCUMENTED = ("qwen-image", "qwen2-image")


def test_shipped_params_the_docs_do_not_state_are_unknown_and_sent_unchecked() -> None:
    for model_id in CAT.ids():
        spec = CAT.get(model_id)
        assert spec is not None
        if model_id in DOCUMENTED:
            assert spec.params_known and all(p.known for p in spec.params.values()), model_id
            continue
        assert not spec.params_known, model_id
        assert not any(p.known for p in spec.params.values()), model_id
        # Any key, any value: sent as given, the service decides.
        assert CAT.validate(model_id, "p", {"aspectRatio": "21:9", "steps": 80}) == []
    assert CAT.validate("z-image", "p", {"aspect_ratio": "21:9"}) == []
    assert CAT.validate("z-image", "x" * 1001, {}) != []  # its documented prompt limit holds
    # The two documented models stay fully checked.
    assert rules(CAT.validate("qwen-image", "p", {"steps": 80})) == {
        ("params.steps", "unknown_param")
    }
    assert rules(CAT.validate("qwen2-image", "p", {"image_size": "21:9"})) == {
        ("params.image_size", "option")
    }


def test_a_live_catalog_is_checked_in_full() -> None:
    payload = CAT.to_api()
    for entry in payload["data"]:
        entry.pop("params_unknown", None)
        for param in entry["params"]:
            param.pop("unknown", None)
    live = Catalog.from_api(payload)
    assert rules(live.validate("nano-banana", "p", {"steps": 80})) == {
        ("params.steps", "unknown_param")
    }
    assert rules(live.validate("z-image", "p", {"aspect_ratio": "21:9"})) == {
        ("params.aspect_ratio", "option")
    }


def test_catalog_parse_is_strict_about_the_envelope(tmp_path: Path) -> None:
    for bad in ([], {"data": "x"}, {"object": "list"}, {"data": [{"name": "no id"}]}):
        with pytest.raises(catalog.CatalogError):
            Catalog.parse(bad)
    path = tmp_path / "models.json"
    path.write_text(json.dumps(CAT.to_api()), encoding="utf-8")
    pinned = Catalog.from_file(path)
    assert pinned.ids() == CAT.ids() and pinned.origin.source == "file"
    assert pinned.origin.describe(0) == f"catalog file {path} (pinned by --catalog)"
    repriced = pinned.with_prices({"qwen-image": 9})
    assert repriced.cost("qwen-image", {}) == 9 and repriced.cost("qwen2-image", {}) == 6
    assert repriced.origin == pinned.origin and CAT.cost("qwen-image", {}) == 4
    path.write_text("<html>", encoding="utf-8")
    with pytest.raises(catalog.CatalogError, match="not JSON"):
        Catalog.from_file(path)


def test_origin_says_how_old() -> None:
    origin = catalog.CatalogOrigin("cache", "http://x", fetched_at=1000.0)
    assert origin.describe(1030) == "cached catalog of http://x (fetched just now)"
    assert origin.describe(1000 + 7200) == "cached catalog of http://x (fetched 2.0 h ago)"
    assert origin.as_dict(1000 + 3 * 86400)["age_seconds"] == 3 * 86400
    assert origin.short(1000 + 3 * 86400) == "cached catalog, fetched 3.0 days ago"
    assert catalog.CatalogOrigin("shipped").as_dict(5)["fetched_at"] is None


def test_cost_of_seed_models_and_unknown_model() -> None:
    assert CAT.cost("qwen-image", {"image_size": "square"}) == 4
    assert CAT.cost("qwen2-image", {}) == 6
    with pytest.raises(KeyError):
        CAT.cost("nope", {})


def test_from_api_is_tolerant() -> None:
    payload = {
        "object": "list",
        "data": [
            {
                "id": "m1",
                "base_credits": "3",
                "future_field": {"x": 1},
                "params": [
                    {
                        "key": "size",
                        "type": "select",
                        "options": [{"value": "a"}, "b"],
                        "default": "a",
                    },
                    {"key": "steps", "type": "number", "min": 1, "max": 50, "integer": True},
                    {"nokey": True},
                    "garbage",
                ],
            },
            {"no_id": True},
            "garbage",
        ],
    }
    cat = Catalog.from_api(payload)
    assert cat.ids() == ["m1"]
    m = cat.get("m1")
    assert m is not None and m.base_credits == 3 and m.reference is None
    assert m.params["size"].options == ("a", "b")
    assert (m.params["steps"].minimum, m.params["steps"].maximum) == (1, 50)
    assert Catalog.from_api({}).ids() == []
    assert cat.get("qwen-image") is None


# --------------------------------------------------------------------------- validate


def test_documented_examples_are_valid() -> None:
    assert (
        CAT.validate(
            "qwen-image", "A cat", {"image_size": "landscape_16_9", "output_format": "jpeg"}
        )
        == []
    )
    assert (
        CAT.validate(
            "qwen2-image",
            "A cat",
            {"image_size": "1:1", "seed": 42, "nsfw_checker": "true", "output_format": "png"},
            [PNG_REF],
        )
        == []
    )
    assert CAT.validate("qwen2-image", "x" * 800, {"seed": 0}) == []


@pytest.mark.parametrize(
    ("model", "prompt", "params", "expected"),
    [
        ("nope", "p", {}, ("model", "unknown_model")),
        ("qwen-image", None, {}, ("prompt", "required")),
        ("qwen-image", "   ", {}, ("prompt", "required")),
        ("qwen-image", 5, {}, ("prompt", "type")),
        ("qwen-image", "x" * 5001, {}, ("prompt", "max_length")),
        ("qwen2-image", "x" * 801, {}, ("prompt", "max_length")),
        ("qwen-image", "p", {"seed": 1}, ("params.seed", "unknown_param")),
        ("qwen-image", "p", {"image_size": "16:9"}, ("params.image_size", "option")),
        ("qwen-image", "p", {"output_format": "webp"}, ("params.output_format", "option")),
        ("qwen2-image", "p", {"nsfw_checker": True}, ("params.nsfw_checker", "option")),
        ("qwen2-image", "p", {"seed": -1}, ("params.seed", "integer_min")),
        ("qwen2-image", "p", {"seed": 1.5}, ("params.seed", "integer_min")),
        ("qwen2-image", "p", {"seed": "7"}, ("params.seed", "integer_min")),
        ("qwen2-image", "p", {"seed": True}, ("params.seed", "integer_min")),
        ("qwen2-image", "p", "notadict", ("params", "type")),
    ],
)
def test_each_violation_names_field_and_rule(
    model: str, prompt: object, params: object, expected: tuple[str, str]
) -> None:
    found = CAT.validate(model, prompt, params, [])  # type: ignore[arg-type]
    assert expected in rules(found)
    for v in found:
        assert v.field in v.message and f"({v.rule})" in v.message


def test_reference_rules() -> None:
    two = [PNG_REF, PNG_REF]
    assert ("reference", "max_files") in rules(CAT.validate("qwen-image", "p", {}, two))
    video = ReferenceInfo(kind="video", mime_type="video/mp4", size=10)
    assert {("reference", "kind"), ("reference", "mime")} <= rules(
        CAT.validate("qwen-image", "p", {}, [video])
    )
    gif = ReferenceInfo(kind="image", mime_type="image/gif", size=10)
    assert rules(CAT.validate("qwen-image", "p", {}, [gif])) == {("reference", "mime")}
    unknown = ReferenceInfo(kind="image", mime_type=None, size=10)
    assert rules(CAT.validate("qwen-image", "p", {}, [unknown])) == {("reference", "mime")}
    big = ReferenceInfo(kind="image", mime_type="image/jpeg", size=10 * MB + 1)
    assert rules(CAT.validate("qwen-image", "p", {}, [big])) == {("reference", "max_bytes")}
    exact = ReferenceInfo(kind="image", mime_type="image/webp", size=10 * MB)
    assert CAT.validate("qwen-image", "p", {}, [exact]) == []
    assert rules(CAT.validate("z-image", "p", {}, [PNG_REF])) == {("reference", "max_files")}


def test_reference_param_key_is_not_an_unknown_param() -> None:
    params = {"referenceMediaItems": [{"url": "u", "kind": "image"}]}
    assert CAT.validate("qwen-image", "p", params, [PNG_REF]) == []


def test_required_param_and_not_available() -> None:
    cat = Catalog.from_api(
        {
            "data": [
                {
                    "id": "m",
                    "api_status": "coming_soon",
                    "params": [{"key": "k", "type": "string", "required": True}],
                }
            ]
        }
    )
    assert rules(cat.validate("m", "p", {})) == {
        ("model", "not_available"),
        ("params.k", "required"),
    }


# --------------------------------------------------------------------------- normalize


def test_normalize_params() -> None:
    got = CAT.normalize_params(
        "qwen2-image",
        {
            "seed": "7",
            "nsfw_checker": True,
            "output_format": "JPEG",
            "image_size": "16:9",
            "extra": 1,
        },
    )
    assert got == {
        "seed": 7,
        "nsfw_checker": "true",
        "output_format": "jpeg",
        "image_size": "16:9",
        "extra": 1,
    }
    assert CAT.normalize_params("qwen2-image", {"seed": 7.0})["seed"] == 7
    assert CAT.normalize_params("qwen2-image", {"nsfw_checker": "True"})["nsfw_checker"] == "true"
    assert CAT.normalize_params("qwen2-image", {"seed": "abc"})["seed"] == "abc"
    assert CAT.normalize_params("qwen2-image", {"seed": ""}) == {}
    assert CAT.normalize_params("qwen2-image", {"seed": None}) == {}
    assert CAT.normalize_params("qwen2-image", {}) == {}
    assert CAT.normalize_params("unknown-model", {"a": True}) == {"a": True}


@given(
    seed=st.one_of(st.integers(min_value=0, max_value=2**31), st.integers(0, 2**31).map(str)),
    nsfw=st.sampled_from([True, False, "true", "false", "TRUE", "False"]),
    size=st.sampled_from(["1:1", "3:4", "4:3", "9:16", "16:9"]),
)
def test_normalized_valid_input_validates_and_is_stable(
    seed: object, nsfw: object, size: str
) -> None:
    params = {"seed": seed, "nsfw_checker": nsfw, "image_size": size}
    norm = CAT.normalize_params("qwen2-image", params)
    assert CAT.validate("qwen2-image", "p", norm) == []
    assert CAT.normalize_params("qwen2-image", norm) == norm


# --------------------------------------------------------------------------- files and signatures


@pytest.mark.parametrize(
    ("head", "mime"),
    [
        (b"\xff\xd8\xff\xe0\x00\x10JFIF\x00", "image/jpeg"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "image/png"),
        (b"RIFF\x10\x00\x00\x00WEBPVP8 ", "image/webp"),
        (b"GIF89a\x01\x00\x01\x00", "image/gif"),
        (b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00", "video/mp4"),
        (b"\x00\x00\x00\x14ftypqt  \x00\x00\x00\x00", "video/quicktime"),
        (b"\x00\x00\x00\x20ftypM4A \x00\x00\x00\x00", "audio/mp4"),
        (b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01\x42\xf7\x81\x01webm", "video/webm"),
        (b"ID3\x04\x00\x00\x00\x00\x00\x00", "audio/mpeg"),
        (b"\xff\xfb\x90\x64\x00", "audio/mpeg"),
        (b"\xff\xf1\x50\x80\x00", "audio/aac"),
        (b"RIFF\x24\x00\x00\x00WAVEfmt ", "audio/wav"),
        (b"OggS\x00\x02\x00\x00", "audio/ogg"),
        (b"hello, this is text", None),
        (b"", None),
    ],
)
def test_sniff_mime(head: bytes, mime: str | None) -> None:
    assert sniff_mime(head) == mime


def test_sniff_real_images() -> None:
    assert sniff_mime(image_bytes("PNG")[:16]) == "image/png"
    assert sniff_mime(image_bytes("JPEG")[:16]) == "image/jpeg"
    assert sniff_mime(image_bytes("WEBP")[:16]) == "image/webp"


def test_kind_of_mime() -> None:
    assert kind_of_mime("image/png") == "image"
    assert kind_of_mime("video/webm") == "video"
    assert kind_of_mime("audio/x-wav") == "audio"
    assert kind_of_mime("application/pdf") is None


def test_validate_file_default_limits() -> None:
    def check(kind: str, mime: str | None, size: int, model: str | None = None) -> set:
        return rules(CAT.validate_file(kind, ReferenceInfo(kind, mime, size), model))

    assert check("image", "image/png", 10 * MB) == set()
    assert check("image", "image/png", 10 * MB + 1) == {("file", "max_bytes")}
    assert check("video", "video/mp4", 50 * MB) == set()
    assert check("video", "video/mp4", 50 * MB + 1) == {("file", "max_bytes")}
    assert check("audio", "audio/wav", 10 * MB + 1) == {("file", "max_bytes")}
    assert check("audio", "audio/ogg", 100) == set()
    assert check("image", "image/gif", 100) == {("file", "mime")}
    assert check("image", None, 100) == {("file", "mime")}
    assert check("image", "video/mp4", 100) == {("file", "mime")}
    assert check("document", "image/png", 100) == {("kind", "kind")}
    assert check("image", "image/png", 0) == {("file", "empty")}
    # with a model: the model's own rules
    assert check("image", "image/jpeg", 100, "qwen-image") == set()
    assert check("video", "video/mp4", 100, "qwen-image") == {("kind", "kind")}
    assert check("image", "image/png", 100, "z-image") == {("model", "no_references")}
    assert check("image", "image/png", 100, "nope") == {("model", "unknown_model")}


# --------------------------------------------------------------------------- image target


@pytest.mark.parametrize(
    ("model", "params", "target"),
    [
        ("qwen-image", {}, ("1:1", "png")),
        ("qwen-image", {"image_size": "square"}, ("1:1", "png")),
        ("qwen-image", {"image_size": "portrait_4_3"}, ("3:4", "png")),
        ("qwen-image", {"image_size": "portrait_16_9"}, ("9:16", "png")),
        ("qwen-image", {"image_size": "landscape_4_3"}, ("4:3", "png")),
        ("qwen-image", {"image_size": "landscape_16_9", "output_format": "jpeg"}, ("16:9", "jpeg")),
        ("qwen2-image", {}, ("16:9", "png")),
        ("qwen2-image", {"image_size": "9:16", "output_format": "jpeg"}, ("9:16", "jpeg")),
        ("z-image", {"aspect_ratio": "4:3"}, ("4:3", "png")),
        ("nano-banana", {"aspectRatio": "3:4"}, ("3:4", "png")),
        ("unknown", {}, ("1:1", "png")),
    ],
)
def test_image_target(model: str, params: dict, target: tuple[str, str]) -> None:
    assert CAT.image_target(model, params) == target


def test_aspect_of() -> None:
    assert aspect_of("1920x1080") == "16:9"
    assert aspect_of("square_hd") == "1:1"
    assert aspect_of("0:1") is None
    assert aspect_of("weird") is None
    assert aspect_of(3) is None
