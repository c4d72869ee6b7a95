"""``fastdpr info``: what an artifact or index directory holds, and (optionally) proof it works."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastdpr.common.cpu import CpuInfo
from fastdpr.common.errors import FastDPRError
from fastdpr.common.integrity import MANIFEST_NAME, Integrity

if TYPE_CHECKING:
    from fastdpr.index.manifest import IndexManifest, ShardedIndexManifest


def _format_of(path: Path) -> str:
    manifest = path / MANIFEST_NAME
    if not path.exists():
        raise FastDPRError(f"{path} does not exist")
    if not manifest.is_file():
        raise FastDPRError(f"{path} has no {MANIFEST_NAME}: neither a fastdpr artifact nor an index")
    try:
        return str(json.loads(manifest.read_text(encoding="utf-8")).get("format"))
    except (OSError, ValueError, AttributeError, RecursionError) as exc:
        raise FastDPRError(f"{manifest} is not valid JSON (or not an object): {exc}") from exc


def int8_graph(manifest: dict[str, Any], here: str) -> dict[str, Any] | None:
    """Which int8 graph this machine runs, whether its integers are the same on every x86 class, and
    on which class the export validated it (None for an fp32-only artifact)."""
    quantization = manifest.get("quantization")
    if not quantization:
        return None
    models = {side: s["models"]["int8"] for side, s in manifest["sides"].items() if "int8" in s["models"]}
    per_model = quantization.get("per_model", {})
    reports = [details["avx2_u8s8"] for details in per_model.values() if "avx2_u8s8" in details]
    # Artifacts written before the emulation report: 7-bit weights (reduce_range) are the proof.
    exact = all(r["weight_pairs_that_can_saturate"] == 0 for r in reports) if reports else bool(
        quantization.get("settings", {}).get("reduce_range"))
    validated_on = manifest.get("validation", {}).get("cpu", {}).get("int8_class")
    return {
        "models": models,
        "weights": "7-bit" if quantization.get("settings", {}).get("reduce_range") else "8-bit",
        "exact_on_every_x86_class": exact,
        "weight_pairs_that_can_saturate": {m: d["avx2_u8s8"]["weight_pairs_that_can_saturate"]
                                           for m, d in per_model.items() if "avx2_u8s8" in d},
        "validated_on": validated_on,
        "this_machine": here,
        "same_class_as_export": validated_on == here,
    }


def describe(path: Path, verify: bool = False, threads: int | None = None) -> dict[str, Any]:
    """A JSON-ready description. Files are checked against the manifest by size and fingerprint; with
    ``verify`` by their full sha256, and the artifact's probes are re-encoded on this machine (for an int8
    index: its question encoder on the probe questions)."""
    from fastdpr.common.cpu import this_cpu
    from fastdpr.model.artifact import ARTIFACT_FORMAT, Artifact

    here = this_cpu()
    integrity: Integrity = "sha256" if verify else "fingerprint"

    kind = _format_of(path)
    if kind == ARTIFACT_FORMAT:
        artifact = Artifact.load(path, integrity)
        manifest = artifact.manifest
        report: dict[str, Any] = {
            "kind": "artifact",
            "path": str(path),
            "spec": manifest["spec"],
            "sides": {side: {"dir": s["dir"], "source": s["source"]["source"], "class": s["source"]["class"],
                             "models": s["models"],
                             # Artifacts from before the first-token final layer have no ``graph`` entry.
                             "graph": manifest.get("graph", {}).get(s["dir"])}
                      for side, s in manifest["sides"].items()},
            "quantization": manifest["quantization"],
            "encoding": {**artifact.typed.encoding.to_dict(), "recorded": artifact.typed.encoding.recorded},
            "validation": manifest["validation"],
            "files": {name: entry["bytes"] for name, entry in manifest["files"].items()},
            "versions": manifest["versions"],
            "integrity": "ok",
            "integrity_check": integrity,
            "cpu": here.to_dict(),
            "int8": int8_graph(manifest, here.int8_class),
            "openvino": _openvino_report(artifact, manifest),
        }
        if verify:
            from fastdpr.model.openvino_encoder import openvino_available
            from fastdpr.model.passage_backend import PassageBackend
            from fastdpr.model.verify import verify_artifact, verify_int8_here

            results = verify_artifact(artifact, threads=threads)
            int8_here = verify_int8_here(artifact, "info --verify", threads) if "int8" in artifact.precisions else None
            # The OpenVINO passage graph, when this machine can run it: the same check with its passages.
            openvino_here = None
            if artifact.typed.openvino is not None and openvino_available():
                openvino_here = verify_int8_here(artifact, "info --verify", threads,
                                                 PassageBackend("openvino", "info --verify"))
            report["verified"] = {"passed": all(r.passed for r in results) and all(
                                      check is None or check.passed for check in (int8_here, openvino_here)),
                                  "results": [r.to_dict() for r in results],
                                  "int8_here": None if int8_here is None else int8_here.to_dict(),
                                  "openvino_here": None if openvino_here is None else openvino_here.to_dict()}
        return report
    from fastdpr.index.manifest import INDEX_FORMAT, load_index_manifest

    if kind == INDEX_FORMAT:
        return _index_report(path, "index", load_index_manifest(path, integrity), here, verify, threads)
    from fastdpr.index.load import load_sharded_manifest
    from fastdpr.index.manifest import SHARDED_INDEX_FORMAT

    if kind == SHARDED_INDEX_FORMAT:
        return _index_report(path, "sharded index", load_sharded_manifest(path, integrity), here, verify, threads)
    raise FastDPRError(f"{path}: unknown manifest format {kind!r}")


def _openvino_report(artifact: Any, manifest: dict[str, Any]) -> dict[str, Any] | None:
    """The artifact's OpenVINO passage graph: what the export found, and what ``fastdpr index`` picks here."""
    entry = (manifest.get("backends") or {}).get("openvino")
    if entry is None:
        return None
    chosen = artifact.passage_backend()
    return {"validation": entry["validation"], "speed": entry["speed"], "preferred_on": entry["preferred_on"],
            "index_here": chosen.to_dict()}


