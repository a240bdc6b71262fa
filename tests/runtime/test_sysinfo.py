"""sysinfo: parsing /proc/cpuinfo text (given, not this machine's) and library versions."""
from __future__ import annotations

from optkit.runtime import sysinfo

XEON = """\
processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8480+
physical id\t: 0
core id\t\t: 0
cpu cores\t: 2
flags\t\t: fpu sse4_2 avx avx2 fma f16c avx512f avx512bw avx512_vnni avx512_bf16 amx_tile amx_int8 amx_bf16

processor\t: 1
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8480+
physical id\t: 0
core id\t\t: 0
flags\t\t: fpu sse4_2 avx avx2 fma f16c avx512f avx512bw avx512_vnni avx512_bf16 amx_tile amx_int8 amx_bf16

processor\t: 2
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8480+
physical id\t: 0
core id\t\t: 1
flags\t\t: fpu sse4_2 avx avx2 fma f16c avx512f avx512bw avx512_vnni avx512_bf16 amx_tile amx_int8 amx_bf16
"""

AVX2_ONLY = """\
processor\t: 0
model name\t: AMD Ryzen 7 3700X
flags\t\t: fpu sse4_2 avx avx2 fma f16c

processor\t: 1
model name\t: AMD Ryzen 7 3700X
flags\t\t: fpu sse4_2 avx avx2 fma f16c
"""

ARM = """\
processor\t: 0
BogoMIPS\t: 50.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics asimddp

processor\t: 1
BogoMIPS\t: 50.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics asimddp
"""


def test_parse_xeon_with_amx():
    info = sysinfo.parse_cpuinfo(XEON)
    assert info.model == "Intel(R) Xeon(R) Platinum 8480+"
    assert info.logical_cpus == 3
    assert info.physical_cores == 2  # (0,0) twice (hyper-threads) and (0,1)
    feats = info.features()
    assert feats["avx2"] and feats["avx512f"] and feats["avx512_vnni"] and feats["amx_int8"]
    assert not feats["avx_vnni"] and not feats["amx_fp16"]
    assert info.int8_acceleration().startswith("AMX-INT8")
    assert info.bf16_by_default()
    js = info.to_json()
    assert "fpu" not in js["flags"] and "amx_bf16" in js["flags"]
    assert js["openvino_bf16_by_default"] is True


def test_parse_avx2_only_cpu():
    info = sysinfo.parse_cpuinfo(AVX2_ONLY)
    assert info.model == "AMD Ryzen 7 3700X"
    assert info.logical_cpus == 2
    assert info.physical_cores is None  # no core ids listed
    assert info.features()["avx2"] and not info.features()["avx512f"]
    assert info.int8_acceleration().startswith("none (AVX2 only")
    assert not info.bf16_by_default()


def test_parse_arm_and_empty_text():
    arm = sysinfo.parse_cpuinfo(ARM)
    assert arm.logical_cpus == 2 and arm.model == "unknown"
    assert "asimd" in arm.flags and not any(arm.features().values())
    assert arm.int8_acceleration() == "none"
    empty = sysinfo.parse_cpuinfo("")
    assert empty.logical_cpus == 0 and empty.flags == frozenset()


def test_cpu_info_without_proc_file(tmp_path):
    info = sysinfo.cpu_info(tmp_path / "no-cpuinfo")
    assert info.logical_cpus >= 1 and info.model


def test_library_versions_from_metadata():
    versions = sysinfo.library_versions(("numpy", "surely-not-installed-dist"))
    assert versions["numpy"] and versions["numpy"][0].isdigit()
    assert versions["surely-not-installed-dist"] is None


def test_collect_is_json_friendly():
    import json

    data = sysinfo.collect()
    assert set(data) >= {"python", "cpu", "usable_cpus", "libraries"}
    assert data["usable_cpus"] >= 1
    json.dumps(data)


def test_u8s8_saturation_risk_is_avx2_without_vnni():
    assert sysinfo.parse_cpuinfo(AVX2_ONLY).u8s8_saturates()
    assert not sysinfo.parse_cpuinfo(XEON).u8s8_saturates()       # VNNI and AMX
    assert not sysinfo.parse_cpuinfo(ARM).u8s8_saturates()        # not x86
    assert not sysinfo.parse_cpuinfo("").u8s8_saturates()         # nothing known
