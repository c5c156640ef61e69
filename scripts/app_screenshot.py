"""The screenshot in the README and the manual (docs/app.png) of ``comp app``: a real server, headless Chromium with the network blocked, one test
image uploaded through the page's file input, captured once the prediction and its Grad-CAM are shown.

    .venv/bin/python scripts/app_screenshot.py --workdir demo --exp base --out docs/app.png   # after `make demo`

Needs the Debian packages chromium and chromium-driver. The PNG is quantised to a palette to stay small.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
         "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"]  # offline: nothing but loopback resolves


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", default="demo", help="folder with comp.yaml and runs/EXP (make demo's: demo)")
    ap.add_argument("--exp", action="append", help="experiment (repeatable; default base)")
    ap.add_argument("--image", help="image to upload (default: the first test image)")
    ap.add_argument("--out", default="docs/app.png")
    ap.add_argument("--width", type=int, default=1200)
    ap.add_argument("--height", type=int, default=1250)
    ap.add_argument("--colors", type=int, default=128, help="palette size of the PNG")
    args = ap.parse_args()
    exps = args.exp or ["base"]
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        print("needs chromium and chromium-driver: apt-get install chromium chromium-driver", file=sys.stderr)
        return 1
    from PIL import Image
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from comp.config import load_config
    from comp.data.competition import load_test
    from comp.serve.server import AppServer

    work = Path(args.workdir).resolve()
    image = args.image
    if image is None:
        old = os.getcwd()
        os.chdir(work)
        try:
            image = str(Path(load_test(load_config("comp.yaml", exp=exps[0]))["path"].iloc[0]).resolve())
        finally:
            os.chdir(old)
    out = Path(args.out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    with AppServer(exps, cwd=work) as url, tempfile.TemporaryDirectory() as profile:
        opts = webdriver.ChromeOptions()
        opts.binary_location = CHROMIUM
        for f in FLAGS + [f"--window-size={args.width},{args.height}", f"--user-data-dir={profile}"]:
            opts.add_argument(f)
        opts.set_capability("goog:loggingPrefs", {"performance": "ALL"})
        driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
        try:
            driver.get(url)
            wait = WebDriverWait(driver, 60, poll_frequency=0.25)
            wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#input-image input[type=file]"))[0].send_keys(image)
            wait.until(lambda d: "Grad-CAM of" in d.find_element(By.ID, "status").text)
            wait.until(lambda d: d.execute_script(
                "return Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)"))
            outside = []
            for entry in driver.get_log("performance"):
                msg = json.loads(entry["message"])["message"]
                if msg.get("method") == "Network.requestWillBeSent":
                    u = msg["params"]["request"]["url"]
                    if u.startswith(("http:", "https:")) and not u.split("/")[2].startswith("127.0.0.1"):
                        outside.append(u)
            tmp = out.with_suffix(".tmp.png")
            driver.save_screenshot(str(tmp))
        finally:
            driver.quit()
    with Image.open(tmp) as im:
        im.convert("RGB").quantize(colors=args.colors, method=Image.Quantize.MEDIANCUT).save(out, optimize=True)
    tmp.unlink()
    print(f"wrote {out} ({out.stat().st_size / 1024:.0f} kB) of {url} with {Path(image).name} uploaded; "
          f"requests outside loopback: {len(outside)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