def describe_index(typed: IndexManifest | ShardedIndexManifest) -> dict[str, Any]:
    """What :func:`describe` says about an index whose manifest was already loaded and checked (by size and
    fingerprint, as ``Retriever.load`` does): a server describes the very index it answers with, not
    whatever the directory holds by the time it is asked."""
    from fastdpr.common.cpu import this_cpu
    from fastdpr.index.manifest import ShardedIndexManifest

    kind = "sharded index" if isinstance(typed, ShardedIndexManifest) else "index"
    return _index_report(typed.root, kind, typed, this_cpu(), False, None)


def _index_report(path: Path, kind: str, typed: IndexManifest | ShardedIndexManifest, here: CpuInfo, verify: bool,
                  threads: int | None) -> dict[str, Any]:
    """An index's (or sharded index's) description: where it was built and checked, and, with
    ``verify``, its int8 question encoder checked on this machine."""
    manifest = typed.raw
    question_precision = typed.question_encoder.precision if typed.question_encoder else typed.precision
    built_on = manifest.get("cpu", {}).get("int8_class")
    graph = int8_graph({"quantization": manifest["artifact"].get("quantization"), "sides": {}}, here.int8_class)
    report = {"kind": kind, "path": str(path),
              **{k: v for k, v in manifest.items() if k not in ("files", "cpu")},
              "files": {name: entry["bytes"] for name, entry in manifest["files"].items()},
              "integrity": "ok", "integrity_check": "sha256" if verify else "fingerprint",
              # Every index has a version: 1 (a fresh build) unless `fastdpr index --append/--delete` made it.
              "version": typed.version.to_dict(),
              "built_on": manifest.get("cpu"), "cpu": here.to_dict(),
              "int8": None if "int8" not in (typed.precision, question_precision) else {
                  "passages": typed.precision == "int8",
                  "model": manifest["question_encoder"]["model"] if question_precision == "int8" else None,
                  "this_machine": here.int8_class,
                  "built_on": built_on,
                  "exact_on_every_x86_class": graph["exact_on_every_x86_class"] if graph else None},
              "lexical": lexical_report(typed), "vector_search": vectors_report(typed)}
    if verify and question_precision == "int8":
        from fastdpr.search.retriever import check_index_int8, open_question_encoder

        check = check_index_int8(typed, open_question_encoder(typed, threads), "info --verify")
        report["verified"] = {"passed": check is None or check.passed, "results": [],
                              "int8_here": None if check is None else check.to_dict()}
    return report


