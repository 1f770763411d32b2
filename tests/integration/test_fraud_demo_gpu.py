"""``custodes demo fraud --gpu`` end to end through the real CLI: the dataset key is released
only when the CPU (sample TEE) and the GPU are both affirming, and refused for a GPU in debug
mode. The GPU evidence is upstream's recorded H100 report replayed with each session's nonce
and re-signed by the demo's own device key; the "debug mode" GPU is a derived report whose
measurement 2 is not the golden value (see examples/fraud-detection/gpu/README.md)."""

from __future__ import annotations

from live_broker import run_cli


def _section(text: str, start: str, end: str) -> str:
    begin = text.index(start)
    return text[begin : text.index(end, begin)]


def test_demo_fraud_gpu_path() -> None:
    result = run_cli("demo", "fraud", "--gpu", "--rows", "5000")
    out, err = result.stdout.decode(), result.stderr.decode()
    assert result.returncode == 0, out + err
    gpu = _section(out, "== 2b. The same workload on a GPU", "== 3.")
    assert "INSECURE: no GPU here" in gpu
    trusted, debug = gpu.split("a GPU in debug mode", 1)
    assert "appraisal: cpu0 affirming, gpu0 affirming" in trusted
    assert "the key is released to the TEE: sha256:" in trusted and "WRONG" not in trusted
    assert "appraisal: cpu0 affirming, gpu0 warning" in debug
    assert "the key is refused (401 PolicyDeny)" in debug
    assert "released" not in debug
    # The rest of the scenario is unchanged: the untrusted CPU is still refused after.
    assert "the application ran: no" in out


def test_gpu_option_is_for_the_fraud_scenario_only() -> None:
    result = run_cli("demo", "--gpu")
    assert result.returncode == 1
    assert b"--gpu: only for `custodes demo fraud`" in result.stderr
