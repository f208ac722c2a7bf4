#!/usr/bin/env python3
"""End-to-end test of the owner privacy page in a real browser (DATA-3, DATA-4,
PRIV-2, WEB-2).

An owner signs in (password), opens the account page and follows the link to
/account/privacy, sees the data inventory and their devices, switches marketing on,
confirms their identity (password again), downloads the export (the ZIP is read with
zipfile: every CRC checked, telemetry.csv holds the device's rows), then deletes the
account by typing the user name; the confirmation page is shown and the console then
refuses the old session. No page may trigger a CSP violation or a SEVERE browser log.

It reuses the WebDriver plumbing of console_setup_mfa_login.py. Usage:

    python3 tests/e2e/owner_privacy_page.py --url https://127.0.0.1:PORT \
        --spki-hash BASE64 --username owner-pia --password "PASSPHRASE" \
        --telemetry-rows 20 --screenshot-dir DIR
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import shutil
import sys
import tempfile
import time
import zipfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import console_setup_mfa_login as e2e  # noqa: E402

EXPECTED_FILES = {
    "README.txt", "account.json", "consents.json", "devices.json",
    "device_events.json", "telemetry.csv", "mail.json", "notices.json", "audit.json",
}


def wait_for_download(directory: str) -> str:
    """Path of the finished .zip in `directory` (bounded wait)."""
    deadline = time.monotonic() + e2e.WAIT_SECONDS
    while time.monotonic() < deadline:
        names = os.listdir(directory)
        done = [n for n in names if n.endswith(".zip")]
        if done and not any(n.endswith(".crdownload") for n in names):
            return os.path.join(directory, done[0])
        time.sleep(0.2)
    raise e2e.TestFailure(f"no finished download in {directory}: {os.listdir(directory)}")


def run_flow(args: argparse.Namespace, downloads: str) -> None:
    base = args.url.rstrip("/")
    e2e.wd(
        "POST",
        "/goog/cdp/execute",
        {"cmd": "Browser.setDownloadBehavior",
         "params": {"behavior": "allow", "downloadPath": downloads}},
    )

    e2e.step("a. owner signs in")
    e2e.navigate(f"{base}/login")
    e2e.arrive("/login", "p01-login.png")
    e2e.fill("username", args.username)
    e2e.fill("password", args.password)
    e2e.submit("password")
    e2e.wait_for("signed in", lambda: e2e.find("#signed-in-as") is not None)

    e2e.step("b. account page links to the privacy page")
    e2e.navigate(f"{base}/account")
    e2e.arrive("/account", "p02-account.png")
    e2e.click("#owner-privacy-link")
    e2e.arrive("/account/privacy", "p03-privacy.png")
    for css in ("#hub-data", "#my-devices", "#marketing-status", "#policy-acceptance", "#reauth-form"):
        e2e.element(css)
    if e2e.find("#export-link") is not None:
        raise e2e.TestFailure("export offered before re-authentication")

    e2e.step("c. marketing switch")
    if e2e.text("#marketing-status") != "off":
        raise e2e.TestFailure("marketing is not off by default")
    e2e.click("#marketing-toggle")
    e2e.arrive("/account/privacy", "p04-marketing-on.png")
    if e2e.text("#marketing-status") != "on":
        raise e2e.TestFailure("marketing did not switch on")

    e2e.step("d. re-authentication")
    e2e.fill("password", args.password)
    e2e.click("#reauth-button")
    e2e.arrive("/account/privacy", "p05-confirmed.png")
    e2e.element("#reauth-ok")

    e2e.step("e. export downloads")
    e2e.click("#export-link")
    path = wait_for_download(downloads)
    with zipfile.ZipFile(path) as archive:
        bad = archive.testzip()
        if bad is not None:
            raise e2e.TestFailure(f"corrupt member {bad}")
        names = set(archive.namelist())
        if names != EXPECTED_FILES:
            raise e2e.TestFailure(f"archive holds {sorted(names)}")
        rows = list(csv.reader(io.StringIO(archive.read("telemetry.csv").decode())))
        if len(rows) != args.telemetry_rows + 1:
            raise e2e.TestFailure(f"telemetry.csv has {len(rows) - 1} rows")
        consents = archive.read("consents.json").decode()
        if '"granted": true' not in consents:
            raise e2e.TestFailure("the export misses the marketing consent")
    print(f"e2e: export {os.path.getsize(path)} bytes, {len(rows) - 1} telemetry rows", flush=True)

    e2e.step("f. delete the account")
    e2e.navigate(f"{base}/account/privacy")
    e2e.arrive("/account/privacy", "p06-before-delete.png")
    e2e.fill("confirm", args.username)
    e2e.click("#delete-button")
    e2e.arrive("/account/delete", "p07-deleted.png")
    page = e2e.wd("POST", "/execute/sync", {"script": "return document.body.innerText;", "args": []})
    if "Your account and your data were deleted" not in page:
        raise e2e.TestFailure("no confirmation page")

    e2e.step("g. the old session is gone")
    e2e.navigate(f"{base}/account")
    e2e.wait_for("away from /account", lambda: e2e.current_path() in ("/login", "/account"))
    if e2e.find("#signed-in-as") is not None:
        raise e2e.TestFailure("still signed in after deletion")
    e2e.screenshot("p08-signed-out.png")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--spki-hash", required=True)
    parser.add_argument("--username", required=True)
    parser.add_argument("--password", required=True)
    parser.add_argument("--telemetry-rows", type=int, required=True)
    parser.add_argument("--screenshot-dir", required=True)
    args = parser.parse_args(argv)
    e2e.screenshot_dir = os.path.abspath(args.screenshot_dir)
    os.makedirs(e2e.screenshot_dir, exist_ok=True)
    profile_dir = tempfile.mkdtemp(prefix="palisade-e2e-chromium-")
    downloads = tempfile.mkdtemp(prefix="palisade-e2e-downloads-")
    driver = None
    ok = False
    try:
        driver = e2e.start_chromedriver(os.path.join(e2e.screenshot_dir, "chromedriver.log"))
        e2e.step("starting Chromium")
        e2e.new_session(profile_dir, args.spki_hash)
        run_flow(args, downloads)
        ok = True
    except Exception as err:  # any failure: report it, then clean up below
        e2e.report_failure(err)
    finally:
        if e2e.session_id:
            try:
                e2e.http("DELETE", f"{e2e.driver_url}/session/{e2e.session_id}")
            except (OSError, e2e.WebDriverError):
                pass
            e2e.session_id = ""
        if driver is not None:
            e2e.stop_chromedriver(driver)
        shutil.rmtree(profile_dir, ignore_errors=True)
        shutil.rmtree(downloads, ignore_errors=True)
    if ok:
        print("e2e owner privacy: page -> marketing -> re-auth -> export -> delete passed")
        return 0
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
