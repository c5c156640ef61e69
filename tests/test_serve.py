"""comp app (a real server on loopback, queried by gradio_client and by headless Chromium with the network
blocked) and comp export (ONNX parity, the onnxruntime engine, export errors), on one real 2-fold resnet18 run."""

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner
from conftest import write_config

from comp.cli import cli
from comp.config import load_config
from comp.data.folds import make_folds
from comp.data.sample import make_sample
from comp.infer.ensemble import ensemble
from comp.infer.predict import predict
from comp.train.model import create_model, normalization, save_checkpoint
from comp.train.session import train_folds

pytest.importorskip("gradio")
pytest.importorskip("onnxruntime")
pytestmark = pytest.mark.slow  # one real 2-fold resnet18 run for the module (~1 min of CPU on 2 cores)

QUIET = {"echo": lambda s: None}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A Fashion-MNIST sample, 2 folds, resnet18 at 32 px for 1 epoch, TTA identity+hflip; torch predictions
    (test.csv, kept as test_torch.csv) and a submission from them."""
    work = tmp_path_factory.mktemp("serve")
    root = work / "data"
    make_sample(root, n_train=240, n_test=40, seed=5)
    write_config(work, root, model={"name": "resnet18", "pretrained": False}, input={"size": 32},
                 train={"epochs": 1, "batch_size": 32, "lr": 3e-3}, infer={"tta": ["identity", "hflip"]},
                 folds={"n_splits": 2})
    old = os.getcwd()
    os.chdir(work)
    try:
        cfg = load_config("comp.yaml", exp="base")
        make_folds(cfg, **QUIET)
        train_folds(cfg, **QUIET)
        predict(cfg, progress=False, **QUIET)
        shutil.copyfile("runs/base/test.csv", "test_torch.csv")
        ensemble(cfg, ["base"], name="torch", **QUIET)
    finally:
        os.chdir(old)
    test = pd.read_csv(work / "test_torch.csv", dtype={"image_id": str})
    return {"work": work, "root": root, "test": test, "classes": list(test.columns[1:])}


@pytest.fixture
def in_run(run, monkeypatch):
    monkeypatch.chdir(run["work"])
    return run


# ---------------------------------------------------------------- ONNX


def test_export_parity_and_onnxruntime_submission_equals_torch(in_run):
    import onnx

    res = CliRunner().invoke(cli, ["export", "--exp", "base", "--format", "onnx", "--all-folds"])
    assert res.exit_code == 0, res.output
    assert res.output.count("max abs diff") == 2, res.output
    info = json.loads(Path("runs/base/export/export.json").read_text())
    assert info["classes"] == in_run["classes"] and info["size"] == 32 and info["resize"] == "stretch"
    for k in ("0", "1"):
        e = info["folds"][k]
        assert e["parity_max_abs_diff"] <= 1e-4 and e["parity_images"] == 32 and e["agree_argmax"] == 32
    graph = onnx.load("runs/base/export/fold_0.onnx", load_external_data=False).graph
    inp = graph.input[0].type.tensor_type
    assert inp.elem_type == onnx.TensorProto.UINT8
    assert [d.dim_value for d in inp.shape.dim] == [1, 32, 32, 3]

    # An existing export is kept unless --overwrite: the same export again is a no-op, another opset is refused.
    res = CliRunner().invoke(cli, ["export", "--exp", "base", "--fold", "0"])
    assert res.exit_code == 0 and "nothing to do" in res.output, res.output
    res = CliRunner().invoke(cli, ["export", "--exp", "base", "--fold", "0", "--opset", "18"])
    assert res.exit_code == 1 and "--overwrite" in res.output

    res = CliRunner().invoke(cli, ["predict", "--exp", "base", "--engine", "onnxruntime", "--overwrite"])
    assert res.exit_code == 0, res.output
    assert "onnxruntime" in res.output
    torch_p = in_run["test"]
    onnx_p = pd.read_csv("runs/base/test.csv", dtype={"image_id": str})
    assert onnx_p["image_id"].tolist() == torch_p["image_id"].tolist()
    assert np.abs(onnx_p.iloc[:, 1:].to_numpy() - torch_p.iloc[:, 1:].to_numpy()).max() <= 1e-4
    cfg = load_config("comp.yaml")
    ensemble(cfg, ["base"], name="onnx", **QUIET)
    a = pd.read_csv("submissions/torch.csv", dtype=str)
    b = pd.read_csv("submissions/onnx.csv", dtype=str)
    assert a.equals(b)

    # A dynamic-batch export predicts in batches, to the same probabilities.
    res = CliRunner().invoke(cli, ["export", "--exp", "base", "--fold", "0", "--fold", "1", "--dynamic-batch",
                                   "--opset", "18", "--overwrite"])
    assert res.exit_code == 0, res.output
    info = json.loads(Path("runs/base/export/export.json").read_text())
    assert info["folds"]["0"]["dynamic_batch"] and info["folds"]["1"]["opset"] == 18
    dyn = predict(load_config("comp.yaml", exp="base"), overwrite=True, progress=False, engine="onnxruntime",
                  **QUIET)
    assert np.abs(dyn.iloc[:, 1:].to_numpy() - torch_p.iloc[:, 1:].to_numpy()).max() <= 1e-4

    # Weights copied elsewhere (a new modification time, the same bytes) still match their export...
    os.utime("runs/base/fold_1/model.safetensors")
    res = CliRunner().invoke(cli, ["predict", "--exp", "base", "--engine", "onnxruntime", "--overwrite"])
    assert res.exit_code == 0, res.output
    # ...and a retrained fold (other bytes) makes its export stale: refused, naming the command that refreshes it.
    from safetensors import safe_open
    from safetensors.torch import save_file

    path = "runs/base/fold_1/model.safetensors"
    shutil.copyfile(path, "fold_1.safetensors.kept")
    with safe_open(path, "pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    first = next(iter(tensors))
    tensors[first] = tensors[first] + 1
    save_file(tensors, path, metadata=meta)
    res = CliRunner().invoke(cli, ["predict", "--exp", "base", "--engine", "onnxruntime", "--overwrite"])
    assert res.exit_code == 1 and "--fold 1 --overwrite" in res.output, res.output
    shutil.copyfile("fold_1.safetensors.kept", path)  # the fold as trained, for the tests after this one
    shutil.copyfile("test_torch.csv", "runs/base/test.csv")


def _untrained(exp: str, model_name: str, classes: list[str]) -> None:
    cfg = load_config("comp.yaml", exp=exp, overrides=[f"model.name={model_name}"])
    torch.manual_seed(0)
    model = create_model(cfg, len(classes)).eval()
    mean, std = normalization(cfg, model)
    save_checkpoint(f"runs/{exp}/fold_0/model.safetensors", model,
                    {"classes": classes, "input_size": 32, "resize": "stretch", "mean": mean, "std": std,
                     "model_name": model_name, "fold": 0, "exp": exp})


def test_export_failure_names_the_op_and_the_opset(in_run):
    (in_run["work"] / "configs").mkdir(exist_ok=True)
    (in_run["work"] / "configs" / "vit.yaml").write_text("model: {name: test_vit}\n")
    _untrained("vit", "test_vit", in_run["classes"])
    # timm resamples the 224 px position embedding to 32 px with antialiased bicubic, which ONNX lacks
    res = CliRunner().invoke(cli, ["export", "--exp", "vit", "--opset", "11"])
    assert res.exit_code == 1
    assert "the op aten::_upsample_bicubic2d_aa is not supported" in res.output and "--opset" in res.output, \
        res.output
    assert not list(Path("runs/vit/export").glob("*.onnx"))


# ---------------------------------------------------------------- the app as a library


def test_app_library_vit_gradcam_and_blends_with_ledger_weights(in_run):
    from comp.infer import ledger
    from comp.serve.app import build_app, classify
    from comp.serve.ensemble import Ensemble, ledger_weights

    path = str(in_run["root"] / "test_images" / f"{in_run['test']['image_id'][0]}.png")
    ens = Ensemble.load("comp.yaml", ["vit"])
    label, heat, status = classify(ens, path)
    assert heat is not None and heat.shape[1] == 2 * heat.shape[0] and "Grad-CAM of" in status and len(label) == 5
    assert "norm1" in status  # the token model's layer: its last block's norm1, found with no configuration
    blocks = build_app(ens, examples=False)
    assert "Grad-CAM skipped for this model" not in json.dumps(blocks.get_config_file())

    ledger.append("blend", ["base", "vit"], [0.75, 0.25], 0.5, {"method": "mean"})
    w, source, _ = ledger_weights(["vit", "base"])
    assert w == [0.25, 0.75] and "'blend'" in source
    both = Ensemble.load("comp.yaml", ["base", "vit"])
    rgb = both.load_image(path)
    p_base, p_vit = both.member_probs(rgb)
    assert np.allclose(both.predict(rgb), 0.75 * p_base + 0.25 * p_vit, atol=1e-6)
    assert both.cam_model()[0].exp == "base"  # the fold model the blend weighs most


def test_app_decodes_a_large_jpeg_small_as_predict_does_and_shows_its_own_size(in_run, tmp_path):
    from comp.data.cache import load_images
    from comp.data.preprocess import resize
    from comp.data.sample_photo import photo_bytes
    from comp.serve.app import classify
    from comp.serve.ensemble import Ensemble

    item = np.zeros((28, 28), np.uint8)
    item[4:24, 6:22] = 200
    data, (w, h) = photo_bytes(item, np.random.default_rng(1), orientation=6)  # stored sideways
    path = tmp_path / "photo.jpg"
    path.write_bytes(data)
    ens = Ensemble.load("comp.yaml", ["base"])
    rgb = ens.load_image(path)
    assert rgb.shape[0] < h / 2 and min(rgb.shape[:2]) >= ens.input_side == 32  # decoded at reduced size
    assert np.array_equal(resize(rgb, 32), load_images([path], 32, cache="none", progress=False)[0])  # as predict
    _, _, status = classify(ens, str(path))
    assert status.startswith(f"photo.jpg, {w}x{h}: **"), status  # the file's upright size, not the decoded one


# ---------------------------------------------------------------- a real `comp app` server


@pytest.fixture(scope="module")
def app_server(run):
    """`comp app --exp base` in its own process on 127.0.0.1:<free port>, its Gradio files in
    run["gradio_tmp"]; stopped at the end."""
    from comp.serve.server import AppServer

    run["gradio_tmp"] = run["work"] / "gradio-tmp"
    with AppServer(["base"], cwd=run["work"], env={"GRADIO_TEMP_DIR": str(run["gradio_tmp"])}) as url:
        yield url


def test_app_server_matches_comp_predict_and_survives_bad_uploads(run, app_server, tmp_path):
    from bad_images import save_huge_png
    from gradio_client import Client, handle_file

    client = Client(app_server, verbose=False)
    test = run["test"]
    for i in range(3):
        path = run["root"] / "test_images" / f"{test['image_id'][i]}.png"
        label, cam, status = client.predict(handle_file(str(path)), api_name="/predict")
        expected = test.iloc[i, 1:].astype(float).idxmax()
        assert label["label"] == expected, (label, status)
        assert len(label["confidences"]) == 5
        assert abs(label["confidences"][0]["confidence"] - float(test.iloc[i][expected])) < 1e-4
        assert cam and Path(cam).stat().st_size > 0 and "Grad-CAM of" in status

    bad = tmp_path / "corrupt.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64)
    huge = tmp_path / "huge.png"
    save_huge_png(huge)
    for f, problem in ((bad, "not_an_image"), (huge, "too_large")):
        label, cam, status = client.predict(handle_file(str(f)), api_name="/predict")
        assert problem in status and "Can't use this image" in status, status
        assert not label and cam is None
    path = run["root"] / "test_images" / f"{test['image_id'][0]}.png"
    label, _, _ = client.predict(handle_file(str(path)), api_name="/predict")
    assert label["label"] == test.iloc[0, 1:].astype(float).idxmax()


def call_predict(url: str, filedata: dict, cookies=None) -> tuple[str, object]:
    """POST /gradio_api/call/predict with one raw FileData; (SSE event name, its data)."""
    import httpx

    r = httpx.post(f"{url}gradio_api/call/predict", json={"data": [filedata]}, cookies=cookies, timeout=30)
    r.raise_for_status()
    with httpx.stream("GET", f"{url}gradio_api/call/predict/{r.json()['event_id']}", cookies=cookies,
                      timeout=120) as res:
        event = None
        for line in res.iter_lines():
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
            elif line.startswith("data:") and event in ("complete", "error"):
                return event, json.loads(line.split(":", 1)[1])
    raise AssertionError("no result")


def png_bytes(seed: int = 0, size: int = 32) -> bytes:
    import io

    from bad_images import pattern
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(pattern(seed, size)).save(buf, "PNG")
    return buf.getvalue()


def files_under(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if p.is_file()} if folder.exists() else set()


def test_app_data_url_is_named_by_comp_and_stays_in_the_upload_folder(run, app_server):
    """The issue's hostile data URL: its MIME type would have made the name `<sha>./../../z` (a file z at the
    root of Gradio's cache). Now the name is the sha1 of the bytes + the extension of the format found in them."""
    import base64
    import re


    cache = run["gradio_tmp"]
    before = files_under(cache.parent)
    raw = png_bytes(7)
    b64 = base64.b64encode(raw).decode()
    # Gradio checks the path of a payload that carries its meta marker; an image payload without one reaches the
    # component as it was sent (this is how the escape was done).
    for payload in ({"path": None, "url": f"data:image//../../z;base64,{b64}"},
                    {"url": f"data:image/svg+xml;base64,{b64}"},
                    {"url": f"data:../../../../etc/x;base64,{b64}", "orig_name": "../x.png"}):
        event, data = call_predict(app_server, payload)
        assert event == "complete", data
        assert re.match(r"[0-9a-f]{20}\.png, 32x32: \*\*", data[2]), data[2]  # its own bytes, predicted
    new = files_under(cache.parent) - before
    assert not (cache / "z").exists() and not any(p.name == "z" or p.name.startswith("x") for p in new), new
    decoded = [p for p in new if p.parent.name == "comp-app"]
    assert [p.name for p in decoded] == [f"{__import__('hashlib').sha1(raw).hexdigest()[:20]}.png"]
    assert all(p.is_relative_to(cache) for p in new), new  # Grad-CAM files and the decoded image, nothing else

    # Not base64 / not an image comp reads / over the size cap: comp's message, nothing written.
    secret = str(sorted((run["root"] / "train_images").iterdir())[0])  # any file on the server, named by the client
    for payload, problem in (({"url": "data:image/png;base64,@@@@"}, "not_an_image"),
                             ({"url": "data:image/png;base64," + base64.b64encode(b"%!PS-Adobe-3.0 EPSF").decode()},
                              "not_allowed"),
                             ({"path": secret}, "not_allowed"), ({"path": f"{cache}/../data/x.png"}, "not_allowed")):
        event, data = call_predict(app_server, payload)
        text = json.dumps(data)
        assert event == "error" and problem in text and "Traceback" not in text and str(cache) not in text, text
    assert files_under(cache.parent) - before == new

    # The encoded length is measured before decoding.
    from comp.data.images import ImageProblem
    from comp.serve.uploads import save_data_url

    with pytest.raises(ImageProblem, match="too_large"):
        save_data_url("data:image/png;base64," + base64.b64encode(b"x" * 3000).decode(), cache / "t", 2000)
    assert not (cache / "t").exists()


