from __future__ import annotations

import click


@click.command(short_help="Show versions, runtimes, CPU features and what can run here.")
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON.")
def doctor(as_json):
    """Report what optkit can do on this machine and what to install for the rest.

    Versions of optkit and its libraries, ONNX Runtime's execution providers, CPU features
    (AVX-512 VNNI matters for int8 speed), OpenVINO, and whether CUDA / TensorRT are usable.

    \b
    Example:
      optkit doctor
    """
    import json

    from optkit.runtime.doctor import collect

    info = collect()
    if as_json:
        click.echo(json.dumps(info, indent=2, default=str))
        return
    click.echo(f"optkit {info['versions'].get('optkit')}  (Python {info['python']})")
    click.echo("versions:")
    for name, v in info["versions"].items():
        click.echo(f"  {name:22s} {v or 'not installed'}")
    cpu = info.get("cpu") or {}
    click.echo(f"CPU: {cpu.get('model', '?')}, {cpu.get('logical_cpus', '?')} logical CPUs")
    feats = cpu.get("features") or {}
    if feats:
        click.echo("  features: " + ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in feats.items()))
    if cpu.get("int8_acceleration"):
        click.echo(f"  int8 acceleration: {cpu['int8_acceleration']}")
    if cpu.get("openvino_bf16_by_default"):
        click.echo("  note: OpenVINO runs fp32 models in bf16 here unless the precision hint is pinned (optkit pins f32)")
    click.echo(f"ONNX Runtime providers: {', '.join(info.get('ort_providers') or []) or 'onnxruntime not installed'}")
    click.echo("providers (--provider, verify.provider):")
    for name, r in info["runners"].items():
        click.echo(f"  {name:10s} {r['what']} (runs {', '.join(r['runs'])}; install: {r['install']})")
    click.echo("can run here:")
    for name, st in info["capabilities"].items():
        mark = "yes" if st.get("usable") else "no "
        line = f"  [{mark}] {name:18s} {st.get('reason', '')}"
        if not st.get("usable") and st.get("install"):
            line += f" -> {st['install']}"
        click.echo(line)
