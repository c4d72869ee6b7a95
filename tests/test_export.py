"""Issue #2: ``fastdpr export`` turns DPR pairs (and shared encoders) into validated ONNX artifacts.

Tiny random checkpoints cover each kind of source in a few seconds each: DPR with and without a
projection, both token-types conventions, a shared plain-BERT encoder. The real all-MiniLM-L6-v2, as
itself and converted to a DPR pair, is marked slow (it still runs in CI). Every check is about
behaviour: files, manifest numbers, ONNX graph signatures, embeddings compared with PyTorch computed
here independently of the exporter, errors and exit codes.
"""

from __future__ import annotations

import hashlib
import json
import platform
import shutil
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner, Result
from conftest import DemoRun, export, make_tiny_dpr, read_manifest, require_export

from fastdpr.cli.main import main
from fastdpr.common.errors import ArtifactError, ExportError, ValidationError
from fastdpr.model.artifact import Artifact
from fastdpr_export.quantize import DEFAULT_RECIPE, RECIPES

require_export()

TINY_LAYERS = 2
TINY_HIDDEN = 32
PROJECTION_DIM = 16
FP32_MIN_COSINE = 0.9999
MODEL_FILES = ("model.onnx", "model.int8.onnx", "tokenizer.json")
PROBE_FILES = ("probes/questions.jsonl", "probes/passages.jsonl", "probes/question.npy", "probes/context.npy")
QUESTIONS = [
    "who wrote the python language reference?",
    "what does the with statement do?",
    "how are default argument values evaluated when a function is defined in a module?",
    "¿qué es un generador?",
]
# Titled passages are encoded as (title, text) pairs, untitled ones as the text alone.
PASSAGES = [
    ("The with statement", "The with statement wraps a block with methods defined by a context manager."),
    ("Generators", "A generator function returns an iterator; yield suspends it and returns a value."),
    ("Default values", "Default parameter values are evaluated once, when the function definition runs."),
    ("", "A passage without a title is encoded from its text alone."),
]


# ---------------------------------------------------------------------------------------------- helpers


def _tokenizer_source() -> Path:
    from fastdpr_export.sources import packaged_minilm_dir

    return packaged_minilm_dir()


def make_dpr(directory: Path, side: str, projection_dim: int, seed: int, initializer_range: float = 0.2) -> Path:
    """A tiny random DPR encoder. Unlike ``make_tiny_dpr`` (initializer_range 0.02, whose embeddings are
    almost collinear: pairwise cosine > 0.9999), weights drawn with std 0.2 give embeddings whose
    rankings mean something, so int8's retrieval agreement with fp32 is measurable."""
    import torch
    from transformers import BertTokenizerFast, DPRConfig, DPRContextEncoder, DPRQuestionEncoder

    torch.manual_seed(seed)
    config = DPRConfig(vocab_size=30522, hidden_size=TINY_HIDDEN, num_hidden_layers=TINY_LAYERS,
                       num_attention_heads=4, intermediate_size=64, projection_dim=projection_dim,
                       max_position_embeddings=512, initializer_range=initializer_range)
    model = DPRQuestionEncoder(config) if side == "question" else DPRContextEncoder(config)
    model.eval().save_pretrained(directory)
    BertTokenizerFast.from_pretrained(_tokenizer_source()).save_pretrained(directory)
    return directory


def make_bert(directory: Path, seed: int) -> Path:
    """A tiny random plain ``BertModel`` checkpoint (the kind a siamese bi-encoder is)."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    torch.manual_seed(seed)
    config = BertConfig(vocab_size=30522, hidden_size=TINY_HIDDEN, num_hidden_layers=TINY_LAYERS,
                        num_attention_heads=4, intermediate_size=64, max_position_embeddings=512,
                        initializer_range=0.2)
    BertModel(config).eval().save_pretrained(directory)
    BertTokenizerFast.from_pretrained(_tokenizer_source()).save_pretrained(directory)
    return directory


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity."""
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    return np.einsum("ij,ij->i", a64, b64) / (np.linalg.norm(a64, axis=1) * np.linalg.norm(b64, axis=1))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def files_on_disk(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()} - {"manifest.json"}


def leftovers(parent: Path, name: str) -> list[str]:
    """Staging or backup directories an export may have left next to its target."""
    return sorted(p.name for p in parent.iterdir() if p.name.startswith(f".{name}."))


def invoke(args: list[str]) -> Result:
    return CliRunner().invoke(main, args, catch_exceptions=True)


def assert_clean_cli_failure(result: Result, *needles: str, codes: tuple[int, ...] = (1,)) -> None:
    """A user error: the given exit code, a readable message containing ``needles``, no traceback."""
    assert result.exit_code in codes, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in result.output, result.output


