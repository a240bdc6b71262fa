"""Issue 22's CLI/file attack classes for benchmarks/attack_classes.py (kept apart: that file holds
issue 11's). Each case is clean when optkit refuses with exit 1 and one `Error:` line and every
file in the work folder is byte for byte what it was (nothing destroyed, nothing half-written), or
- for the control cases - succeeds and writes what it should.

  output_options  every file-writing option of every command given one of the command's inputs
                  (directly, through a symlink, a hard link, `..`), another output of it, a name of
                  the wrong kind; recipe step outputs over the recipe's own files
  disk_full       lut / verify / weights / bench into a full disk (a real tmpfs where this process
                  may mount one, else ENOSPC injected into the writes)
  weights         weights --load files with missing rows/columns, duplicate keys, input==output, deep nesting
  lut             lut argument and output combinations
  baselines       corrupt report.json baselines (types, counts, NaN, nulls, nesting)
  references22    references whose labels or outputs do not fit the model
  thresholds      --threshold / --gate values that are not finite or out of range
  loadtest_urls   URLs that are not URLs or not loopback; --serve-arg/--variant that move the server
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any, Callable

import numpy as np


def snapshot(d: Path) -> dict[str, str]:
    out = {}
    for p in sorted(d.rglob("*")):
        key = str(p.relative_to(d))
        if p.is_symlink():
            out[key] = "link:" + os.readlink(p)
        elif p.is_file():
            out[key] = hashlib.sha256(p.read_bytes()).hexdigest()
        else:
            out[key] = "dir"
    return out


class Tally:
    """Counts one class's cases through attack_classes.record / invoke / one_clean_line."""

    def __init__(self, cls: str, invoke: Callable[..., Any], one_clean_line: Callable[[Any], str | None],
                 record: Callable[..., None]):
        self.cls, self.invoke, self.one_clean_line, self.record = cls, invoke, one_clean_line, record
        self.pristine: Path | None = None  # a copy of the work folder to restore after a case changed it

    def keep(self, d: Path) -> None:
        """Remember ``d`` as it is now (without links/, which the cases recreate)."""
        self.pristine = d.parent / (d.name + ".pristine")
        shutil.rmtree(self.pristine, ignore_errors=True)
        shutil.copytree(d, self.pristine, symlinks=True, ignore=shutil.ignore_patterns("links"))

    def restore(self, d: Path) -> None:
        for p in list(d.iterdir()):
            shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
        if self.pristine is not None:
            shutil.copytree(self.pristine, d, symlinks=True, dirs_exist_ok=True)

    def refused(self, case: str, d: Path, args: list[Any], words: tuple[str, ...] = ()) -> None:
        before = snapshot(d)
        res = self.invoke(*args)
        problem = self.one_clean_line(res)
        if problem is None and res.exit_code not in (1, 2):  # 2: a usage error, also one line
            problem = f"exit {res.exit_code}: {res.output.strip().splitlines()[-1][:160] if res.output.strip() else ''}"
        if problem is None:
            line = next((ln for ln in res.output.splitlines() if ln.startswith("Error:")), "")
            missing = [w for w in words if w not in line]
            if missing:
                problem = f"message lacks {missing}: {line[:160]}"
        after = snapshot(d)
        if problem is None and after != before:
            changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
            problem = f"files changed: {changed[:5]}"
        self.record(self.cls, case, problem, f"exit {res.exit_code}")
        # put the folder back for the next case whatever happened: a destroyed input would make
        # every later case fail for the wrong reason (and count as clean)
        if after != before:
            if self.pristine is not None:
                self.restore(d)
            else:
                for k in sorted(set(after) - set(before), reverse=True):
                    p = d / k
                    if p.is_symlink() or p.is_file():
                        p.unlink()
                    elif p.is_dir():
                        shutil.rmtree(p, ignore_errors=True)

    def works(self, case: str, args: list[Any], expect: list[Path]) -> None:
        res = self.invoke(*args)
        problem = self.one_clean_line(res)
        if problem is None and res.exit_code != 0:
            problem = f"exit {res.exit_code}: {res.output.strip().splitlines()[-1][:160] if res.output.strip() else ''}"
        if problem is None and not all(p.exists() for p in expect):
            problem = f"missing {[p.name for p in expect if not p.exists()]}"
        self.record(self.cls, case, problem, f"exit {res.exit_code}")


# -- output options -------------------------------------------------------------------------------
LUT = ["lut", "--activation", "sigmoid", "--x-min", "-8", "--x-max", "8", "--delta", "1/16"]