def vectors_report(typed: IndexManifest | ShardedIndexManifest) -> dict[str, Any]:
    """How the index searches its passage vectors (``--vectors``, issue #22): the kind and its settings,
    and the bytes on disk of what search reads (graph or compressed index) and of the float32 vectors."""
    from fastdpr.index.load import shards_of
    from fastdpr.index.manifest import ShardedIndexManifest

    shards = shards_of(typed.root, typed.shards) if isinstance(typed, ShardedIndexManifest) else [(0, typed)]
    searched = [m.compressed.file if m.compressed else m.hnsw.file for _, m in shards]
    return {**typed.vector_settings.to_dict(),
            "factory": None if shards[0][1].compressed is None else shards[0][1].compressed.factory,
            "search_bytes": sum(m.files.entries[name].bytes for (_, m), name in zip(shards, searched, strict=True)
                                if name is not None),
            "float32_bytes": sum(m.files.entries[m.vectors].bytes for _, m in shards)}


def _vectors_line(vectors: dict[str, Any] | None) -> str:
    if vectors is None:
        return "  vectors: fp32"
    sizes = (f"{vectors['search_bytes'] / 1e6:.1f} MB searched, float32 vectors.npy "
             f"{vectors['float32_bytes'] / 1e6:.1f} MB")
    if vectors["kind"] == "fp32":
        return f"  vectors: fp32, hnswlib graph read into memory ({sizes})"
    return (f"  vectors: {vectors['kind']}, faiss {vectors['factory']} memory-mapped, nprobe {vectors['nprobe']}; "
            f"top {vectors['rerank']} re-ranked by exact dot products from vectors.npy ({sizes})")


def lexical_report(typed: IndexManifest | ShardedIndexManifest) -> dict[str, Any] | None:
    """The index's lexical side (issue #23), None when it has none: method, tokenizer, stemmer, BM25
    variant, ``k1`` and ``b``, passages, vocabulary (per shard in a sharded index), and its bytes on disk
    beside the whole index's."""
    from fastdpr.index.load import shards_of
    from fastdpr.index.manifest import ShardedIndexManifest

    shards = shards_of(typed.root, typed.shards) if isinstance(typed, ShardedIndexManifest) else [(0, typed)]
    sides = [manifest.lexical for _, manifest in shards]
    first = sides[0]
    if first is None:
        return None
    lexical_bytes = sum(manifest.files.entries[name].bytes
                        for _, manifest in shards if manifest.lexical for name in manifest.lexical.files)
    index_bytes = sum(entry.bytes for _, manifest in shards for entry in manifest.files.entries.values())
    if isinstance(typed, ShardedIndexManifest):
        index_bytes += sum(entry.bytes for entry in typed.files.entries.values())
    settings = first.settings.bm25
    return {**first.settings.to_dict(), "k1": settings.k1, "b": settings.b, "stemmer": settings.stemmer,
            "parts": len(sides), "passages": sum(side.passages for side in sides if side),
            "vocabulary": [side.vocabulary for side in sides if side], "bytes": lexical_bytes,
            "index_bytes": index_bytes}


def _lexical_line(lexical: dict[str, Any] | None) -> str:
    if lexical is None:
        return "  lexical: none (dense search only; `fastdpr index ... --lexical bm25` builds one)"
    tokenizer = lexical["tokenizer"]
    vocabulary = lexical["vocabulary"]
    words = (f"vocabulary {vocabulary[0]}" if len(vocabulary) == 1 else
             f"{lexical['parts']} shards, vocabulary {min(vocabulary)}-{max(vocabulary)} per shard")
    share = lexical["bytes"] / max(lexical["index_bytes"], 1)
    return (f"  lexical: {lexical['method']} ({lexical['bm25']['method']}, k1 {lexical['k1']}, b {lexical['b']}); "
            f"tokenizer {tokenizer['library']} (lower={tokenizer['lower']}, stop words {tokenizer['stopwords']}, "
            f"stemmer {tokenizer['stemmer']}); {lexical['passages']} passages, {words}; "
            f"{lexical['bytes'] / 1e6:.1f} MB ({share:.0%} of the index)")