def torch_embed(model: Any, tokenizer: Any, inputs: list[str] | list[tuple[str, str]], max_length: int,
                zero_token_types: bool = False, pooling: str = "pooler", normalize: bool = False) -> np.ndarray:
    """Embeddings computed here, by Hugging Face as users run it (not by fastdpr_export's code)."""
    import torch

    if inputs and isinstance(inputs[0], tuple):
        # DPR: a (title, text) pair when there is a title, the text alone otherwise; one at a time.
        rows = [tokenizer(t, x, truncation=True, max_length=max_length, return_tensors="pt") if t
                else tokenizer(x, truncation=True, max_length=max_length, return_tensors="pt") for t, x in inputs]
    else:
        rows = [tokenizer(q, truncation=True, max_length=max_length, return_tensors="pt") for q in inputs]
    out = []
    with torch.no_grad():
        for batch in rows:
            if zero_token_types:
                batch["token_type_ids"] = torch.zeros_like(batch["token_type_ids"])
            result = model(**batch)
            if pooling == "pooler":
                vector = result.pooler_output
            elif pooling == "cls":
                vector = result.last_hidden_state[:, 0]
            else:
                mask = batch["attention_mask"].unsqueeze(-1).float()
                vector = (result.last_hidden_state * mask).sum(1) / mask.sum(1)
            if normalize:
                vector = torch.nn.functional.normalize(vector, dim=-1)
            out.append(vector[0].numpy())
    return np.stack(out)


def check_graph(path: Path, dim: int) -> None:
    """Inputs input_ids/attention_mask/token_type_ids (int64, dynamic batch and sequence), one output
    ``embedding`` declared [batch, dim]; and it really runs at two different batch/sequence shapes."""
    import onnx
    import onnxruntime as ort

    graph = onnx.load(str(path)).graph
    initializers = {i.name for i in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializers]
    assert [i.name for i in inputs] == ["input_ids", "attention_mask", "token_type_ids"]
    for tensor in inputs:
        assert tensor.type.tensor_type.elem_type == onnx.TensorProto.INT64
        dims = tensor.type.tensor_type.shape.dim
        assert len(dims) == 2 and all(d.dim_param and not d.dim_value for d in dims), (tensor.name, dims)
        assert dims[0].dim_param != dims[1].dim_param
    assert [o.name for o in graph.output] == ["embedding"]
    out = graph.output[0].type.tensor_type
    assert out.elem_type == onnx.TensorProto.FLOAT
    assert out.shape.dim[0].dim_param and not out.shape.dim[0].dim_value
    assert out.shape.dim[1].dim_value == dim, out.shape.dim[1]

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch, length in ((3, 7), (1, 40)):
        ids = np.full((batch, length), 1037, dtype=np.int64)
        ids[:, 0], ids[:, -1] = 101, 102
        feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
        (embedding,) = session.run(["embedding"], feeds)
        assert embedding.shape == (batch, dim)


def check_tokenizer_files(root: Path, dirs: tuple[str, ...]) -> None:
    """The artifact's tokenizer.json imposes no padding or truncation of its own."""
    from tokenizers import Tokenizer

    for name in dirs:
        data = json.loads((root / name / "tokenizer.json").read_text(encoding="utf-8"))
        assert data["padding"] is None and data["truncation"] is None
        assert len(Tokenizer.from_file(str(root / name / "tokenizer.json")).encode("what is a tuple?").ids) < 10


def check_integrity(root: Path) -> None:
    """Every file on disk is listed with its real sha256 and size, and nothing listed is absent."""
    files = read_manifest(root)["files"]
    assert isinstance(files, dict)
    assert set(files) == files_on_disk(root)
    for rel, entry in files.items():
        assert entry["sha256"] == sha256(root / rel), rel
        assert entry["bytes"] == (root / rel).stat().st_size, rel


def check_validation(manifest: dict[str, Any], sides_expected: tuple[str, ...] = ("question", "context")) -> None:
    """fp32 and fused reproduce PyTorch (min cosine >= 0.9999) on every side; int8 beats its threshold."""
    validation = manifest["validation"]
    assert validation["passed"] is True
    int8_threshold = validation["thresholds"]["int8"]["min_cosine"]
    assert 0.95 <= int8_threshold < 1.0  # a threshold that means something
    for stage in ("fp32", "fused", "int8"):
        assert set(validation["stages"][stage]) == set(sides_expected)
        for numbers in validation["stages"][stage].values():
            floor = int8_threshold if stage == "int8" else FP32_MIN_COSINE
            assert numbers["min_cosine"] >= floor, (stage, numbers)
            assert numbers["mean_cosine"] >= numbers["min_cosine"]
            assert numbers["passed"] is True
    for parity in validation["tokenizer_parity"].values():
        assert parity["equal"] == parity["total"] > 0
    assert validation["int8_retrieval_agreement"]["recall_at_k"] >= \
        validation["thresholds"]["int8_retrieval_recall_at_10"]