def _spellings(d: Path, target: str) -> dict[str, str]:
    """The same file named four ways: as is, a symlink, a hard link, through `..`."""
    name = Path(target).name
    (d / "links").mkdir(exist_ok=True)
    sym = d / "links" / f"sym-{name}"
    hard = d / "links" / f"hard-{name}"
    if not sym.is_symlink():
        sym.symlink_to(d / target)
    if not hard.exists():
        os.link(d / target, hard)
    return {"direct": target, "symlink": str(sym.relative_to(d)), "hardlink": str(hard.relative_to(d)),
            "dotdot": f"links/../{target}"}


def output_options(t: Tally, work: Path, model: Path, ref: Path) -> None:
    d = work
    shutil.copy(model, d / "m.onnx")
    shutil.copy(ref, d / "m.reference.npz")
    (d / "calib").mkdir()
    x = np.load(d / "m.reference.npz")
    key = next(k for k in x.files if k.startswith("input."))
    for i in range(4):
        np.save(d / "calib" / f"s{i}.npy", x[key][i:i + 1])
    (d / "rel1").mkdir()
    (d / "rel1" / "report.json").write_text('{"artifacts": []}\n')
    (d / "p.json").write_text("[[0.0]]")
    (d / "w.json").write_text("{}")
    (d / "data.npz").write_bytes(b"data the user keeps")
    (d / "weights.pt").write_bytes(b"state dict")
    os.chdir(d)
    (d / "wts.onnx").write_bytes(b"weights")
    (d / "cal.onnx").write_bytes(b"calibration the recipe reads")
    shutil.copy(Path(__file__).resolve().parent.parent / "calibration_data" / "xor.npz", d / "xor.npz")
    t.keep(d)
    # command -> (base argv, {input flag: file}, [output flags])
    commands: dict[str, tuple[list[str], dict[str, str], list[str]]] = {
        "verify": (["verify", "m.onnx", "--reference", "m.reference.npz", "--baseline", "rel1/report.json"],
                   {"ARTIFACT": "m.onnx", "--reference": "m.reference.npz", "--baseline": "rel1/report.json"},
                   ["--junit", "--summary"]),
        "bench": (["bench", "m.onnx", "--data", "data.npz"], {"ARTIFACT": "m.onnx", "--data": "data.npz"}, ["--json"]),
        "lut --apply": (LUT + ["--apply", "m.onnx", "--reference", "m.reference.npz"],
                        {"--apply": "m.onnx", "--reference": "m.reference.npz"}, ["-o", "--html"]),
        "loadtest": (["loadtest", "http://127.0.0.1:9", "--payload", "p.json"], {"--payload": "p.json"},
                     ["--json", "--html"]),
        "export": (["export", "xor", "--input-shape", "1,2", "--input-name", "x", "--output-name", "y",
                    "--reference-data", "data.npz", "--weights", "weights.pt"],
                   {"--reference-data": "data.npz", "--weights": "weights.pt"}, ["-o"]),
        "simplify": (["simplify", "m.onnx"], {"INPUT": "m.onnx"}, ["-o"]),
        "fold": (["fold", "m.onnx"], {"INPUT": "m.onnx"}, ["-o"]),
        "quantize --int8": (["quantize", "m.onnx", "--int8", "--calibration", "calib", "--reference",
                             "m.reference.npz"], {"MODEL": "m.onnx", "--reference": "m.reference.npz"}, ["-o"]),
        "quantize --fp16": (["quantize", "m.onnx", "--fp16"], {"MODEL": "m.onnx"}, ["-o"]),
        "weights --load": (["weights", "--load", "w.json"], {"--load": "w.json"}, ["-o"]),
    }
    default_out = {"-o": "o.onnx", "--junit": "j.xml", "--summary": "s.md", "--json": "r.json", "--html": "r.html"}
    for cmd, (base, inputs, outs) in commands.items():
        for out in outs:
            others = [a for o in outs if o != out for a in (o, default_out[o])]
            if cmd == "weights --load":
                others = []
            needs_o = [] if out == "-o" or "-o" not in outs else ["-o", default_out["-o"]]
            if cmd in ("export", "simplify", "fold", "quantize --int8", "quantize --fp16") and out != "-o":
                needs_o = ["-o", "o.onnx"]
            for flag, target in inputs.items():
                for how in ("direct", "symlink", "hardlink", "dotdot"):
                    name = _spellings(d, target)[how]
                    t.refused(f"{cmd} {out} = {flag} ({how})", d,
                              [*base, *[a for a in others if a not in needs_o], *needs_o, out, name])
            for o in outs:
                if o != out:
                    t.refused(f"{cmd} {out} = {o}", d, [*base, o, "same.xml", out, "same.xml"])
            for bad in ("x.yaml", "x.npz", "x.txt.onnx.bak", "x.json" if out in ("--junit", "-o") else "x.xml"):
                if cmd in ("lut --apply",) and out == "-o" and bad.endswith(".json"):
                    continue
                t.refused(f"{cmd} {out} wrong kind {bad}", d, [*base, *needs_o, out, bad])
    # verify --report-dir over the baseline's directory (three spellings) and --junit inside it
    for how, name in {"direct": "rel1", "dotdot": "calib/../rel1", "trailing slash": "rel1/"}.items():
        t.refused(f"verify --report-dir = --baseline dir ({how})", d,
                  ["verify", "m.onnx", "--reference", "m.reference.npz", "--baseline", "rel1", "--report-dir", name])
    t.refused("verify --junit inside --report-dir", d,
              ["verify", "m.onnx", "--reference", "m.reference.npz", "--junit", "rep/report.json", "--report-dir", "rep"])
    t.refused("lut -o table and --html the same", d, [*LUT, "-o", "t.json", "--html", "t.json"])
    t.refused("lut -o table and its default page a symlink to the table", d, [*LUT, "-o", "links/../t.json",
                                                                              "--html", "t.json"])
    t.refused("export -o inside --reference-data dir", d, ["export", "xor", "-o", "calib/m.onnx", "--reference-data",
                                                           "calib"])
    t.refused("features -o into an input's directory", d, ["features", "p.json", "-o", "."])
    # recipe step outputs over files the recipe reads
    recipe_cases = {
        "output: the reference data": ("reference_data: xor.npz\n", "xor.npz"),
        "output: the recipe itself": ("", "r.yaml"),
        "output: the weights (.onnx name)": ("weights: wts.onnx\n", "wts.onnx"),
        "output: the calibration file": ("", "cal.onnx"),
        "output: a .npz": ("", "x.npz"),
        "output: a .engine for simplify": ("", "x.engine"),
    }
    for case, (top, out) in recipe_cases.items():
        extra = ("  - pass: quantize-int8\n    input: export\n    params: {calibration: cal.onnx}\n"
                 if "calibration" in case else "")
        (d / "r.yaml").write_text(f"name: r\nmodel: xor\n{top}steps:\n  - pass: export\n"
                                  "    params: {input_shape: [1, 2], input_name: x, output_name: y}\n"
                                  f"  - pass: simplify\n    output: {out}\n{extra}")
        t.keep(d)  # with this r.yaml
        t.refused(f"run: {case}", d, ["run", "r.yaml", "-o", "."])
    # control: the same commands with distinct outputs work
    t.works("control: lut table and page", [*LUT, "-o", "ok.json"], [d / "ok.json", d / "ok.html"])
    t.works("control: verify with every output", ["verify", "m.onnx", "--reference", "m.reference.npz", "--junit",
                                                  "ok.xml", "--summary", "ok.md", "--report-dir", "okrep"],
            [d / "ok.xml", d / "ok.md", d / "okrep" / "report.json", d / "okrep" / "report.html"])