def _graph_note(graph: dict[str, Any] | None) -> str:
    """``; 6 layers, the last for the first token only`` (empty for an artifact that does not say)."""
    if not graph:
        return ""
    last = ", the last for the first token only" if graph["final_layer"] == "first-token" else ""
    return f"; {graph['layers']} layers{last}"


def render(report: dict[str, Any]) -> str:
    """A readable summary of :func:`describe`'s report."""
    checked = report.get("integrity_check", "sha256")
    lines = [f"{report['kind']}: {report['path']}  (files: {checked} {report['integrity']}"
             + ("; full sha256: --verify)" if checked != "sha256" else ")")]
    if report["kind"] == "artifact":
        spec = report["spec"]
        lines.append(f"  spec: dim {spec['dim']}, {spec['pooling']} pooling, normalize={spec['normalize']}, "
                     f"token types {spec['token_types']}, max length q{spec['question_max_length']}/"
                     f"p{spec['passage_max_length']}, similarity {spec['similarity']}")
        for side, s in report["sides"].items():
            lines.append(f"  {side}: {s['dir']}/ from {s['source']} ({s['class']}); models {', '.join(s['models'])}"
                         + _graph_note(s.get("graph")))
        quant = report["quantization"]
        lines.append(f"  int8 recipe: {quant['recipe'] if quant else 'none (fp32 only)'}")
        lines.append("  " + _encoding_line(report["encoding"]))
        for stage, sides in report["validation"]["stages"].items():
            for side, numbers in sides.items():
                lines.append(f"  export check {stage:5s} {side:8s} min cosine {numbers['min_cosine']:.6f} "
                             f"mean {numbers['mean_cosine']:.6f} max |diff| {numbers['max_abs']:.2e}")
        agreement = report["validation"].get("int8_retrieval_agreement")
        if agreement:
            lines.append(f"  int8 retrieval agreement with fp32: recall@{agreement['k']} "
                         f"{agreement['recall_at_k']:.4f}")
        openvino = report.get("openvino")
        if openvino:
            validation, speed = openvino["validation"], openvino["speed"]
            verdict = "passed" if validation["passed"] else "FAILED"
            lines.append(f"  openvino passages: {verdict} the export's checks on {validation['cpu_class']} "
                         f"(min cosine {validation['min_cosine']['min_cosine']:.4f}, "
                         f"recall@10 vs fp32 {validation['retrieval']['recall_at_k']:.4f}, "
                         f"{validation['invariance']['identical']}/{validation['invariance']['passages']} bitwise "
                         f"invariant); {speed['speedup']}x ONNX int8 passages/s there")
            lines.append(f"  fastdpr index here encodes passages on {openvino['index_here']['name']}: "
                         f"{openvino['index_here']['reason']}")
        total = sum(report["files"].values())
        lines.append(f"  {len(report['files'])} files, {total / 1e6:.1f} MB")
        int8 = report.get("int8")
        lines.append(f"  this machine: {report['cpu']['int8_class']} ({report['cpu']['description']})")
        if int8:
            lines.append(f"  int8 graph run here: {', '.join(sorted(set(int8['models'].values())))} "
                         f"({int8['weights']} weights; " + ("same integers on every x86 class" if
                         int8["exact_on_every_x86_class"] else "may saturate on x86-avx2 / x86-avx512 without "
                         "VNNI") + ")")
            lines.append(f"  int8 validated at export on: {int8['validated_on'] or 'not recorded'}; "
                         f"{_verified_here(report, int8['same_class_as_export'])}")
    else:
        counts = report.get("counts", {})
        lines.append(f"  passages: {counts.get('indexed')} indexed, {counts.get('skipped_total', 0)} skipped "
                     f"{counts.get('skipped', {})}")
        lines.append("  " + _version_line(report.get("version") or {}))
        question = report.get("question_encoder", {}).get("precision", report.get("precision"))
        compressed = (report.get("vector_search") or {}).get("kind", "fp32") != "fp32"
        backend = (report.get("build") or {}).get("passage_backend") or {"name": "onnxruntime"}
        calls = ("passages on OpenVINO (16-token buckets), questions one input per ONNX Runtime call"
                 if backend["name"] == "openvino" else "one input per ONNX Runtime call")
        lines.append(f"  precision: passages {report.get('precision')}, questions {question}; {calls}; "
                     f"hnsw: {'none (compressed vectors)' if compressed else report.get('hnsw')}")
        lines.append(f"  artifact: {report.get('artifact', {}).get('path')}")
        lines.append(_vectors_line(report.get("vector_search")))
        lines.append(_lexical_line(report.get("lexical")))
        if "shards" in report:
            sizes = [shard["count"] for shard in report["shards"]]
            lines.append(f"  shards: {len(sizes)} of up to {report.get('shard_size')} passages "
                         f"(smallest {min(sizes)}, largest {max(sizes)})")
        lines.append(f"  this machine: {report['cpu']['int8_class']}; built on: "
                     f"{(report.get('built_on') or {}).get('int8_class', 'not recorded')}")
        check = report.get("int8_verification")
        if check:
            lines.append(f"  int8 checked at build: {'passed' if check['passed'] else 'FAILED'} on "
                         f"{check['cpu']['int8_class']}; "
                         f"{_verified_here(report, check['cpu']['int8_class'] == report['cpu']['int8_class'])}")
    if report.get("verified", {}).get("int8_here"):
        check = report["verified"]["int8_here"]
        parts = [f"{side} min cosine {v['min_cosine']:.4f}" for side, v in check["sides"].items()]
        if check.get("recall_at_10") is not None:
            parts.append(f"recall@10 vs fp32 {check['recall_at_10']:.3f}")
        lines.append(f"  [{'✓' if check['passed'] else 'x'}] int8 on this machine ({check['cpu']['int8_class']}, "
                     f"held-out probes): {', '.join(parts)}")
    if report.get("verified", {}).get("openvino_here"):
        check = report["verified"]["openvino_here"]
        lines.append(f"  [{'✓' if check['passed'] else 'x'}] int8 with OpenVINO passages on this machine "
                     f"({check['cpu']['int8_class']}, held-out probes): context min cosine "
                     f"{check['sides']['context']['min_cosine']:.4f}, recall@10 vs fp32 {check['recall_at_10']:.3f}")
    if "verified" in report:
        verdict = "PASSED" if report["verified"]["passed"] else "FAILED"
        lines.append(f"  runtime reproduces PyTorch on the probes: {verdict}")
        for r in report["verified"]["results"]:
            mark = "✓" if r["passed"] else "x"
            lines.append(f"    [{mark}] {r['precision']:4s} {r['side']:8s} min cosine {r['min_cosine']:.6f} "
                         f"(>= {r['min_cosine_threshold']}) mean {r['mean_cosine']:.6f} max |diff| {r['max_abs']:.2e}")
    return "\n".join(lines)


def _version_line(version: dict[str, Any]) -> str:
    changes = version.get("changes") or {}
    if version.get("number", 1) == 1:
        return "version: 1 (a fresh build)"
    return (f"version: {version['number']} (from version {version.get('parent')} on {changes.get('created_utc')}: "
            f"{changes.get('appended', 0)} appended, {changes.get('deleted', 0)} deleted)")


def _encoding_line(encoding: dict[str, Any]) -> str:
    precision = encoding["precision"]
    line = (f"encoding: {encoding['inputs_per_call']} input per ONNX Runtime call (a vector depends on its own text "
            f"only); by default questions {precision['question']}, passages {precision['context']}")
    if not encoding["recorded"]:
        line += " (derived: exported before fastdpr recorded its plan; re-export to choose per side)"
    return line


def _verified_here(report: dict[str, Any], same_class: bool) -> str:
    if "verified" in report:
        return "verified here now: " + ("yes" if report["verified"]["passed"] else "FAILED")
    if same_class:
        return "this machine has the same int8 class (run --verify to check here)"
    return "NOT verified on this machine's class: run `fastdpr info --verify`"
