"""``fastdpr info``: what an artifact or index directory holds, and (optionally) proof it works."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fastdpr.errors import FastDPRError
from fastdpr.manifest import MANIFEST_NAME


def _format_of(path: Path) -> str:
    manifest = path / MANIFEST_NAME
    if not path.exists():
        raise FastDPRError(f"{path} does not exist")
    if not manifest.is_file():
        raise FastDPRError(f"{path} has no {MANIFEST_NAME}: neither a fastdpr artifact nor an index")
    try:
        return str(json.loads(manifest.read_text(encoding="utf-8")).get("format"))
    except (ValueError, AttributeError) as exc:
        raise FastDPRError(f"{manifest} is not valid JSON: {exc}") from exc


def describe(path: Path, verify: bool = False, threads: int | None = None) -> dict[str, Any]:
    """A JSON-ready description; loading checks every file's sha256. ``verify`` also re-encodes the
    artifact's probes (for an index: the probes of its question encoder are not kept, so it re-checks
    the files only)."""
    from fastdpr.artifact import ARTIFACT_FORMAT, Artifact

    kind = _format_of(path)
    if kind == ARTIFACT_FORMAT:
        artifact = Artifact.load(path)
        manifest = artifact.manifest
        report: dict[str, Any] = {
            "kind": "artifact",
            "path": str(path),
            "spec": manifest["spec"],
            "sides": {side: {"dir": s["dir"], "source": s["source"]["source"], "class": s["source"]["class"],
                             "models": s["models"]} for side, s in manifest["sides"].items()},
            "quantization": manifest["quantization"],
            "validation": manifest["validation"],
            "files": {name: entry["bytes"] for name, entry in manifest["files"].items()},
            "versions": manifest["versions"],
            "integrity": "ok",
        }
        if verify:
            from fastdpr.verify import verify_artifact

            results = verify_artifact(artifact, threads=threads)
            report["verified"] = {"passed": all(r.passed for r in results),
                                  "results": [r.to_dict() for r in results]}
        return report
    from fastdpr.index import INDEX_FORMAT, load_index_manifest

    if kind == INDEX_FORMAT:
        manifest = load_index_manifest(path)
        return {"kind": "index", "path": str(path), **{k: v for k, v in manifest.items() if k != "files"},
                "files": {name: entry["bytes"] for name, entry in manifest["files"].items()},
                "integrity": "ok"}
    from fastdpr.shards import SHARDED_INDEX_FORMAT, load_sharded_manifest

    if kind == SHARDED_INDEX_FORMAT:
        manifest = load_sharded_manifest(path)
        return {"kind": "sharded index", "path": str(path), **{k: v for k, v in manifest.items() if k != "files"},
                "files": {name: entry["bytes"] for name, entry in manifest["files"].items()},
                "integrity": "ok"}
    raise FastDPRError(f"{path}: unknown manifest format {kind!r}")


def render(report: dict[str, Any]) -> str:
    """A readable summary of :func:`describe`'s report."""
    lines = [f"{report['kind']}: {report['path']}  (files: sha256 {report['integrity']})"]
    if report["kind"] == "artifact":
        spec = report["spec"]
        lines.append(f"  spec: dim {spec['dim']}, {spec['pooling']} pooling, normalize={spec['normalize']}, "
                     f"token types {spec['token_types']}, max length q{spec['question_max_length']}/"
                     f"p{spec['passage_max_length']}, similarity {spec['similarity']}")
        for side, s in report["sides"].items():
            lines.append(f"  {side}: {s['dir']}/ from {s['source']} ({s['class']}); models {', '.join(s['models'])}")
        quant = report["quantization"]
        lines.append(f"  int8 recipe: {quant['recipe'] if quant else 'none (fp32 only)'}")
        for stage, sides in report["validation"]["stages"].items():
            for side, numbers in sides.items():
                lines.append(f"  export check {stage:5s} {side:8s} min cosine {numbers['min_cosine']:.6f} "
                             f"mean {numbers['mean_cosine']:.6f} max |diff| {numbers['max_abs']:.2e}")
        agreement = report["validation"].get("int8_retrieval_agreement")
        if agreement:
            lines.append(f"  int8 retrieval agreement with fp32: recall@{agreement['k']} "
                         f"{agreement['recall_at_k']:.4f}")
        total = sum(report["files"].values())
        lines.append(f"  {len(report['files'])} files, {total / 1e6:.1f} MB")
    else:
        counts = report.get("counts", {})
        lines.append(f"  passages: {counts.get('indexed')} indexed, {counts.get('skipped_total', 0)} skipped "
                     f"{counts.get('skipped', {})}")
        lines.append(f"  precision: {report.get('precision')}; hnsw: {report.get('hnsw')}")
        lines.append(f"  artifact: {report.get('artifact', {}).get('path')}")
        if "shards" in report:
            sizes = [shard["count"] for shard in report["shards"]]
            lines.append(f"  shards: {len(sizes)} of up to {report.get('shard_size')} passages "
                         f"(smallest {min(sizes)}, largest {max(sizes)})")
    if "verified" in report:
        verdict = "PASSED" if report["verified"]["passed"] else "FAILED"
        lines.append(f"  runtime reproduces PyTorch on the probes: {verdict}")
        for r in report["verified"]["results"]:
            mark = "✓" if r["passed"] else "x"
            lines.append(f"    [{mark}] {r['precision']:4s} {r['side']:8s} min cosine {r['min_cosine']:.6f} "
                         f"(>= {r['min_cosine_threshold']}) mean {r['mean_cosine']:.6f} max |diff| {r['max_abs']:.2e}")
    return "\n".join(lines)