# -- disk full ------------------------------------------------------------------------------------
@contextlib.contextmanager
def full_disk(d: Path, kb: int = 200):
    """A ``kb`` KB tmpfs at ``d`` (root in a container that allows mounts), filled to the brim; None
    when it cannot be mounted here."""
    d.mkdir(parents=True, exist_ok=True)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={kb}k", "tmpfs", str(d)],
                      capture_output=True).returncode != 0:
        yield None
        return
    try:
        yield d
    finally:
        os.chdir(d.parent)
        subprocess.run(["umount", str(d)], capture_output=True)


def _fill(d: Path, leave: int) -> None:
    """Fill the file system of ``d`` until ``leave`` bytes are free."""
    st = os.statvfs(d)
    free = st.f_bavail * st.f_frsize
    with open(d / "filler", "wb") as f:
        with contextlib.suppress(OSError):
            f.write(b"\0" * max(0, free - leave))


def disk_full(t: Tally, work: Path, model: Path, ref: Path, wjson: Path) -> None:
    """Each writer into a full disk at several fill levels: exit 1, one line, no partial file, and
    the files that belong together (table + page, report.json + report.html + junit + summary) all
    absent. Real tmpfs when mountable; else the writes get ENOSPC injected (monkeypatched)."""
    jobs = {
        "lut table+page": (LUT + ["--delta", "1/512", "-o", "t.json"], ["t.json", "t.html"]),
        "verify reports": (["verify", model, "--reference", ref, "--report-dir", "rep", "--junit", "j.xml",
                            "--summary", "s.md"], ["rep/report.json", "rep/report.html", "j.xml", "s.md"]),
        "weights json": (["weights", "--load", wjson, "-o", "w.json"], ["w.json"]),
        "weights onnx": (["weights", "--load", wjson, "-o", "w.onnx"], ["w.onnx"]),
        "bench json": (["bench", model, "--iterations", "2", "--warmup", "0", "--json", "b.json"], ["b.json"]),
        "simplify": (["simplify", model, "-o", "s.onnx"], ["s.onnx"]),
    }
    with full_disk(work / "tmpfs") as mnt:
        levels = (0, 512, 4096, 20_000, 60_000) if mnt is not None else (None,)
        for job, (args, files) in jobs.items():
            for leave in levels:
                case = f"{job} ({'tmpfs' if mnt is not None else 'ENOSPC injected'}, {leave} B free)"
                if mnt is not None:
                    for p in list(mnt.iterdir()):
                        shutil.rmtree(p) if p.is_dir() else p.unlink()
                    os.chdir(mnt)
                    _fill(mnt, leave)
                    res = t.invoke(*args)
                    d = mnt
                else:
                    d = work / "inj"
                    d.mkdir(exist_ok=True)
                    os.chdir(d)
                    res = _with_enospc(t, args)
                problem = t.one_clean_line(res)
                present = [f for f in files if (d / f).exists()]
                partial = [p.name for p in d.rglob("*") if ".partial" in p.name]
                if res.exit_code == 0:
                    if len(present) != len(files):
                        problem = f"exit 0 but missing {sorted(set(files) - set(present))}"
                elif problem is None and res.exit_code != 1:
                    problem = f"exit {res.exit_code}"
                elif problem is None and present:
                    problem = f"exit 1 but left {present}"
                if problem is None and partial:
                    problem = f"partial files left: {partial}"
                t.record(t.cls, case, problem, "exit 0 (fit)" if res.exit_code == 0 else f"exit {res.exit_code}")
                if mnt is None:
                    shutil.rmtree(d, ignore_errors=True)


