"""`llcompile report --workers`: the projected throughput on N workers, worked out by hand on the tiny CNN.

    input 3x8x8 -> u0.conv 3x3 (3->4) + BN + ReLU -> u1.pool MaxPool 2x2 -> u2.conv 3x3 (4->8) + ReLU
                -> GAP -> Flatten -> head.fc (8->10)

Segments: 0 = u0.conv (out u1.out, 4x4x4 = 64 floats = 256 bytes a sample), 1 = u2.conv (out the
flattened GAP, 8 floats = 32 bytes), 2 = head.fc. bp's training MACs per sample (test_cost_model):
u0.conv 6912 forward + 6912 dW = 13824 (no dX: the network's first layer), u2.conv 3 x 4608 = 13824,
head.fc 3 x 80 = 240; total 27888, forward 11600. Gradients: 108 + 8 (BN) + 288 + 90 = 494 floats.

Settings of every case: batch 2, 1e6 MAC/s per worker, links of 0.001 Gbit/s = 125,000 bytes/s. So
compute: segment 0 2 x 13824 / 1e6 = 27.648 ms, segment 1 27.648 ms, segment 2 0.48 ms; traffic:
u1.out 2 x 256 / 125000 = 4.096 ms, the GAP output 2 x 32 / 125000 = 0.512 ms; bp on one worker
2 x 27888 / 1e6 = 55.776 ms a step.
"""

import json

import pytest

import llcompile
from tests.cli.test_report import run, user_error

SETTINGS = ["--batch-size", "2", "--mac-rate", "1e6", "--link-gbps", "0.001", "--format", "json"]
BP_STEP = 0.055776


def projection(monkeypatch, capsys, model, *args):
    code, out, err = run(monkeypatch, capsys, "report", model, *args)
    assert code == 0, err
    return json.loads(out)["parallel_projection"]


def rows_of(projection_dict, scheme):
    return {r["workers"]: r for r in projection_dict["rows"] if r["scheme"] == scheme}


def test_dbl_stages_by_hand(tiny_model, monkeypatch, capsys):
    p = projection(monkeypatch, capsys, tiny_model, "--workers", "2,4", *SETTINGS)
    assert p["modelled"] is True and p["settings"]["mac_rate_source"] == "given (--mac-rate)"
    assert p["one_worker_bp"]["step_s"] == pytest.approx(BP_STEP)
    two, four = rows_of(p, "dbl_stages")[2], rows_of(p, "dbl_stages")[4]
    # balance on bp's segment times: {0 | 1, 2} has max(27.648 + 4.096, 27.648 + 0.48) = 31.744 ms,
    # {0, 1 | 2} 55.296 + 0.512 ms: the cut is u1.out. The compiled dbl program's blocks: block 1 =
    # u0.conv 13824 + its fc aux head (GAP, Gemm 4->10: forward, dX, dW 40 each) 120 = 13944 MACs;
    # block 2 = u2.conv without dX 9216 + head.fc 240 = 9456
    assert two["cuts"] == ["u1.out"] and two["segments_per_stage"] == [1, 2]
    assert two["stage_compute_s"] == pytest.approx([0.027888, 0.018912])
    assert two["stage_send_s"] == pytest.approx([0.004096, 0.0])
    step = 0.027888 + 0.004096  # the slowest block with its send: 31.984 ms, no bubble
    assert two["step_s"] == pytest.approx(step) and two["bubble"] == 0
    assert two["images_per_s"] == pytest.approx(2 / step)  # 62.53
    assert two["speedup_vs_bp_1_worker"] == pytest.approx(BP_STEP / step)  # 1.744
    assert two["efficiency"] == pytest.approx((0.027888 + 0.018912) / step / 2)  # 0.732
    # 4 workers, 3 segments: 3 blocks. Block 2 = u2.conv without dX 9216 + an fc aux head on the
    # flattened GAP (Gemm 8->10, forward, dX, dW 80 each) 240 = 9456; block 3 = head.fc without dX 160
    assert four["stages"] == 3 and four["cuts"] == ["u1.out", "head.flatten.out"]
    assert four["stage_compute_s"] == pytest.approx([0.027888, 0.018912, 0.00032])
    assert four["step_s"] == pytest.approx(step)  # still block 1: u0.conv + head + its send
    assert four["efficiency"] == pytest.approx(2 * 23560 / 1e6 / step / 4)  # one worker: 13944 + 9456 + 160 MACs


