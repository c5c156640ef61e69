"""train.trackers for real: wandb in offline mode (no network) and mlflow with a file store each record a run
whose logged metrics are metrics.csv's, epoch by epoch."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from train_utils import TINY, make_folds_file

KEYS = ("train_loss", "val_loss", "val_macro_f1", "val_acc", "val_score", "lr")


@pytest.fixture
def folded(workdir):
    make_folds_file(workdir)
    return workdir


def _train(cwd, exp, tracker, **env):
    sets = [a for s in [*TINY, "train.epochs=2", f"train.trackers=[{tracker}]"] for a in ("--set", s)]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([os.getcwd(), os.environ.get(
        "PYTHONPATH", "")]), **env)
    r = subprocess.run([sys.executable, "-m", "comp", "train", "--exp", exp, "--fold", "0", *sets], cwd=cwd, env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
    return pd.read_csv(cwd / "runs" / exp / "fold_0" / "metrics.csv")


def _assert_match(logged: dict[str, dict[int, float]], metrics: pd.DataFrame) -> None:
    for key in KEYS:
        got = logged.get(f"fold_0/{key}")
        assert got is not None, f"fold_0/{key} was not logged; logged: {sorted(logged)}"
        assert sorted(got) == metrics["epoch"].tolist(), (key, got)
        np.testing.assert_allclose([got[e] for e in metrics["epoch"]], metrics[key], rtol=1e-5, err_msg=key)


@pytest.mark.slow
def test_wandb_offline_run_logs_the_metrics_csv(folded, tmp_path):
    pytest.importorskip("wandb")
    metrics = _train(folded, "wb", "wandb", WANDB_MODE="offline", WANDB_DIR=str(tmp_path), WANDB_SILENT="true",
                     WANDB_API_KEY="", WANDB_DISABLE_GIT="true")
    files = list(tmp_path.rglob("offline-run-*/run-*.wandb"))
    assert len(files) == 1, files
    _assert_match(_wandb_history(files[0]), metrics)


def _wandb_records(path):
    """The records of a wandb run file: a LevelDB-style log (a 7-byte ':W&B' header, then 32 KiB blocks of
    records, each a 7-byte header (crc, length, type: full, first, middle, last) and its bytes)."""
    import struct

    data = path.read_bytes()
    assert data[:4] == b":W&B", data[:7]
    pos, block, part = 7, 32768, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # too little room left for a header: the block is padded
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0:
            break
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        part = chunk if kind in (1, 2) else part + chunk
        if kind in (1, 4):
            yield part


def _wandb_history(path) -> dict[str, dict[int, float]]:
    """{key: {step: value}} of the history records in a wandb offline run file (read here, no network)."""
    import json

    from wandb.proto import wandb_internal_pb2

    out: dict[str, dict[int, float]] = {}
    for data in _wandb_records(path):
        rec = wandb_internal_pb2.Record()
        rec.ParseFromString(data)
        if rec.WhichOneof("record_type") != "history":
            continue
        items = {"/".join(i.nested_key) if i.nested_key else i.key: json.loads(i.value_json) for i in rec.history.item}
        step = int(items.get("_step", rec.history.step.num))
        for k, v in items.items():
            if not k.startswith("_"):
                out.setdefault(k, {})[step] = float(v)
    return out


@pytest.mark.slow
def test_mlflow_file_store_run_logs_the_metrics_csv(folded, tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    uri = (tmp_path / "mlruns").as_uri()
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    metrics = _train(folded, "mf", "mlflow", MLFLOW_TRACKING_URI=uri)  # comp allows the file store it was given
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # reading it back here, too

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("mf")
    assert exp is not None, [e.name for e in client.search_experiments()]
    (run,) = client.search_runs([exp.experiment_id])
    logged = {k: {m.step: m.value for m in client.get_metric_history(run.info.run_id, k)} for k in run.data.metrics}
    _assert_match(logged, metrics)
    assert run.data.params.get("model.name") == "test_resnet"