def _with_enospc(t: Tally, args: list[Any]) -> Any:
    real_write_text, real_write_bytes = Path.write_text, Path.write_bytes
    calls = {"n": 0}

    def fail_second(real: Callable[..., Any]) -> Callable[..., Any]:
        def write(self: Path, *a: Any, **k: Any) -> Any:
            calls["n"] += 1
            if calls["n"] >= 2 or ".partial" in self.name:
                raise OSError(errno.ENOSPC, "No space left on device", str(self))
            return real(self, *a, **k)
        return write

    Path.write_text, Path.write_bytes = fail_second(real_write_text), fail_second(real_write_bytes)  # type: ignore
    try:
        return t.invoke(*args)
    finally:
        Path.write_text, Path.write_bytes = real_write_text, real_write_bytes  # type: ignore


# -- weights JSON ---------------------------------------------------------------------------------
def weights(t: Tally, work: Path) -> None:
    d = work
    os.chdir(d)
    assert t.invoke("weights", "xor", "--layout", "augmented", "-o", "aug.json").exit_code == 0
    assert t.invoke("weights", "xor", "--layout", "by-layer", "-o", "bl.json").exit_code == 0
    assert t.invoke("weights", "xor", "--layout", "list", "-o", "li.json").exit_code == 0
    good = {n: json.loads((d / n).read_text()) for n in ("aug.json", "bl.json", "li.json")}
    variants: dict[str, Callable[[dict[str, Any]], Any]] = {}

    def aug(fn):  # noqa: ANN001, ANN202
        return lambda: fn(json.loads(json.dumps(good["aug.json"])))

    def bl(fn):  # noqa: ANN001, ANN202
        return lambda: fn(json.loads(json.dumps(good["bl.json"])))

    def li(fn):  # noqa: ANN001, ANN202
        return lambda: fn(json.loads(json.dumps(good["li.json"])))

    def setp(doc, path, value):  # noqa: ANN001, ANN202
        cur = doc
        for k in path[:-1]:
            cur = cur[k]
        if value is DELETE:
            del cur[path[-1]]
        else:
            cur[path[-1]] = value
        return doc

    DELETE = object()
    for layer in ("Layer1", "Layer2"):
        for row in range(3 if layer == "Layer1" else 3):
            variants[f"augmented {layer} row {row} deleted"] = aug(
                lambda doc, layer=layer, row=row: setp(doc, ["layers", layer],
                                                       [r for i, r in enumerate(doc["layers"][layer]) if i != row]))
        variants[f"augmented {layer} column added"] = aug(
            lambda doc, layer=layer: setp(doc, ["layers", layer], [r + [0.5] for r in doc["layers"][layer]]))
        variants[f"augmented {layer} row added"] = aug(
            lambda doc, layer=layer: setp(doc, ["layers", layer], doc["layers"][layer] + [doc["layers"][layer][0]]))
        variants[f"by-layer {layer} bias row deleted"] = bl(
            lambda doc, layer=layer: setp(doc, ["layers", layer, "bias"], doc["layers"][layer]["bias"][:-1]))
        variants[f"by-layer {layer} weights row deleted"] = bl(
            lambda doc, layer=layer: setp(doc, ["layers", layer, "weights"], doc["layers"][layer]["weights"][:-1]))
        variants[f"by-layer {layer} weights ragged"] = bl(
            lambda doc, layer=layer: setp(doc, ["layers", layer, "weights", 0], doc["layers"][layer]["weights"][0] + [1.0]))
        variants[f"by-layer {layer} missing"] = bl(lambda doc, layer=layer: setp(doc, ["layers", layer], DELETE))
    for i in range(2):
        variants[f"list layer {i} bias row deleted"] = li(
            lambda doc, i=i: setp(doc, ["layers", i, "bias"], doc["layers"][i]["bias"][:-1]))
        variants[f"list layer {i} weights column deleted"] = li(
            lambda doc, i=i: setp(doc, ["layers", i, "weights"], [r[:-1] for r in doc["layers"][i]["weights"]]))
    for key in ("input", "output"):
        for v in ("", None, 5, ["x"]):
            variants[f"{key} = {v!r}"] = aug(lambda doc, key=key, v=v: setp(doc, [key], v))
    variants["input == output"] = aug(lambda doc: setp(doc, ["output"], doc["input"]))
    variants["shapes wrong"] = aug(lambda doc: setp(doc, ["shapes"], [[2, 3], [3, 1]]))
    variants["shapes too short"] = aug(lambda doc: setp(doc, ["shapes"], [[2, 2]]))
    variants["shapes negative"] = aug(lambda doc: setp(doc, ["shapes"], [[-2, 2], [2, 1]]))
    variants["shapes a string"] = aug(lambda doc: setp(doc, ["shapes"], "2x2"))
    variants["activation unknown"] = aug(lambda doc: setp(doc, ["activations", 0], "swish"))
    variants["activations too few"] = aug(lambda doc: setp(doc, ["activations"], ["sigmoid"]))
    variants["onnx_ops MatMul with a bias"] = aug(lambda doc: setp(doc, ["onnx_ops", 0], "MatMul"))
    variants["opset 99"] = aug(lambda doc: setp(doc, ["opset"], 99))
    variants["version 2"] = aug(lambda doc: setp(doc, ["version"], 2))
    variants["layers empty"] = aug(lambda doc: setp(doc, ["layers"], {}))
    variants["weight 1e39 (not float32)"] = aug(lambda doc: setp(doc, ["layers", "Layer1", 0, 0], 1e39))
    variants["weight a string"] = aug(lambda doc: setp(doc, ["layers", "Layer1", 0, 0], "1"))
    variants["weight true"] = aug(lambda doc: setp(doc, ["layers", "Layer1", 0, 0], True))
    texts = {
        "duplicate Layer1 key": (d / "aug.json").read_text().replace('"Layer1":', '"Layer1": [[1, 1], [1, 1], [1, 1]],'
                                                                     '\n"Layer1":', 1),
        "duplicate top-level key": (d / "aug.json").read_text().replace('"input":', '"input": "q", "input":', 1),
        "50k-deep nesting": "[" * 50_000 + "]" * 50_000,
        "5k-deep nesting in layers": (d / "aug.json").read_text().replace('"layers": {', '"layers": {"deep": '
                                                                          + "[" * 5000 + "]" * 5000 + ",", 1),
        "weight NaN": json.dumps(good["aug.json"]).replace(str(good["aug.json"]["layers"]["Layer1"][0][0]), "NaN", 1),
        "weight Infinity": json.dumps(good["aug.json"]).replace(str(good["aug.json"]["layers"]["Layer1"][0][0]),
                                                                 "Infinity", 1),
        "weight -Infinity": json.dumps(good["aug.json"]).replace(str(good["aug.json"]["layers"]["Layer1"][0][0]),
                                                                  "-Infinity", 1),
        "not UTF-8": None,
        "empty file": "",
        "a JSON list": "[]",
        "truncated": (d / "aug.json").read_text()[:200],
    }
    for case, make in variants.items():
        if make is None:
            continue
        (d / "in.json").write_text(json.dumps(make()))
        for out in ("o.onnx", "o.json"):
            t.refused(f"{case} -> {out}", d, ["weights", "--load", "in.json", "-o", out])
    for case, text in texts.items():
        if text is None:
            (d / "in.json").write_bytes(b'{"format": "\xff\xfe"}')
        else:
            (d / "in.json").write_text(text)
        for out in ("o.onnx", "o.json"):
            t.refused(f"{case} -> {out}", d, ["weights", "--load", "in.json", "-o", out])
    for n in good:
        t.works(f"control: {n} loads back", ["weights", "--load", n, "-o", f"back-{n}.onnx"], [d / f"back-{n}.onnx"])