def test_app_refuses_a_9000px_upload_from_its_header_and_keeps_serving(run, app_server, tmp_path):
    from bad_images import save_huge_png
    from gradio_client import Client, handle_file

    huge = tmp_path / "huge9000.png"
    save_huge_png(huge, side=9000)  # 81 MP: under training's 89 MP, over the app's 25 MP; ~10 kB on disk
    assert huge.stat().st_size < 100_000
    client = Client(app_server, verbose=False)
    job = client.submit(handle_file(str(huge)), api_name="/predict")
    test = run["test"]
    path = run["root"] / "test_images" / f"{test['image_id'][2]}.png"
    label, _, _ = client.predict(handle_file(str(path)), api_name="/predict")
    assert label["label"] == test.iloc[2, 1:].astype(float).idxmax()
    label, cam, status = job.result(timeout=120)
    assert not label and cam is None
    assert "too_large" in status and "81,000,000 pixels" in status and "--max-pixels 25,000,000" in status, status


def test_app_refuses_to_face_a_network_without_auth(tmp_path, monkeypatch):
    """Refused before any model is loaded (there is no comp.yaml here), naming --auth."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("COMP_APP_AUTH", raising=False)
    for args in (["--host", "0.0.0.0"], ["--share"], ["--host", "192.168.1.5", "--share"]):
        res = CliRunner().invoke(cli, ["app", "--exp", "base", *args])
        assert res.exit_code == 1 and "--auth" in res.output and "Traceback" not in res.output, res.output
    res = CliRunner().invoke(cli, ["app", "--exp", "base", "--auth", "nopassword"])
    assert res.exit_code == 1 and "user:password" in res.output, res.output
    from comp.serve.app import check_exposure, is_loopback

    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("example.org")
    check_exposure("0.0.0.0", True, ("u", "p"))  # with a login: allowed


def test_app_errors_reach_the_client_without_paths_or_tracebacks():
    import gradio as gr

    from comp.data.competition import DataError
    from comp.serve.app import guarded

    def boom(path):
        raise (DataError if path == "user" else KeyError)(f"/home/me/comp/secret/train.csv row 3: {path}")

    for arg, shown in (("user", "train.csv row 3: user"), ("bug", "KeyError")):
        with pytest.raises(gr.Error) as e:
            guarded(boom)(arg)
        assert shown in e.value.message and "/home/me" not in e.value.message, e.value.message


@pytest.fixture(scope="module")
def login_server(run):
    """`COMP_APP_AUTH=ann:s3cret comp app --exp base --no-examples --cache-ttl 8 --queue-size 3` (a shorter TTL
    could delete an upload before a loaded machine predicts it)."""
    from comp.serve.server import AppServer

    tmp = run["work"] / "gradio-login"
    with AppServer(["base"], cwd=run["work"], args=["--no-examples", "--cache-ttl", "8", "--queue-size", "3"],
                   env={"COMP_APP_AUTH": "ann:s3cret", "GRADIO_TEMP_DIR": str(tmp)},
                   log=run["work"] / "app-login.log") as url:
        yield url, tmp


def test_app_login_refuses_anonymous_clients_hides_examples_and_deletes_its_files(run, login_server):
    import time
    import urllib.error
    import urllib.request

    from gradio_client import Client, handle_file

    url, tmp = login_server
    for path, data in (("config", None), ("gradio_api/info", None), ("gradio_api/call/predict", b'{"data": [null]}')):
        req = urllib.request.Request(url + path, data=data, headers={"Content-Type": "application/json"})
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(req, timeout=10)
        assert e.value.code == 401, (path, e.value.code)
    with pytest.raises(Exception):  # noqa: B017 - gradio_client cannot read the config without a login
        Client(url, verbose=False)

    client = Client(url, auth=("ann", "s3cret"), verbose=False)
    test = run["test"]
    path = run["root"] / "test_images" / f"{test['image_id'][3]}.png"
    label, cam, status = client.predict(handle_file(str(path)), api_name="/predict")
    assert label.get("label") == test.iloc[3, 1:].astype(float).idxmax() and "Grad-CAM of" in status, status

    config = json.dumps(client.config)
    assert client.config["show_error"] is False
    assert "_tr_" not in config and "test images" not in config and "OOF mistakes" not in config
    assert not any(f"{i}.png" in config for i in test["image_id"])

    # The upload and the Grad-CAM file are on the server, then deleted (--cache-ttl 8).
    assert {p.suffix for p in files_under(tmp)} >= {".png"}
    deadline = time.monotonic() + 60
    while files_under(tmp) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not files_under(tmp), files_under(tmp)

    # A bounded queue: beyond --queue-size 3 waiting requests, the server says so at once.
    import httpx

    with httpx.Client(base_url=url, timeout=30) as http:
        assert http.post("login", data={"username": "ann", "password": "s3cret"}).status_code == 200
        with open(path, "rb") as f:
            upload = http.post("gradio_api/upload", files={"files": ("a.png", f)}).json()[0]
        body = {"data": [{"path": upload, "meta": {"_type": "gradio.FileData"}}]}
        codes = [http.post("gradio_api/call/predict", json=body) for _ in range(10)]
    full = [r for r in codes if r.status_code != 200]
    assert full and all("Queue is full" in r.text for r in full), [(r.status_code, r.text) for r in codes]
    assert sum(r.status_code == 200 for r in codes) >= 3


# ---------------------------------------------------------------- the page in headless Chromium, offline

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
# No DNS for any host but loopback: whatever the page tries to fetch from the internet fails, and shows up in
# the performance log, which the test reads.
OFFLINE_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1280,1600", "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"]


def offline_chromium(profile: Path, extra_flags: list[str] = ()):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for f in [*OFFLINE_FLAGS, *extra_flags]:
        opts.add_argument(f)
    opts.add_argument(f"--user-data-dir={profile}")
    opts.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(60)
    return driver


def requested_urls(driver) -> list[str]:
    urls = []
    for entry in driver.get_log("performance"):
        msg = json.loads(entry["message"])["message"]
        if msg.get("method") == "Network.requestWillBeSent":
            urls.append(msg["params"]["request"]["url"])
    return urls


@pytest.mark.browser
def test_app_page_loads_offline_and_predicts_an_upload(run, app_server, tmp_path):
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        pytest.skip("needs Debian packages chromium and chromium-driver (.ci/run installs them)")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver = offline_chromium(tmp_path / "profile")
    try:
        driver.get(app_server)
        wait = WebDriverWait(driver, 60, poll_frequency=0.25)
        file_input = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#input-image input[type=file]"))[0]
        assert "comp — base" in driver.title
        info = driver.find_element(By.ID, "info").text
        assert "resnet18" in info and "identity, hflip" in info and "CV macro F1" in info

        test = run["test"]
        path = run["root"] / "test_images" / f"{test['image_id'][1]}.png"
        file_input.send_keys(str(path))
        expected = test.iloc[1, 1:].astype(float).idxmax()
        wait.until(lambda d: expected in d.find_element(By.ID, "prediction").text)
        wait.until(lambda d: "Grad-CAM of" in d.find_element(By.ID, "status").text)
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#gradcam img"))
        driver.execute_script("window.scrollTo(0, document.body.scrollHeight)")
        imgs = wait.until(lambda d: (lambda r: r if r and all(c and w > 0 for _, c, w in r) else None)(
            d.execute_script("return Array.from(document.images).map(i => [i.src, i.complete, i.naturalWidth])")))
        assert len(imgs) >= 3  # the upload, its Grad-CAM and the example images

        assert path.name in driver.find_element(By.ID, "status").text

        # Clicking an example (the last: an OOF mistake, a train image) predicts it.
        examples = driver.find_elements(By.CSS_SELECTOR, ".gallery-item")
        assert len(examples) >= 2
        examples[-1].click()
        wait.until(lambda d: "_tr_" in d.find_element(By.ID, "status").text)
        assert "Grad-CAM of" in driver.find_element(By.ID, "status").text

        outside = [u for u in requested_urls(driver) if u.startswith(("http:", "https:", "ws:", "wss:"))
                   and not u.split("/")[2].startswith(("127.0.0.1", "localhost"))]
        assert not outside, f"the page fetched from outside loopback: {outside[:5]}"
    finally:
        driver.quit()


@pytest.mark.browser
def test_app_webcam_frame_in_headless_chromium_matches_the_ensemble_on_the_saved_frame(in_run, app_server, tmp_path):
    """Chromium's fake camera (a moving test pattern), the page's own webcam button and capture button: the frame
    is uploaded and predicted, and the page's probabilities equal the Ensemble's on the file the server saved."""
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        pytest.skip("needs Debian packages chromium and chromium-driver (.ci/run installs them)")
    import re
    import urllib.parse

    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from comp.data.images import load_rgb
    from comp.serve.ensemble import Ensemble

    driver = offline_chromium(tmp_path / "profile", ["--use-fake-device-for-media-stream",
                                                     "--use-fake-ui-for-media-stream"])
    try:
        driver.get(app_server)
        wait = WebDriverWait(driver, 60, poll_frequency=0.25)
        buttons = "#input-image button"
        wait.until(lambda d: [b for b in d.find_elements(By.CSS_SELECTOR, buttons)
                              if b.get_attribute("aria-label") == "Capture from camera"])[0].click()
        wait.until(lambda d: [b for b in d.find_elements(By.CSS_SELECTOR, buttons)
                              if "Access Webcam" in b.text])[0].click()
        wait.until(lambda d: d.execute_script(
            "const v = document.querySelector('#input-image video'); return v && v.readyState >= 2"))
        driver.find_element(By.CSS_SELECTOR, "#input-image button[aria-label='capture photo']").click()
        wait.until(lambda d: "image.png" in d.find_element(By.ID, "status").text
                   and "Grad-CAM of" in d.find_element(By.ID, "status").text)
        status = driver.find_element(By.ID, "status").text
        shown = driver.execute_script("return Array.from(document.querySelectorAll('#prediction meter'))"
                                      ".map(m => [m.getAttribute('aria-label'), m.value])")
        src = driver.find_element(By.CSS_SELECTOR, "#input-image img").get_attribute("src")
    finally:
        driver.quit()
    frame = Path(urllib.parse.unquote(src.split("file=", 1)[1]))
    assert frame.is_relative_to(in_run["gradio_tmp"]) and frame.is_file(), src
    rgb = load_rgb(frame)
    assert rgb.shape[0] >= 120 and rgb.std() > 1  # a real frame of the test pattern, not a blank
    probs = Ensemble.load("comp.yaml", ["base"]).predict(rgb)
    expected = {c: float(p) for c, p in zip(in_run["classes"], probs)}
    assert len(shown) == 5, shown
    for cls, p in shown:
        assert abs(p - expected[cls]) <= 1e-4, (cls, p, expected[cls])
    top = max(expected, key=expected.get)
    said = re.search(rf"image\.png, \d+x\d+: {re.escape(top)} \((\d\.\d+)\)", status)
    assert shown[0][0] == top and said and abs(float(said.group(1)) - expected[top]) <= 1e-4, status
