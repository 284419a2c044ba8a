"""`loopstack gpu ...` prints the numbers the Python API returns."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

import loopstack.economics as ec
from loopstack.core.errors import LoopstackError
from loopstack.economics.cli import gpu


def _run(*args: str) -> str:
    result = CliRunner().invoke(gpu, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def test_estimate_prints_the_api_total() -> None:
    out = _run("estimate", "llama-2-7b", "--method", "qlora", "--recompute", "full", "--rank", "8", "--targets", "q,v")
    total = ec.training_memory("llama-2-7b", method="qlora", recompute="full", lora_rank=8, lora_targets=["q", "v"])
    assert f"{total.total / ec.GiB:,.2f}" in out
    assert "4,194,304 trainable" in out


def test_estimate_takes_the_api_keyword_names_too() -> None:
    # the short flags differed from the Python keywords (lora_rank, zero_stage, tensor_parallel)
    short = _run("estimate", "llama-2-7b", "--method", "lora", "--rank", "8", "--zero", "2", "--gpus", "4")
    assert _run("estimate", "llama-2-7b", "--method", "lora", "--lora-rank", "8", "--zero-stage", "2",
                "--gpus", "4") == short
    assert short != _run("estimate", "llama-2-7b", "--method", "lora", "--gpus", "4")
    served = _run("estimate", "llama-2-70b", "--workload", "inference", "--tp", "4")
    assert _run("estimate", "llama-2-70b", "--workload", "inference", "--tensor-parallel", "4") == served


def test_estimate_with_fsdp_and_inference_and_config_json(tmp_path: Path) -> None:
    out = _run("estimate", "llama-2-70b", "--fsdp", "FULL_SHARD", "--gpus", "64", "--recompute", "full")
    est = ec.training_memory("llama-2-70b", zero_stage=3, gpus=64, recompute="full")
    assert f"{est.optimizer / ec.GiB:,.2f}" in out
    out = _run("estimate", "mistral-7b", "--method", "inference", "--dtype", "int4", "--context", "4096")
    assert "kv_cache" in out and "overhead" in out
    # gpu plan's name for it works here too
    assert _run("estimate", "mistral-7b", "--workload", "inference", "--dtype", "int4", "--context", "4096") == out
    assert "a training method" in _fails("estimate", "mistral-7b", "--workload", "inference", "--method", "lora",
                                         code=2)
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps({"model_type": "llama", "num_hidden_layers": 2, "hidden_size": 64,
                                  "num_attention_heads": 4, "vocab_size": 100, "intermediate_size": 128}))
    assert "tiny: full" in _run("estimate", str(config))


def test_plan_breakeven_models_and_errors(tmp_path: Path) -> None:
    out = _run("plan", "llama-3-8b", "--tokens", "1e9", "--method", "lora")
    best = ec.right_size("llama-3-8b", tokens=1e9, method="lora", recompute="selective")
    assert out.index(best.gpu) < out.index("yes") + 200 and f"{best.cost:,.2f}" in out
    assert "27.8%" in _run("breakeven")  # H100 on the packaged table
    assert "mixtral-8x7b" in _run("models")
    message = _fails("estimate", "llama-9")
    assert "no model preset 'llama-9'" in message
    assert "config.json" in message and "ModelConfig" not in message  # a fix a shell user can apply
    bad = tmp_path / "p.yaml"
    bad.write_text("gpus: []\n")
    assert "'gpus:' section" in _fails("plan", "gpt2", "--prices", str(bad))


def test_errors_start_with_error_as_every_other_command() -> None:
    """`loopstack gpu` printed click's `Error: ...` where every other command prints `error: ...`."""
    done = subprocess.run([sys.executable, "-m", "loopstack", "gpu", "estimate", "llama-9"], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 1 and done.stderr.startswith("error: no model preset 'llama-9'"), done.stderr


def _fails(*args: str, code: int = 1) -> str:
    """The one-line message: a loopstack error (`loopstack.cli.main` prints it) or click's usage error."""
    result = CliRunner().invoke(gpu, list(args))
    assert result.exit_code == code, result.output
    if isinstance(result.exception, LoopstackError):
        return str(result.exception)
    assert isinstance(result.exception, SystemExit), repr(result.exception)  # a message, not a traceback
    return result.output


def test_bad_price_tables_and_model_configs_are_named(tmp_path: Path) -> None:
    (tmp_path / "broken.yaml").write_text("gpus: [\n")
    (tmp_path / "binary.yaml").write_bytes(b"\xc0\xff\x00")
    assert "broken.yaml is not valid YAML at line 2" in _fails("breakeven", "--prices", str(tmp_path / "broken.yaml"))
    assert "binary.yaml is not text" in _fails("plan", "gpt2", "--prices", str(tmp_path / "binary.yaml"))
    assert "model config missing.json does not exist" in _fails("estimate", "missing.json")
    assert "use one of [1, 2, 4, 8, 16, 32]" in _fails("estimate", "llama-3-8b", "--tp", "3")
    (tmp_path / "config.json").write_text("{")
    assert "is not JSON" in _fails("estimate", str(tmp_path / "config.json"))


def test_counts_and_shares_out_of_range_are_usage_errors() -> None:
    assert "0 is not in the range x>=1" in _fails("estimate", "gpt2", "--rank", "0", code=2)
    assert "0 is not in the range x>=1" in _fails("estimate", "gpt2", "--method", "inference", "--context", "0", code=2)
    assert "0.0 is not in the range x>0" in _fails("plan", "gpt2", "--tokens", "0", code=2)
    assert "5.0 is not in the range 0<x<=1" in _fails("plan", "gpt2", "--utilization", "5", code=2)
    assert "0 is not in the range x>=1" in _fails("plan", "gpt2", "--max-gpus", "0", code=2)


def test_plan_with_odd_tables_and_spot_rates_explains_instead_of_printing_nothing(tmp_path: Path) -> None:
    (tmp_path / "flat.yaml").write_text("gpus:\n  H100: 3.5\n")
    assert "gpus.H100 must be a mapping" in _fails("plan", "gpt2", "--prices", str(tmp_path / "flat.yaml"))
    (tmp_path / "rent.yaml").write_text("gpus:\n  T4: {memory_gb: 16, bf16_tflops: 65, cloud: {on_demand: 0.4}}\n")
    out = _fails("plan", "gpt2", "--pricing", "owned", "--prices", str(tmp_path / "rent.yaml"))
    assert "no GPU in the price table has a 'owned' price" in out  # was an empty table and exit 0
    assert "preemptions_per_hour=nan" in _fails("plan", "gpt2", "--pricing", "spot", "--preemptions-per-hour", "nan")
    one_byte = _run("estimate", "gpt2", "--method", "inference", "--dtype", "1", "--context", "8")  # a byte count
    assert f"{ec.weight_bytes('gpt2', 'int8') / ec.GiB:,.2f}" in one_byte