# -- lut ------------------------------------------------------------------------------------------
def lut(t: Tally, work: Path, model: Path) -> None:
    d = work
    os.chdir(d)
    shutil.copy(model, d / "m.onnx")
    (d / "keep.json").write_text('{"mine": 1}')
    base = ["lut", "--activation", "sigmoid"]
    ranges = {"x-min > x-max": ["--x-min", "8", "--x-max", "-8", "--delta", "1/16"],
              "delta 0": ["--x-min", "-8", "--x-max", "8", "--delta", "0"],
              "delta -1": ["--x-min", "-8", "--x-max", "8", "--delta", "-1"],
              "delta nan": ["--x-min", "-8", "--x-max", "8", "--delta", "nan"],
              "x-min inf": ["--x-min", "-inf", "--x-max", "8", "--delta", "1/16"],
              "delta 1/0": ["--x-min", "-8", "--x-max", "8", "--delta", "1/0"],
              "delta a word": ["--x-min", "-8", "--x-max", "8", "--delta", "tiny"],
              "1e9 entries": ["--x-min", "-1e6", "--x-max", "1e6", "--delta", "1e-3"]}
    for case, r in ranges.items():
        t.refused(f"{case} -o t.json", d, [*base, *r, "-o", "t.json"])
    ok = ["--x-min", "-8", "--x-max", "8", "--delta", "1/16"]
    for case, extra in {
        "-o t.json --html t.json": ["-o", "t.json", "--html", "t.json"],
        "-o keep.json's page over keep.json (--html keep.json)": ["-o", "t.json", "--html", "keep.json"],
        "--apply, -o over the model": ["--apply", "m.onnx", "-o", "m.onnx"],
        "--apply, --html over the model": ["--apply", "m.onnx", "-o", "l.onnx", "--html", "m.onnx"],
        "--apply, --html over -o": ["--apply", "m.onnx", "-o", "l.onnx", "--html", "l.onnx"],
        "--apply, --reference = -o": ["--apply", "m.onnx", "-o", "l.onnx", "--reference", "l.onnx"],
        "--apply, -o a .json": ["--apply", "m.onnx", "-o", "l.json"],
        "-o a .onnx without --apply": ["-o", "t.onnx"],
        "--apply a missing model": ["--apply", "nope.onnx", "-o", "l.onnx"],
        "--apply a JSON file": ["--apply", "keep.json", "-o", "l.onnx"],
        "--apply, --threshold nan": ["--apply", "m.onnx", "-o", "l.onnx", "--threshold", "nan"],
        "--apply, --gate fp32.max_abs=inf": ["--apply", "m.onnx", "-o", "l.onnx", "--gate", "fp32.max_abs=inf"],
        "--apply, --report-dir over --reference's dir": ["--apply", "m.onnx", "-o", "l.onnx", "--reference",
                                                         "rd/report.json", "--report-dir", "rd"],
        "--html a directory": ["-o", "t.json", "--html", "."],
        "--html /proc/x.html": ["-o", "t.json", "--html", "/proc/x.html"],
    }.items():
        if "rd/report.json" in extra:
            (d / "rd").mkdir(exist_ok=True)
            (d / "rd" / "report.json").write_text("{}")
        t.refused(case, d, [*base, *ok, *extra])


