"""ONNX models whose weights live in external data files (``model.onnx`` + ``weights.bin``): the
manifest, the run cache and ``optkit serve``'s /metadata identify the whole artifact, so a changed
weights file is a different artifact."""
from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")

from optkit.model.artifact import Artifact, Manifest, artifact_identity, external_data_files  # noqa: E402
from optkit.common.fileio import sha256_file  # noqa: E402
from optkit.serve.settings import resolve_settings  # noqa: E402


def _external(tmp_path: Path, name: str = "model.onnx", location: str = "weights.bin") -> Path:
    """The serve tests' user model, saved with every weight in one external file."""
    import onnx
    from serve_models import build_user_model

    inline = build_user_model(tmp_path / "inline.onnx", head="sigmoid")
    model = onnx.load(str(inline))
    path = tmp_path / name
    (tmp_path / location).parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=location, size_threshold=0)
    inline.unlink()
    assert (tmp_path / location).is_file()
    return path


def _change_weights(path: Path) -> None:
    """Same model file, same weights-file size, other weight values (every float32 negated in place)."""
    weights = path.parent / "weights.bin"
    (-np.fromfile(weights, dtype="<f4")).astype("<f4").tofile(weights)


def test_identity_covers_the_external_weights(tmp_path):
    path = _external(tmp_path)
    weights = tmp_path / "weights.bin"
    assert external_data_files(path) == ["weights.bin"]
    ident = artifact_identity(path)
    onnx_sha, weights_sha = sha256_file(path), sha256_file(weights)
    # what `sha256sum model.onnx weights.bin | sha256sum` prints in the model's directory
    expected = hashlib.sha256(f"{onnx_sha}  model.onnx\n{weights_sha}  weights.bin\n".encode()).hexdigest()
    assert ident["sha256"] == expected != onnx_sha
    assert ident["size"] == path.stat().st_size + weights.stat().st_size
    assert ident["external_data"] == [{"path": "weights.bin", "sha256": weights_sha, "size": weights.stat().st_size}]
    art = Artifact.from_file(path)
    assert (art.sha256, art.size, art.extra["external_data"]) == (ident["sha256"], ident["size"], ident["external_data"])

    _change_weights(path)
    assert sha256_file(path) == onnx_sha  # the .onnx itself did not change ...
    assert artifact_identity(path)["sha256"] != ident["sha256"]  # ... the artifact did


def test_inline_models_keep_the_file_sha256(tiny_onnx):
    """Manifests and caches written before keep matching: a self-contained file is its own sha256."""
    assert artifact_identity(tiny_onnx) == {"sha256": sha256_file(tiny_onnx), "size": tiny_onnx.stat().st_size,
                                            "external_data": []}


def test_a_missing_weights_file_is_named(tmp_path):
    from optkit.common.errors import InputError

    path = _external(tmp_path)
    (tmp_path / "weights.bin").unlink()
    with pytest.raises(InputError, match=r"keeps weights in weights\.bin, but .*weights\.bin does not exist"):
        artifact_identity(path)


def test_the_run_cache_sees_a_changed_weights_file(tmp_path):
    from optkit.pipeline.recipe import _sha_matches

    path = _external(tmp_path)
    art = Artifact.from_file(path)
    assert _sha_matches(art)
    _change_weights(path)
    assert not _sha_matches(art)


def _metadata(path: Path) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient
        from optkit.serve.app import create_app

        with TestClient(create_app(resolve_settings(path, accept_audio=False, environ={}))) as client:
            return client.get("/metadata").json()