def check_probes(root: Path, manifest: dict[str, Any], dim: int) -> None:
    questions = (root / "probes" / "questions.jsonl").read_text(encoding="utf-8").splitlines()
    passages = (root / "probes" / "passages.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(questions) == manifest["probes"]["questions"] >= 32
    assert len(passages) == manifest["probes"]["passages"] >= 128
    for side, count in (("question", len(questions)), ("context", len(passages))):
        reference = np.load(root / "probes" / f"{side}.npy", allow_pickle=False)
        assert reference.shape == (count, dim) and reference.dtype == np.float32
        assert np.isfinite(reference).all()


def check_versions(manifest: dict[str, Any]) -> None:
    versions = manifest["versions"]
    assert versions["python"] == platform.python_version()
    for package in ("fastdpr", "torch", "transformers", "onnx", "onnxruntime", "tokenizers", "numpy"):
        assert versions[package] == metadata.version(package), package


def pair_layout(recipe_files: tuple[str, ...] = MODEL_FILES) -> set[str]:
    return {f"{side}/{name}" for side in ("question", "context") for name in recipe_files} | set(PROBE_FILES)


def openvino_layout(directory: str) -> set[str]:
    """The OpenVINO passage graph a default export adds where the openvino extra is installed (as in CI)."""
    from fastdpr_export.openvino_backend import openvino_export_available

    if not openvino_export_available():
        return set()
    return {f"{directory}/model.int8.openvino.{ext}" for ext in ("xml", "bin")}


# ---------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def projection_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny DPR pair with ``projection_dim=16`` (embedding = encode_proj(CLS))."""
    root = tmp_path_factory.mktemp("tiny-proj")
    return (make_dpr(root / "q", "question", PROJECTION_DIM, seed=11),
            make_dpr(root / "c", "context", PROJECTION_DIM, seed=12))


@pytest.fixture(scope="session")
def projection_artifact(tmp_path_factory: pytest.TempPathFactory, projection_pair: tuple[Path, Path]) -> Path:
    """The projection pair with the DPR defaults (token types ``zeros``)."""
    q, c = projection_pair
    return export(tmp_path_factory.mktemp("art") / "proj-zeros", question_encoder=str(q), context_encoder=str(c))


@pytest.fixture(scope="session")
def projection_pair_types_artifact(tmp_path_factory: pytest.TempPathFactory,
                                   projection_pair: tuple[Path, Path]) -> Path:
    """The same pair exported with ``--token-types pair``."""
    q, c = projection_pair
    return export(tmp_path_factory.mktemp("art") / "proj-pair", question_encoder=str(q), context_encoder=str(c),
                  token_types="pair")


@pytest.fixture(scope="session")
def shared_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tiny plain BERT serving both sides (``--encoder``)."""
    root = tmp_path_factory.mktemp("tiny-bert")
    return export(root / "shared", encoder=str(make_bert(root / "bert", seed=21)))


@pytest.fixture(scope="session")
def minilm_artifact(demo_run: DemoRun) -> Path:
    """The packaged all-MiniLM-L6-v2 exported as itself (sentence-transformers, shared encoder, the default
    recipe): the artifact ``fastdpr demo`` exported (conftest's ``demo_run``; tests/test_readme.py checks the
    demo's answers), so CI exports this real model once, not once per test file."""
    return demo_run.artifact


# ------------------------------------------------------------------------------------ tiny DPR pairs


def test_tiny_pair_artifact_layout_manifest_and_graphs(tiny_artifact: Path, tiny_dpr_pair: tuple[Path, Path]) -> None:
    import onnx

    manifest: Any = read_manifest(tiny_artifact)
    assert {p.name for p in tiny_artifact.iterdir()} == {"question", "context", "probes", "manifest.json"}
    assert files_on_disk(tiny_artifact) == pair_layout()
    assert manifest["format"] == "fastdpr-artifact" and manifest["format_version"] == 1
    assert manifest["spec"] == {"dim": TINY_HIDDEN, "pooling": "cls", "normalize": False, "token_types": "zeros",
                                "question_max_length": 64, "passage_max_length": 256, "lowercase": True,
                                "pad_token_id": 0, "similarity": "dot"}
    sides = manifest["sides"]
    for side, source, cls in (("question", tiny_dpr_pair[0], "DPRQuestionEncoder"),
                              ("context", tiny_dpr_pair[1], "DPRContextEncoder")):
        assert sides[side]["dir"] == side
        assert sides[side]["tokenizer"] == f"{side}/tokenizer.json"
        assert sides[side]["models"] == {"fp32": f"{side}/model.onnx", "int8": f"{side}/model.int8.onnx"}
        assert sides[side]["source"]["source"] == str(source)
        assert sides[side]["source"]["kind"] == "dpr"
        assert sides[side]["source"]["class"] == cls
        # int8 weights (on this tiny model the fp32 embedding tables, not the layers, make most of the file).
        int8_weights = [init for init in onnx.load(str(tiny_artifact / side / "model.int8.onnx")).graph.initializer
                        if init.data_type == onnx.TensorProto.INT8 and len(init.dims) == 2]
        assert int8_weights
        for model in ("model.onnx", "model.int8.onnx"):
            check_graph(tiny_artifact / side / model, TINY_HIDDEN)
    quantization = manifest["quantization"]
    assert quantization["recipe"] == DEFAULT_RECIPE
    assert quantization["settings"] == RECIPES[DEFAULT_RECIPE].settings()
    fusion = manifest["fusion"]
    assert set(fusion) == set(quantization["per_model"]) == {"question", "context"}
    for name in fusion:
        # CLS pooling: the last layer runs for the first token only, so only the others fuse to Attention.
        assert manifest["graph"][name] == {"layers": TINY_LAYERS, "final_layer": "first-token"}
        assert fusion[name]["Attention"] == TINY_LAYERS - 1
        assert fusion[name]["EmbedLayerNormalization"] == 1
        details = quantization["per_model"][name]
        kept_attention = [node for node in details.get("kept_fp32", {}) if node.startswith("Attention")]
        assert details["operators"].get("QAttention", 0) + len(kept_attention) == TINY_LAYERS - 1
        # The passage model's last-layer products of one row per input (query, attention output, FFN) stay
        # fp32, by name, beside the recipe's own count; the sensitivity pass never ranks them. The question
        # model ranks them like any other node (QuantRecipe.row_products_fp32).
        if name == "question":
            assert "row_products_fp32" not in details
            continue
        row_products = details["row_products_fp32"]
        assert len(row_products) == 4
        assert all(product.startswith(f"/backbone/encoder/layer.{TINY_LAYERS - 1}/") for product in row_products)
        assert not set(row_products) & set(details.get("kept_fp32", {}))
        int8_nodes = {n.name: n.op_type for n in onnx.load(str(tiny_artifact / name / "model.int8.onnx")).graph.node}
        assert all(int8_nodes.get(product) == "MatMul" for product in row_products)
        assert len(details.get("kept_fp32", {})) == RECIPES[DEFAULT_RECIPE].for_model(name == "context").keep_fp32
    check_validation(manifest)
    check_probes(tiny_artifact, manifest, TINY_HIDDEN)
    check_versions(manifest)
    check_integrity(tiny_artifact)
    check_tokenizer_files(tiny_artifact, ("question", "context"))


def test_projection_pair_has_projected_dim(projection_artifact: Path, projection_pair: tuple[Path, Path]) -> None:
    manifest: Any = read_manifest(projection_artifact)
    assert manifest["spec"]["dim"] == PROJECTION_DIM
    assert manifest["spec"]["token_types"] == "zeros"
    assert files_on_disk(projection_artifact) == pair_layout()
    assert [manifest["sides"][s]["source"]["class"] for s in ("question", "context")] == \
        ["DPRQuestionEncoder", "DPRContextEncoder"]
    assert manifest["sides"]["question"]["source"]["config"]["projection_dim"] == PROJECTION_DIM
    for side in ("question", "context"):
        for model in ("model.onnx", "model.int8.onnx"):
            check_graph(projection_artifact / side / model, PROJECTION_DIM)
        assert manifest["fusion"][side]["Attention"] == TINY_LAYERS - 1  # the last layer: first token only
    check_validation(manifest)
    check_probes(projection_artifact, manifest, PROJECTION_DIM)
    check_integrity(projection_artifact)
    artifact = Artifact.load(projection_artifact)
    assert artifact.encoder("question", "int8").encode(QUESTIONS).shape == (len(QUESTIONS), PROJECTION_DIM)


def test_runtime_reproduces_independent_pytorch(projection_artifact: Path, projection_pair: tuple[Path, Path]) -> None:
    """DPRQuestionEncoder/DPRContextEncoder ``pooler_output`` computed here (AutoTokenizer, one input at a time)
    against the runtime: fp32 to 1e-4 cosine, int8 within the manifest's threshold."""
    from transformers import AutoTokenizer, DPRContextEncoder, DPRQuestionEncoder

    artifact = Artifact.load(projection_artifact)
    int8_threshold = artifact.manifest["validation"]["thresholds"]["int8"]["min_cosine"]
    q_dir, c_dir = projection_pair
    expected = {
        "question": torch_embed(DPRQuestionEncoder.from_pretrained(q_dir).eval(),
                                AutoTokenizer.from_pretrained(q_dir), QUESTIONS, 64),
        # DPR's own convention (the default spec): zero token types for the text segment too.
        "context": torch_embed(DPRContextEncoder.from_pretrained(c_dir).eval(),
                               AutoTokenizer.from_pretrained(c_dir), PASSAGES, 256, zero_token_types=True),
    }
    for side, inputs in (("question", QUESTIONS), ("context", PASSAGES)):
        assert expected[side].shape == (len(inputs), PROJECTION_DIM)
        fp32 = artifact.encoder(side, "fp32").encode(inputs)
        int8 = artifact.encoder(side, "int8").encode(inputs)
        assert cosines(fp32, expected[side]).min() >= FP32_MIN_COSINE, side
        np.testing.assert_allclose(fp32, expected[side], atol=1e-4)
        assert cosines(int8, expected[side]).min() >= int8_threshold, side
        assert not np.array_equal(int8, fp32)  # int8 really is a different model


def test_token_types_zeros_and_pair_differ_only_on_titled_passages(
        projection_artifact: Path, projection_pair_types_artifact: Path, projection_pair: tuple[Path, Path]) -> None:
    from transformers import AutoTokenizer, DPRContextEncoder

    zeros, pair = Artifact.load(projection_artifact), Artifact.load(projection_pair_types_artifact)
    assert zeros.spec.token_types == "zeros" and pair.spec.token_types == "pair"
    manifest: Any = read_manifest(projection_pair_types_artifact)
    assert manifest["spec"]["token_types"] == "pair"
    check_validation(manifest)
    # Questions are one segment: both conventions give them type 0 everywhere.
    np.testing.assert_allclose(zeros.encoder("question", "fp32").encode(QUESTIONS),
                               pair.encoder("question", "fp32").encode(QUESTIONS), atol=1e-6)
    p_zeros = zeros.encoder("context", "fp32").encode(PASSAGES)
    p_pair = pair.encoder("context", "fp32").encode(PASSAGES)
    titled = [i for i, (title, _) in enumerate(PASSAGES) if title]
    untitled = [i for i, (title, _) in enumerate(PASSAGES) if not title]
    assert titled and untitled
    assert cosines(p_zeros[titled], p_pair[titled]).max() < 0.999
    np.testing.assert_allclose(p_zeros[untitled], p_pair[untitled], atol=1e-6)
    # "pair" is the Hugging Face tokenizer's own convention (1s for the text segment).
    c_dir = projection_pair[1]
    hf = torch_embed(DPRContextEncoder.from_pretrained(c_dir).eval(), AutoTokenizer.from_pretrained(c_dir),
                     PASSAGES, 256)
    assert cosines(p_pair, hf).min() >= FP32_MIN_COSINE


def test_shared_encoder_layout_and_manifest(shared_artifact: Path) -> None:
    manifest: Any = read_manifest(shared_artifact)
    assert {p.name for p in shared_artifact.iterdir()} == {"encoder", "probes", "manifest.json"}
    assert files_on_disk(shared_artifact) == {f"encoder/{name}" for name in MODEL_FILES} | set(PROBE_FILES)
    for side in ("question", "context"):
        entry = manifest["sides"][side]
        assert entry["dir"] == "encoder"
        assert entry["tokenizer"] == "encoder/tokenizer.json"
        assert entry["models"] == {"fp32": "encoder/model.onnx", "int8": "encoder/model.int8.onnx"}
        assert entry["source"]["class"] == "BertModel" and entry["source"]["kind"] == "bert"
    # A plain BertModel saved with its pooler: BERT's pooler (issue #12), the tokenizer's own token types.
    assert manifest["spec"]["pooling"] == "pooler" and manifest["spec"]["token_types"] == "pair"
    assert manifest["spec"]["dim"] == TINY_HIDDEN
    assert set(manifest["fusion"]) == {"encoder"}
    # The pooler reads the CLS vector only: the last layer runs for the first token.
    assert manifest["graph"]["encoder"] == {"layers": TINY_LAYERS, "final_layer": "first-token"}
    assert manifest["fusion"]["encoder"]["Attention"] == TINY_LAYERS - 1
    assert manifest["fusion"]["encoder"]["EmbedLayerNormalization"] == 1
    check_validation(manifest)
    check_integrity(shared_artifact)
    check_tokenizer_files(shared_artifact, ("encoder",))
    for model in ("model.onnx", "model.int8.onnx"):
        check_graph(shared_artifact / "encoder" / model, TINY_HIDDEN)
    artifact = Artifact.load(shared_artifact)
    assert artifact.shared_encoder
    # One model: a question and an untitled passage with the same text embed identically.
    text = "what does the with statement do?"
    np.testing.assert_allclose(artifact.encoder("question", "fp32").encode([text]),
                               artifact.encoder("context", "fp32").encode([("", text)]), atol=1e-6)


def test_tampered_or_missing_file_fails_to_load(tiny_artifact: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(tiny_artifact, copy)
    Artifact.load(copy)
    model = copy / "context" / "model.int8.onnx"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, one byte altered
    model.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=r"context/model\.int8\.onnx: sha256 differs"):
        Artifact.load(copy)
    (copy / "probes" / "question.npy").unlink()
    # Two problems now: the message stays one line and names the first; the details list both.
    with pytest.raises(ArtifactError, match=r"context/model\.int8\.onnx: sha256 differs.* and 1 more") as caught:
        Artifact.load(copy)
    assert "probes/question.npy: missing" in (caught.value.details or "")


# ------------------------------------------------------------------------------------------ failures


@pytest.fixture(scope="session")
def collinear_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A realistic int8 casualty: with HF's default init (std 0.02) and a projection, every embedding
    points the same way (pairwise cosine > 0.9999), so int8's rounding noise reorders every ranking.
    fp32 reproduces PyTorch; int8's retrieval agreement with fp32 collapses."""
    root = tmp_path_factory.mktemp("collinear")
    return (make_tiny_dpr(root / "q", "question", projection_dim=PROJECTION_DIM, seed=1, initializer_range=0.02),
            make_tiny_dpr(root / "c", "context", projection_dim=PROJECTION_DIM, seed=2, initializer_range=0.02))


def test_failed_validation_leaves_nothing(collinear_pair: tuple[Path, Path], tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))  # where the export's work files go
    parent = tmp_path / "artifacts"
    out = parent / "collinear"
    q, c = collinear_pair
    with pytest.raises(ValidationError, match=r"int8 retrieval recall@10 against fp32 is [0-9.]+ < ") as info:
        export(out, question_encoder=str(q), context_encoder=str(c))
    message = str(info.value)
    assert "failed validation" in message and "--quantize" in message
    assert "fp32 question" not in message and "fused" not in message  # only int8 is blamed
    assert not out.exists()
    assert leftovers(parent, out.name) == []
    assert list(scratch.iterdir()) == []


def test_cli_failed_validation_exits_nonzero_without_traceback(tiny_dpr_pair: tuple[Path, Path], tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from fastdpr_export.validate import STAGE_THRESHOLDS

    # Demand more of the fused graph than float arithmetic can give.
    monkeypatch.setitem(STAGE_THRESHOLDS["fused"], "min_cosine", 1.5)
    out = tmp_path / "art"
    q, c = tiny_dpr_pair
    monkeypatch.setenv("FASTDPR_DETAILS", "1")  # the error is one line; the details list every failed check
    result = invoke(["export", "--question-encoder", str(q), "--context-encoder", str(c), "--out", str(out)])
    assert_clean_cli_failure(result, "failed validation", "fused question: min cosine", "fused context: min cosine")
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(error_lines) == 1 and "fused question: min cosine" in error_lines[0]
    assert "and 1 more failed checks" in error_lines[0]
    assert "[x] fused" in result.stderr
    assert not out.exists()
    assert leftovers(tmp_path, out.name) == []


def test_force_replaces_and_its_absence_refuses(tiny_dpr_pair: tuple[Path, Path], tmp_path: Path) -> None:
    out = tmp_path / "art"
    out.mkdir()
    (out / "precious.txt").write_text("keep me", encoding="utf-8")
    q, c = tiny_dpr_pair
    args = ["export", "--question-encoder", str(q), "--context-encoder", str(c), "--out", str(out),
            "--quantize", "none"]
    result = invoke(args)
    assert_clean_cli_failure(result, "already exists", "--force")
    assert (out / "precious.txt").read_text(encoding="utf-8") == "keep me"
    with pytest.raises(ExportError, match="already exists; pass --force"):
        export(out, question_encoder=str(q), context_encoder=str(c))

    result = invoke([*args, "--force"])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(out)
    assert not (out / "precious.txt").exists()
    artifact = Artifact.load(out)
    assert artifact.precisions == ("fp32",)
    assert read_manifest(out)["quantization"] is None
    assert files_on_disk(out) == pair_layout(("model.onnx", "tokenizer.json"))
    assert leftovers(tmp_path, out.name) == []


@pytest.mark.parametrize(
    ("case", "needles", "codes"),
    [
        ("no sources", ["pass --question-encoder and --context-encoder"], (1,)),
        ("only a question encoder", ["pass --question-encoder and --context-encoder"], (1,)),
        ("encoder and question encoder", ["not both"], (1,)),
        ("nonexistent path", ["/nonexistent/fastdpr-model", "is not a model directory"], (1,)),
        ("no config.json", ["has no config.json"], (1,)),
        ("unknown recipe", ["unknown quantization recipe 'int3'", "dynamic-per-channel"], (1,)),
        ("unknown builtin", ["unknown built-in source 'builtin:bert-huge'", "builtin:all-MiniLM-L6-v2"], (1,)),
        ("missing --out", ["Missing option '--out'"], (2,)),
        ("bad token types", ["Invalid value for '--token-types'"], (2,)),
    ],
)
def test_cli_bad_input_is_a_clear_error(case: str, needles: list[str], codes: tuple[int, ...],
                                        tiny_dpr_pair: tuple[Path, Path], tmp_path: Path) -> None:
    q, c = (str(p) for p in tiny_dpr_pair)
    empty = tmp_path / "empty-model"
    empty.mkdir()
    (empty / "tokenizer.json").write_text("{}", encoding="utf-8")
    out = tmp_path / "art"
    pair = ["--question-encoder", q, "--context-encoder", c]
    args = {
        "no sources": [],
        "only a question encoder": ["--question-encoder", q],
        "encoder and question encoder": ["--encoder", q, "--question-encoder", q],
        "nonexistent path": ["--question-encoder", "/nonexistent/fastdpr-model", "--context-encoder", c],
        "no config.json": ["--question-encoder", str(empty), "--context-encoder", c],
        "unknown recipe": [*pair, "--quantize", "int3"],
        "unknown builtin": ["--encoder", "builtin:bert-huge"],
        "missing --out": pair,
        "bad token types": [*pair, "--token-types", "ones"],
    }[case]
    result = invoke(["export", *args] if case == "missing --out" else ["export", *args, "--out", str(out)])
    assert_clean_cli_failure(result, *needles, codes=codes)
    assert not out.exists()
    assert leftovers(tmp_path, out.name) == []


# ------------------------------------------------------------------------------- the real MiniLM (slow)


@pytest.mark.slow
def test_minilm_as_itself(minilm_artifact: Path) -> None:
    """all-MiniLM-L6-v2 as a sentence-transformers model: its own pooling, normalization and max length."""
    from transformers import AutoTokenizer, BertModel

    manifest: Any = read_manifest(minilm_artifact)
    assert manifest["spec"] == {"dim": 384, "pooling": "mean", "normalize": True, "token_types": "pair",
                                "question_max_length": 256, "passage_max_length": 256, "lowercase": True,
                                "pad_token_id": 0, "similarity": "dot"}
    assert files_on_disk(minilm_artifact) == ({f"encoder/{name}" for name in MODEL_FILES} | set(PROBE_FILES)
                                              | openvino_layout("encoder"))
    for side in ("question", "context"):
        assert manifest["sides"][side]["dir"] == "encoder"
        assert manifest["sides"][side]["source"]["source"] == "builtin:all-MiniLM-L6-v2"
        assert manifest["sides"][side]["source"]["kind"] == "sentence-transformers"
        assert manifest["sides"][side]["source"]["class"] == "BertModel"
    # Mean pooling reads every token: every layer runs in full.
    assert manifest["graph"]["encoder"] == {"layers": 6, "final_layer": "every-token"}
    assert manifest["fusion"]["encoder"]["Attention"] == 6
    assert manifest["fusion"]["encoder"]["EmbedLayerNormalization"] == 1
    assert manifest["quantization"]["per_model"]["encoder"]["operators"]["QAttention"] == 6
    check_validation(manifest)
    check_probes(minilm_artifact, manifest, 384)
    check_versions(manifest)
    check_integrity(minilm_artifact)
    check_tokenizer_files(minilm_artifact, ("encoder",))
    for model in ("model.onnx", "model.int8.onnx"):
        check_graph(minilm_artifact / "encoder" / model, 384)

    # Independent reference: the source BertModel, masked mean pooling, L2 normalization.
    source = _tokenizer_source()
    bert, loading = BertModel.from_pretrained(source, output_loading_info=True)
    assert not [k for k in loading["missing_keys"] if not k.startswith("pooler")]  # real weights, not random
    tokenizer = AutoTokenizer.from_pretrained(source)
    artifact = Artifact.load(minilm_artifact)
    for side, inputs in (("question", QUESTIONS), ("context", PASSAGES)):
        expected = torch_embed(bert.eval(), tokenizer, inputs, 256, pooling="mean", normalize=True)
        fp32 = artifact.encoder(side, "fp32").encode(inputs)
        assert cosines(fp32, expected).min() >= FP32_MIN_COSINE, side
        np.testing.assert_allclose(np.linalg.norm(fp32, axis=1), 1.0, atol=1e-5)


@pytest.mark.slow
def test_minilm_tokenizer_has_no_fixed_padding(minilm_dpr_artifact: Path) -> None:
    """The packaged tokenizer.json pads every input to 128 and truncates at 128; the artifact's must not."""
    from tokenizers import Tokenizer

    source = Tokenizer.from_file(str(_tokenizer_source() / "tokenizer.json"))
    assert len(source.encode("what is a tuple?").ids) == 128  # the trap is real in the source
    check_tokenizer_files(minilm_dpr_artifact, ("question", "context"))
    artifact = Artifact.load(minilm_dpr_artifact)
    short = artifact.tokenizer("question").encode(["what is a tuple?"])[0]
    assert len(short.ids) < 128 and short.ids[0] == 101 and short.ids[-1] == 102
    long_text = "word " * 400
    assert len(artifact.tokenizer("question").encode([long_text])[0].ids) == 64
    assert len(artifact.tokenizer("context").encode([("title", long_text)])[0].ids) == 256


@pytest.mark.slow
def test_minilm_as_dpr_pair(minilm_dpr_artifact: Path) -> None:
    """The DPR-converted MiniLM: DPR spec, DPR classes, and the source BERT's real CLS vectors (the
    trap: ``DPRQuestionEncoder.from_pretrained(<BERT dir>)`` gives random weights)."""
    from transformers import AutoTokenizer, BertModel

    manifest: Any = read_manifest(minilm_dpr_artifact)
    assert manifest["spec"] == {"dim": 384, "pooling": "cls", "normalize": False, "token_types": "zeros",
                                "question_max_length": 64, "passage_max_length": 256, "lowercase": True,
                                "pad_token_id": 0, "similarity": "dot"}
    assert files_on_disk(minilm_dpr_artifact) == pair_layout() | openvino_layout("context")
    for side, cls in (("question", "DPRQuestionEncoder"), ("context", "DPRContextEncoder")):
        assert manifest["sides"][side]["source"]["class"] == cls
        assert manifest["sides"][side]["source"]["source"] == "builtin:all-MiniLM-L6-v2-dpr"
        assert manifest["graph"][side] == {"layers": 6, "final_layer": "first-token"}
        assert manifest["fusion"][side]["Attention"] == 5
        assert manifest["fusion"][side]["EmbedLayerNormalization"] == 1
        for model in ("model.onnx", "model.int8.onnx"):
            check_graph(minilm_dpr_artifact / side / model, 384)
    check_validation(manifest)
    check_probes(minilm_dpr_artifact, manifest, 384)
    check_integrity(minilm_dpr_artifact)

    source = _tokenizer_source()
    bert = BertModel.from_pretrained(source).eval()
    tokenizer = AutoTokenizer.from_pretrained(source)
    artifact = Artifact.load(minilm_dpr_artifact)
    q_expected = torch_embed(bert, tokenizer, QUESTIONS, 64, pooling="cls")
    p_expected = torch_embed(bert, tokenizer, PASSAGES, 256, pooling="cls", zero_token_types=True)
    q = artifact.encoder("question", "fp32").encode(QUESTIONS)
    p = artifact.encoder("context", "fp32").encode(PASSAGES)
    assert cosines(q, q_expected).min() >= FP32_MIN_COSINE
    assert cosines(p, p_expected).min() >= FP32_MIN_COSINE
    np.testing.assert_allclose(q, q_expected, atol=1e-3)
    # and the real model ranks: each question's own passage comes first among the three titled ones
    scores = artifact.encoder("question", "int8").encode(QUESTIONS[1:3]) @ \
        artifact.encoder("context", "int8").encode(PASSAGES[:3]).T
    assert list(scores.argmax(axis=1)) == [0, 2]