# -- baselines ------------------------------------------------------------------------------------
def baselines(t: Tally, work: Path, model: Path, ref: Path) -> None:
    d = work
    os.chdir(d)
    res = t.invoke("verify", model, "--reference", ref, "--report-dir", "rel1")
    assert res.exit_code == 0, res.output
    good = json.loads((d / "rel1" / "report.json").read_text())
    n = len(good["artifacts"][0]["scores"])

    def edit(fn: Callable[[dict[str, Any]], Any]) -> str:
        doc = json.loads(json.dumps(good))
        fn(doc)
        return json.dumps(doc)

    a0 = lambda doc: doc["artifacts"][0]  # noqa: E731
    cases: dict[str, str] = {}
    for k in range(1, 4):
        cases[f"{n - k} of {n} scores"] = edit(lambda doc, k=k: a0(doc).__setitem__("scores", a0(doc)["scores"][:-k]))
    cases[f"{n + 1} scores"] = edit(lambda doc: a0(doc)["scores"].append(0.5))
    cases["scores empty"] = edit(lambda doc: a0(doc).__setitem__("scores", []))
    # every value below has a type the field cannot have (a score may be null: a non-finite output)
    for v in (None, "0.5", {"a": 1}, 3, True):
        cases[f"scores = {v!r}"] = edit(lambda doc, v=v: a0(doc).__setitem__("scores", v))
        cases[f"a score = {v!r}"] = edit(lambda doc, v=v: a0(doc)["scores"].__setitem__(0, v)) \
            if not isinstance(v, (type(None), int)) or isinstance(v, bool) else None
        cases[f"path = {v!r}"] = edit(lambda doc, v=v: a0(doc).__setitem__("path", v)) if v != "0.5" else None
        cases[f"precision = {v!r}"] = edit(lambda doc, v=v: a0(doc).__setitem__("precision", v)) \
            if v != "0.5" else None
        cases[f"runner = {v!r}"] = edit(lambda doc, v=v: a0(doc).__setitem__("runner", v))
        cases[f"threshold = {v!r}"] = edit(lambda doc, v=v: doc.__setitem__("threshold", v)) if v != 3 else None
        cases[f"task = {v!r}"] = edit(lambda doc, v=v: a0(doc).__setitem__("task", v)) \
            if not isinstance(v, (type(None), dict)) else None
        cases[f"task.accuracy = {v!r}"] = edit(lambda doc, v=v: a0(doc).__setitem__("task", {"accuracy": v})) \
            if v not in (None, 3) else None
        cases[f"identity.samples = {v!r}"] = edit(lambda doc, v=v: doc["reference"]["identity"].__setitem__("samples", v))
        cases[f"artifacts = {v!r}"] = edit(lambda doc, v=v: doc.__setitem__("artifacts", v))
        cases[f"reference = {v!r}"] = edit(lambda doc, v=v: doc.__setitem__("reference", v))
        cases[f"an artifact = {v!r}"] = edit(lambda doc, v=v: doc["artifacts"].__setitem__(0, v))
        cases[f"latency = {v!r}"] = edit(lambda doc, v=v: a0(doc).__setitem__("latency", v)) \
            if not isinstance(v, (type(None), dict)) else None
    cases["identity.samples 0"] = edit(lambda doc: doc["reference"]["identity"].__setitem__("samples", 0))
    cases["latency p50 0"] = edit(lambda doc: a0(doc).__setitem__("latency", {"p50_ms": 0, "min_ms": 1}))
    text = json.dumps(good)
    first = str(good["artifacts"][0]["scores"][0])
    for lit in ("NaN", "Infinity", "-Infinity"):
        cases[f"a score {lit}"] = text.replace(first, lit, 1)
        cases[f"threshold {lit}"] = text.replace('"threshold": 0.5', f'"threshold": {lit}', 1)
        cases[f"accuracy {lit}"] = edit(lambda doc: a0(doc).__setitem__("task", {"accuracy": 1.0})).replace(
            '"accuracy": 1.0', f'"accuracy": {lit}', 1)
    cases["not JSON"] = "{"
    cases["a JSON list"] = "[]"
    cases["50k-deep nesting"] = "[" * 50_000 + "]" * 50_000
    cases["deep nesting in an artifact"] = text.replace('"runner": {', '"deep": ' + "[" * 5000 + "]" * 5000
                                                        + ', "runner": {', 1)
    cases["not UTF-8"] = "\udcff"
    cases["no artifacts"] = edit(lambda doc: doc.pop("artifacts"))
    cases["no identity"] = edit(lambda doc: doc["reference"].pop("identity"))
    cases["other reference set"] = edit(lambda doc: doc["reference"]["identity"].__setitem__("inputs_sha256", "0" * 64))
    for case, body in cases.items():
        if body is None:
            continue
        (d / "base").mkdir(exist_ok=True)
        if body == "\udcff":
            (d / "base" / "report.json").write_bytes(b'{"artifacts": "\xff"}')
        else:
            (d / "base" / "report.json").write_text(body)
        t.refused(case, d, ["verify", model, "--reference", ref, "--baseline", "base", "--report-dir", "rel2",
                            "--junit", "j.xml"], ("baseline",))
    t.refused("baseline directory without report.json", d, ["verify", model, "--reference", ref, "--baseline", "rel2"])
    for case, fn in {"an artifact path named 0.5": lambda doc: a0(doc).__setitem__("path", "0.5"),
                     "an extra task key": lambda doc: a0(doc).__setitem__("task", None),
                     "a logit score 3": lambda doc: a0(doc)["scores"].__setitem__(0, 3.0)}.items():
        (d / "tol").mkdir(exist_ok=True)
        (d / "tol" / "report.json").write_text(edit(fn))
        res = t.invoke("verify", model, "--reference", ref, "--baseline", "tol")
        problem = t.one_clean_line(res) or (None if res.exit_code in (0, 3) else f"exit {res.exit_code}")
        t.record(t.cls, f"valid variant: {case} (compared, exit 0 or 3)", problem, f"exit {res.exit_code}")
    t.works("control: the release itself as baseline", ["verify", model, "--reference", ref, "--baseline", "rel1",
                                                         "--report-dir", "relok"], [d / "relok" / "report.json"])