def test_metadata_identifies_the_weights_and_matches_the_manifest(tmp_path):
    path = _external(tmp_path)
    manifest = Manifest(tmp_path / "manifest.json")
    manifest.record("export", Artifact.from_file(path, made_by="export"), cache_key="k1")
    manifest.save()

    before = _metadata(path)
    ident = artifact_identity(path)
    assert before["sha256"] == ident["sha256"] and before["size"] == ident["size"]
    assert before["external_data"] == ident["external_data"]
    assert before["model_version"] == f"model@{ident['sha256'][:12]}"
    assert before["manifest"]["step"] == "export" and "note" not in before["manifest"]
    assert before["manifest"]["artifact"]["sha256"] == before["sha256"]

    _change_weights(path)
    after = _metadata(path)
    assert after["sha256"] != before["sha256"] and after["model_version"] != before["model_version"]
    assert after["external_data"][0]["sha256"] != before["external_data"][0]["sha256"]
    assert "sha256 differs" in after["manifest"]["note"]  # matched by name only: the weights are not the recorded ones


def test_bench_reports_the_whole_artifact(tmp_path):
    from optkit.runtime.bench import _artifact_facts

    path = _external(tmp_path)
    facts = _artifact_facts(path)
    assert facts["sha256"] == artifact_identity(path)["sha256"] and facts["external_data"][0]["path"] == "weights.bin"


def test_the_image_bundle_carries_the_weights(tmp_path):
    """What the Docker images copy out of MODEL_DIR: the artifact, its weights files (also in a
    subdirectory), the manifest; not the other artifacts of the directory."""
    from optkit.model.artifact import bundle_files, copy_bundle

    src = tmp_path / "out"
    src.mkdir()
    path = _external(src, location="weights/model.bin")
    (src / "manifest.json").write_text("{}")
    (src / "model.int8.onnx").write_bytes(b"another artifact")
    assert bundle_files(path) == ["model.onnx", "weights/model.bin", "manifest.json"]
    dest = tmp_path / "models"
    assert copy_bundle(src, "model.onnx", dest) == ["model.onnx", "weights/model.bin", "manifest.json"]
    assert sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file()) == [
        "manifest.json", "model.onnx", "weights/model.bin"]
    assert artifact_identity(dest / "model.onnx") == artifact_identity(path)


def test_the_image_bundle_of_an_engine_takes_its_sidecar(tmp_path):
    from optkit.model.artifact import bundle_files

    (tmp_path / "model.engine").write_bytes(b"plan")
    (tmp_path / "model.engine.json").write_text("{}")
    assert bundle_files(tmp_path / "model.engine") == ["model.engine", "model.engine.json"]


def test_the_verify_cache_sees_a_changed_weights_file(tmp_path, tiny_onnx):
    import onnx

    from optkit.verification.reference import load_reference, reference_path_for
    from optkit.verification.verify import verify_artifacts

    path = tmp_path / "tiny.onnx"
    onnx.save_model(onnx.load(str(tiny_onnx)), str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="weights.bin", size_threshold=0)
    ref, cache = load_reference(reference_path_for(tiny_onnx)), tmp_path / "cache"
    r1 = verify_artifacts([path], ref, cache_dir=cache)
    assert r1.passed and verify_artifacts([path], ref, cache_dir=cache).results[0].cached
    _change_weights(path)
    r3 = verify_artifacts([path], ref, cache_dir=cache)
    assert not r3.results[0].cached and not r3.passed  # negated weights: verified again, and they fail


def test_a_model_with_inline_weights_is_not_parsed_to_find_external_data(tmp_path, tiny_onnx, monkeypatch):
    """Every artifact identity asks for external data files; a model whose bytes hold no
    external-data entry (no "location" key) is answered without parsing it (0.9 s on a 235 MB model),
    while one with external data is still parsed and its files found."""
    import onnx

    from optkit.model.artifact import artifact_size

    parsed: list[str] = []
    real_load = onnx.load

    def counting_load(f, *args, **kwargs):
        parsed.append(Path(str(f)).name)
        return real_load(f, *args, **kwargs)

    monkeypatch.setattr(onnx, "load", counting_load)
    assert external_data_files(tiny_onnx) == [] and parsed == []
    ext = _external(tmp_path)
    parsed.clear()
    assert external_data_files(ext) == ["weights.bin"] and parsed == [ext.name]
    assert artifact_size(ext) == artifact_identity(ext)["size"] == ext.stat().st_size + (tmp_path / "weights.bin").stat().st_size
