"""The teacher in ONNX Runtime (bert2lr.onnx_teacher) against torch, on the tiny random BERTs of conftest."""

from __future__ import annotations

import random

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from bert2lr import onnx_teacher
from bert2lr.bert import load_fine_tuned, predict_logits
from bert2lr.errors import UserError
from bert2lr.params import TeacherParams
from conftest import CLASSIFIER_ORDER, review


def reviews(n: int = 30) -> list[str]:
    """Reviews of every length: short ones, ones cut head+tail at max_length 32, an empty one, one word."""
    rng = random.Random(7)
    return [" ".join(review(rng, i % 2 == 0) for _ in range(rng.randint(1, 4))) for i in range(n)] + ["", "great"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_bert, tiny_classifier):
    """{teacher folder: its fp32 ONNX file}, exported once for the module."""
    out = tmp_path_factory.mktemp("onnx")
    return {folder: onnx_teacher.export_onnx(folder, out / f"{folder.name}.onnx")
            for folder in (tiny_bert, tiny_classifier)}


def both(folder, onnx_file, texts, batch_size=8):
    """Torch's logits and ONNX Runtime's, with the same encoding and batches (head+tail at 32 tokens)."""
    p = TeacherParams(model=str(folder), max_length=32, truncation="head+tail", head_tokens=12)
    tokenizer, model = load_fine_tuned(folder)
    torch_logits = predict_logits(tokenizer, model, texts, p, batch_size)
    ort_logits = onnx_teacher.predict_logits(tokenizer, onnx_teacher.load_session(onnx_file), texts, p, batch_size)
    return torch_logits, ort_logits


def test_fp32_logits_equal_torch(exported, tiny_bert):
    texts = reviews()
    torch_logits, ort_logits = both(tiny_bert, exported[tiny_bert], texts)
    assert ort_logits.shape == (len(texts), 2) and ort_logits.dtype == np.float32
    # measured: max |difference| 4.7e-9 on this tiny model (7.5e-9 for K=3; 5.8e-6 on the fine-tuned
    # MiniLM teacher over 600 IMDB reviews), row for row in the input order
    np.testing.assert_allclose(ort_logits, torch_logits, rtol=0, atol=1e-4)
    assert onnx_teacher.agreement(torch_logits, ort_logits)["label_agreement"] == 1.0


def test_dynamic_axes_take_one_review_and_other_batch_sizes(exported, tiny_bert):
    """The export's example was a batch of 2 of 6 tokens: batch 1, batch 5 and 32 tokens run too."""
    texts = reviews(9)
    torch_logits, _ = both(tiny_bert, exported[tiny_bert], texts)
    for batch_size in (1, 5):
        _, ort_logits = both(tiny_bert, exported[tiny_bert], texts, batch_size)
        np.testing.assert_allclose(ort_logits, torch_logits, rtol=0, atol=1e-4)


def test_three_classes(exported, tiny_classifier):
    texts = reviews()
    torch_logits, ort_logits = both(tiny_classifier, exported[tiny_classifier], texts)
    assert ort_logits.shape == (len(texts), len(CLASSIFIER_ORDER))
    np.testing.assert_allclose(ort_logits, torch_logits, rtol=0, atol=1e-4)


@pytest.mark.parametrize("options", [{}, {"per_channel": True}, {"per_channel": True, "keep_fp32": ("ffn_output",)}],
                         ids=["per-tensor", "per-channel", "per-channel-fp32-ffn-output"])
def test_int8_gives_finite_logits(exported, tiny_classifier, tmp_path, options):
    int8 = onnx_teacher.quantize(exported[tiny_classifier], tmp_path / "int8.onnx", **options)
    ops = {node.op_type for node in onnx.load(str(int8)).graph.node}
    assert ops & {"MatMulInteger", "DynamicQuantizeMatMul"}, ops  # it is quantised
    texts = reviews()
    torch_logits, int8_logits = both(tiny_classifier, int8, texts)
    assert int8_logits.shape == (len(texts), 3)
    assert np.isfinite(int8_logits).all()


def test_keep_fp32_names_the_layers_of_its_groups(exported, tiny_bert, tmp_path):
    ffn = onnx_teacher.linear_nodes(exported[tiny_bert], ("ffn_output",))
    attention = onnx_teacher.linear_nodes(exported[tiny_bert], ("attention_output",))
    assert len(ffn) == len(attention) == 2  # one per layer of the 2-layer BERT
    assert not set(ffn) & set(attention)
    int8 = onnx_teacher.quantize(exported[tiny_bert], tmp_path / "int8.onnx", keep_fp32=("ffn_output",))
    fp32_matmuls = {node.name for node in onnx.load(str(int8)).graph.node if node.op_type == "MatMul"}
    assert set(ffn) <= fp32_matmuls and not set(attention) & fp32_matmuls
    with pytest.raises(UserError, match="unknown layer group 'embeddings'"):
        onnx_teacher.linear_nodes(exported[tiny_bert], ("embeddings",))


def assert_one_line(exc: pytest.ExceptionInfo, *fragments):
    message = str(exc.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message


@pytest.mark.parametrize("damage", ["cut", "garbage", "empty"])
def test_damaged_onnx_file_is_one_user_error_line(exported, tiny_bert, tmp_path, damage):
    data = exported[tiny_bert].read_bytes()
    damaged = tmp_path / "model.onnx"
    damaged.write_bytes({"cut": data[: len(data) // 2], "garbage": b"\x00not a model\xff" * 100, "empty": b""}[damage])
    with pytest.raises(UserError) as exc:
        onnx_teacher.load_session(damaged)
    assert_one_line(exc, str(damaged), "not a readable ONNX model")
    with pytest.raises(UserError) as exc:  # quantising it fails the same way, before onnx's own parser
        onnx_teacher.quantize(damaged, tmp_path / "int8.onnx")
    assert_one_line(exc, str(damaged), "not a readable ONNX model")
    assert not (tmp_path / "int8.onnx").exists()


def test_missing_and_foreign_onnx_files(tmp_path):
    with pytest.raises(UserError) as exc:
        onnx_teacher.load_session(tmp_path / "nowhere.onnx")
    assert_one_line(exc, "nowhere.onnx", "ONNX teacher not found")
    # a valid ONNX model that is not a teacher: one input x, one output y
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "identity",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    foreign = tmp_path / "identity.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(foreign))
    with pytest.raises(UserError) as exc:
        onnx_teacher.load_session(foreign)
    assert_one_line(exc, "identity.onnx", "expected inputs input_ids and attention_mask")


def test_export_of_a_missing_teacher_folder(tmp_path):
    with pytest.raises(UserError, match="teacher folder not found"):
        onnx_teacher.export_onnx(tmp_path / "no-teacher", tmp_path / "model.onnx")
    assert not (tmp_path / "model.onnx").exists()


def test_export_is_the_same_file_every_time(exported, tiny_bert, tmp_path):
    """A cached stage output: exporting the same teacher again gives the same bytes (no paths, no times)."""
    again = onnx_teacher.export_onnx(tiny_bert, tmp_path / "again.onnx")
    assert again.read_bytes() == exported[tiny_bert].read_bytes()
    assert str(tiny_bert).encode() not in again.read_bytes()