# -- references -----------------------------------------------------------------------------------
def references22(t: Tally, work: Path, model: Path, ref: Path) -> None:
    d = work
    os.chdir(d)
    z = dict(np.load(ref, allow_pickle=False))
    okey = next(k for k in z if k.startswith("output."))
    n = len(z[okey])
    variants: dict[str, dict[str, Any]] = {}
    for labels in ([0, 1, 2], [0, -1, 1], [2], [0, 1, 255], [7]):
        variants[f"labels {labels}"] = {"labels": np.resize(np.array(labels), n)}
    variants["labels float 0.5"] = {"labels": np.full(n, 0.5)}
    variants["labels one short"] = {"labels": np.zeros(n - 1, np.int64)}
    variants["labels 2-D"] = {"labels": np.zeros((n, 2), np.int64)}
    variants["output doubled column"] = {okey: np.concatenate([z[okey], z[okey]], axis=-1)}
    variants["output 3 columns"] = {okey: np.concatenate([z[okey]] * 3, axis=-1)}
    variants["output of another model"] = {"output.not_mine": z[okey], okey: None}
    variants["extra output"] = {"output.extra": z[okey]}
    for case, change in variants.items():
        zz = dict(z)
        for k, v in change.items():
            if v is None:
                zz.pop(k)
            else:
                zz[k] = v
        np.savez(d / "v.npz", **zz)
        t.refused(case, d, ["verify", model, "--reference", "v.npz", "--report-dir", "rep"])
    zz = dict(z, labels=np.resize(np.array([0, 1]), n))
    np.savez(d / "ok.npz", **zz)
    t.works("control: labels 0/1", ["verify", model, "--reference", "ok.npz"], [])