def test_gpipe_bp_by_hand(tiny_model, monkeypatch, capsys):
    p = projection(monkeypatch, capsys, tiny_model, "--workers", "2", "--micro-batches", "2", *SETTINGS)
    (row,) = rows_of(p, "gpipe_bp").values()
    # {0 | 1, 2}: stage 0 27.648 + 4.096 (activation out), stage 1 28.128 + 4.096 (gradient back) = 32.224
    assert row["cuts"] == ["u1.out"] and row["micro_batches"] == 2
    assert row["stage_compute_s"] == pytest.approx([0.027648, 0.028128])
    assert row["stage_send_s"] == pytest.approx([0.004096, 0.004096])
    step = 0.032224 * (2 + 2 - 1) / 2  # 48.336 ms
    assert row["bubble"] == pytest.approx(1 / 3)
    assert row["step_s"] == pytest.approx(step)
    assert row["images_per_s"] == pytest.approx(2 / step)  # 41.38
    assert row["efficiency"] == pytest.approx(BP_STEP / step / 2)  # 0.577


def test_ddp_bp_by_hand(tiny_model, monkeypatch, capsys):
    p = projection(monkeypatch, capsys, tiny_model, "--workers", "2", *SETTINGS)
    (row,) = rows_of(p, "ddp_bp").values()
    # one sample per worker: compute 27888 / 1e6 = 27.888 ms; all-reduce 2 x 1/2 x 494 x 4 / 125000 = 15.808 ms
    assert row["stage_compute_s"] == pytest.approx([0.027888])
    assert row["stage_send_s"] == pytest.approx([0.015808])
    step = 0.027888 + 0.015808  # 43.696 ms for the batch of 2
    assert row["step_s"] == pytest.approx(step) and row["images_per_step"] == 2
    assert row["images_per_s"] == pytest.approx(2 / step)  # 45.77
    assert row["efficiency"] == pytest.approx(BP_STEP / step / 2)  # 0.638
    # overlapped: forward 11600 / 1e6 = 11.6 ms, then the backward (16.288 ms) hides the all-reduce
    assert row["step_s_overlapped"] == pytest.approx(0.027888)
    assert row["images_per_s_overlapped"] == pytest.approx(2 / 0.027888)


def fake_run(run_dir, program, record: dict):
    run_dir.mkdir()
    (run_dir / "run.json").write_text(json.dumps({"config": {"batch_size": 2, "backend": "torch", "device": "cpu"},
                                                  "program_json": json.dumps(program.to_json())}))
    (run_dir / "metrics.jsonl").write_text(json.dumps({"epoch": 1, "peak_memory_mb": 100, **record}) + "\n")
    return run_dir


def test_mac_rate_calibrated_from_a_measured_run(tiny_model, tmp_path, monkeypatch, capsys):
    """A bp run at batch 2 doing 4 images/s: 0.5 s a step for 2 x 27888 MACs = 111,552 MAC/s; one
    worker's projected bp throughput is then the measured one. A run on several processes is not used."""
    program = llcompile.transform(tiny_model, "bp")
    run_dir = fake_run(tmp_path / "run", program, {"images_per_s": 4.0})
    p = projection(monkeypatch, capsys, tiny_model, "--workers", "1", "--measured", run_dir, "--batch-size", "2",
                   "--format", "json")
    assert p["settings"]["mac_rate"] == pytest.approx(2 * 27888 / 0.5)
    assert str(run_dir) in p["settings"]["mac_rate_source"]
    assert p["one_worker_bp"]["images_per_s"] == pytest.approx(4.0)
    parallel_run = fake_run(tmp_path / "parallel", program, {"images_per_s": 8.0, "parallel": {"mode": "data"}})
    p = projection(monkeypatch, capsys, tiny_model, "--workers", "1", "--measured", parallel_run, "--batch-size", "2",
                   "--format", "json")
    assert p["settings"]["mac_rate_source"].startswith("default")


def test_table_says_modelled_and_bad_input(tiny_model, monkeypatch, capsys):
    code, out, err = run(monkeypatch, capsys, "report", tiny_model, "--workers", "2", "--detail", "summary")
    assert code == 0, err
    assert "Projected throughput on N workers (MODELLED, not measured)" in out
    user_error(run(monkeypatch, capsys, "report", tiny_model, "--workers", "0"), "--workers")
    user_error(run(monkeypatch, capsys, "report", tiny_model, "--workers", "2", "--link-gbps", "0"), "--link-gbps")