# -- thresholds and gates -------------------------------------------------------------------------
def thresholds(t: Tally, work: Path, model: Path, ref: Path) -> None:
    d = work
    os.chdir(d)
    for v in ("nan", "NaN", "inf", "-inf", "Infinity", "1e999", "-1e999", "x", ""):
        t.refused(f"--threshold {v!r}", d, ["verify", model, "--reference", ref, "--threshold", v, "--report-dir", "r"])
    limits = {"max_abs": ("nan", "inf", "-1", "-inf"), "mean_abs": ("nan", "-0.1", "inf"),
              "min_agreement": ("nan", "2", "-0.5", "1.0001", "inf"), "min_cosine": ("nan", "1.5", "-2"),
              "min_snr_db": ("nan", "inf", "-inf"), "max_accuracy_drop": ("nan", "-0.1", "1.5"),
              "unknown_limit": ("0.1",)}
    for prec in ("fp32", "fp16", "int8"):
        for limit, values in limits.items():
            for v in values:
                t.refused(f"--gate {prec}.{limit}={v}", d, ["verify", model, "--reference", ref, "--gate",
                                                            f"{prec}.{limit}={v}", "--report-dir", "r"])
    for g in ("fp64.max_abs=1", "fp32max_abs=1", "fp32.max_abs", "fp32.max_abs=1e-3=2"):
        t.refused(f"--gate {g}", d, ["verify", model, "--reference", ref, "--gate", g])
    for v in ("nan", "-1%", "x%", "inf"):
        t.refused(f"--max-regression decision_changes={v}", d,
                  ["verify", model, "--reference", ref, "--baseline", "nope", "--max-regression",
                   f"decision_changes={v}"])
    for v in ("nan", ".nan", "inf", "2", "-1"):
        (d / "r.yaml").write_text("model: xor\nsteps:\n  - pass: export\n    params: {input_shape: [1, 2]}\n"
                                  f"verify:\n  threshold: 0.5\n  gates: {{int8: {{min_agreement: {v}}}}}\n")
        t.refused(f"recipe gates int8.min_agreement: {v}", d, ["run", "r.yaml", "-o", "out"])
    t.works("control: --gate fp32.max_abs=off", ["verify", model, "--reference", ref, "--gate", "fp32.max_abs=off"], [])


# -- loadtest URLs --------------------------------------------------------------------------------
def loadtest_urls(t: Tally, work: Path, model: Path) -> None:
    d = work
    os.chdir(d)
    urls = ["http://127.0.0.1:notaport", "http://[::1", "http://[::1]:99999", "http://127.0.0.1:-1",
            "http://127.0.0.1:65536", "http://[::1]x:80", "http://[:::1]:80", "http://127.0.0.1:80:81", "http://",
            "http:///x", "127.0.0.1:8000", "ftp://127.0.0.1", "file:///etc/passwd", "http://10.0.0.1:8000",
            "http://0.0.0.0:8000", "http://example.com", "http://127.0.0.1@10.0.0.1:80", "http://[fe80::1%25lo]:80",
            "http://\udcff:80", "http://127.0.0.1:8000\n", "", " ", "http://127.0.0.1:0x50", "http://[::ffff:10.0.0.1]:80"]
    for u in urls:
        t.refused(f"loadtest {u!r}", d, ["loadtest", u, "--max", "1", "--step-seconds", "0.1"])
    for arg in ("--host=0.0.0.0", "--host=::", "--port=80", "--host", "--port"):
        t.refused(f"--compare --serve-arg={arg}", d, ["loadtest", "--compare", model, f"--serve-arg={arg}"])
    for v in ("--host 0.0.0.0", "--max-batch 2 --host=::", "--port 1", "'unclosed"):
        t.refused(f"--compare --variant {v!r}", d, ["loadtest", "--compare", model, "--variant", v])
