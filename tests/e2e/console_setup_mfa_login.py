#!/usr/bin/env python3
"""End-to-end test of the Palisade web console in a real browser.

Requirements covered:

* AUTH-1 -- first-run setup: the one-time setup code creates the first
  administrator, who must then sign in with username + password.
* AUTH-8 -- TOTP multi-factor authentication: the administrator enrols a TOTP
  authenticator (RFC 6238, HMAC-SHA1, 6 digits, 30 s step), receives 10
  recovery codes, and every later login asks for a code; a code step that was
  already used is not accepted again, so the login uses the next step.
* WEB-2 -- the console is served over HTTPS with a strict Content Security
  Policy: no page of the flow triggers a CSP violation or a browser error, and
  console pages refuse unauthenticated access (401 with a sign-in link).

What this test proves: headless Debian Chromium, trusting the hub's
certificate only through an SPKI pin (no blanket --ignore-certificate-errors),
can go setup -> MFA enrolment -> recovery codes -> console -> sign out ->
password + TOTP login -> console -> device list -> a device page with its SVG
telemetry chart (given --device-id), with zero CSP violations and zero SEVERE
browser log entries (favicon 404s aside), and that /users needs a session.

It drives /usr/bin/chromedriver through the W3C WebDriver HTTP API using only
the Python standard library (no selenium). Usage:

    python3 tests/e2e/console_setup_mfa_login.py --url https://127.0.0.1:PORT \
        --spki-hash BASE64 --setup-code CODE --username admin1 \
        --email admin1@example.org --password "PASSPHRASE" --screenshot-dir DIR

Exit status 0 on success, 1 on failure (the failing step, URL, page title and
a screenshot are reported).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

CHROMEDRIVER = "/usr/bin/chromedriver"
CHROMIUM = "/usr/bin/chromium"
WAIT_SECONDS = 15.0  # bound for every element / URL wait
DRIVER_START_SECONDS = 20.0  # bound for chromedriver to report ready
HTTP_TIMEOUT_SECONDS = 60.0  # bound for a single WebDriver HTTP call
ELEMENT_KEY = "element-6066-11e4-a52e-4f735466cecf"  # W3C web element id

CSP_RECORDER = (
    "window.__csp=[];"
    "document.addEventListener('securitypolicyviolation',"
    "e=>window.__csp.push(e.violatedDirective+' '+e.blockedURI));"
)


class TestFailure(Exception):
    """An expectation of the test did not hold."""


class WebDriverError(Exception):
    """chromedriver answered with a W3C error."""

    def __init__(self, error: str, message: str):
        super().__init__(f"{error}: {message}")
        self.error = error


# --- state shared by the helpers ---------------------------------------------

driver_url = ""  # http://127.0.0.1:PORT of chromedriver
session_id = ""  # current WebDriver session
screenshot_dir = ""
current_step = "starting chromedriver"


# --- TOTP (RFC 6238) ----------------------------------------------------------


def totp(secret_b32: str, at: float, step: int = 30, digits: int = 6) -> str:
    """RFC 6238 TOTP with HMAC-SHA1 for the time `at` (Unix seconds)."""
    secret = "".join(secret_b32.split()).upper()
    key = base64.b32decode(secret + "=" * (-len(secret) % 8))
    counter = struct.pack(">Q", int(at // step))
    mac = hmac.new(key, counter, hashlib.sha1).digest()
    offset = mac[-1] & 0x0F
    value = struct.unpack(">I", mac[offset : offset + 4])[0] & 0x7FFFFFFF
    return str(value % 10**digits).zfill(digits)


# --- WebDriver plumbing -------------------------------------------------------


def http(method: str, url: str, body: dict | None = None) -> dict:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Content-Type", "application/json; charset=utf-8")
    try:
        with urllib.request.urlopen(req, timeout=HTTP_TIMEOUT_SECONDS) as resp:
            payload = resp.read()
    except urllib.error.HTTPError as err:
        payload = err.read()
        try:
            value = json.loads(payload).get("value", {})
        except ValueError:
            value = {}
        if not isinstance(value, dict):
            value = {}
        raise WebDriverError(
            value.get("error", f"HTTP {err.code}"),
            value.get("message", payload[:300].decode(errors="replace")),
        ) from None
    return json.loads(payload) if payload else {}


def wd(method: str, path: str, body: dict | None = None):
    """Call a session command, e.g. wd("POST", "/url", {"url": ...})."""
    if method == "POST" and body is None:
        body = {}
    return http(method, f"{driver_url}/session/{session_id}{path}", body).get("value")


def find(css: str) -> str | None:
    """Element id of the first match for `css`, or None."""
    try:
        found = wd("POST", "/element", {"using": "css selector", "value": css})
    except WebDriverError as err:
        if err.error == "no such element":
            return None
        raise
    return found[ELEMENT_KEY]


def find_all(css: str) -> list[str]:
    found = wd("POST", "/elements", {"using": "css selector", "value": css})
    return [element[ELEMENT_KEY] for element in found]


def wait_for(what: str, predicate, timeout: float = WAIT_SECONDS):
    """Poll `predicate` until it returns something truthy (bounded)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = predicate()
        except WebDriverError as err:
            if err.error not in ("no such element", "stale element reference"):
                raise
            result = None
        if result:
            return result
        if time.monotonic() > deadline:
            raise TestFailure(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.2)


def element(css: str) -> str:
    return wait_for(f"element {css!r}", lambda: find(css))


def text(css: str) -> str:
    return wd("GET", f"/element/{element(css)}/text")


def fill(name: str, value: str) -> None:
    """Type `value` into the form field called `name`."""
    field = element(f'[name="{name}"]')
    wd("POST", f"/element/{field}/clear")
    wd("POST", f"/element/{field}/value", {"text": value})


def click(css: str) -> None:
    wd("POST", f"/element/{element(css)}/click")


def submit(field_name: str) -> None:
    """Click the submit button of the form that holds field `field_name`."""
    field = element(f'[name="{field_name}"]')
    button = wd(
        "POST",
        "/execute/sync",
        {
            "script": "return arguments[0].form && "
            "arguments[0].form.querySelector('button[type=submit]');",
            "args": [{ELEMENT_KEY: field}],
        },
    )
    if button:
        wd("POST", f"/element/{button[ELEMENT_KEY]}/click")
    else:
        click("button[type=submit]")


def navigate(url: str) -> None:
    wd("POST", "/url", {"url": url})


def current_url() -> str:
    return wd("GET", "/url")


def current_path() -> str:
    return urllib.parse.urlsplit(current_url()).path


def screenshot(name: str) -> str:
    path = os.path.join(screenshot_dir, name)
    png = base64.b64decode(wd("GET", "/screenshot"))
    with open(path, "wb") as out:
        out.write(png)
    return path


def browser_log() -> list[dict]:
    """Browser console entries since the last call (chromedriver extension)."""
    try:
        return wd("POST", "/se/log", {"type": "browser"}) or []
    except WebDriverError as err:
        if err.error not in ("unknown command", "HTTP 404"):
            raise
        return wd("POST", "/log", {"type": "browser"}) or []


# --- per-page checks ----------------------------------------------------------


def check_page(expected_status: int | None = None) -> None:
    """No TLS interstitial, no CSP violation, no SEVERE browser log entry (except the
    resource-load error Chromium logs for an expected HTTP error status)."""
    title = wd("GET", "/title") or ""
    if "Privacy error" in title or current_url().startswith("chrome-error://"):
        raise TestFailure(
            f"browser refused the page ({title!r}); is --spki-hash the hub's key?"
        )
    wait_for(
        "document.readyState == 'complete'",
        lambda: wd("POST", "/execute/sync", {"script": "return document.readyState;", "args": []})
        == "complete",
    )
    time.sleep(0.3)  # securitypolicyviolation events are dispatched as tasks
    problems = []
    csp = wd("POST", "/execute/sync", {"script": "return window.__csp || [];", "args": []})
    problems += [f"CSP violation: {entry}" for entry in csp or []]
    for entry in browser_log():
        message = str(entry.get("message", ""))
        level = entry.get("level", "")
        if "Content Security Policy" in message:
            problems.append(f"browser log (CSP): {message}")
        elif expected_status and f"status of {expected_status}" in message:
            continue
        elif level == "SEVERE" and "favicon.ico" not in message:
            problems.append(f"browser log SEVERE: {message}")
    if problems:
        raise TestFailure("; ".join(problems))


def arrive(path: str, shot: str) -> None:
    """Wait until the browser is on `path`, check the page, screenshot it."""
    wait_for(f"URL path {path}", lambda: current_path() == path)
    check_page()
    screenshot(shot)


def step(name: str) -> None:
    global current_step
    current_step = name
    print(f"e2e: {name}", flush=True)


# --- the flow -----------------------------------------------------------------


def run_flow(args: argparse.Namespace) -> None:
    base = args.url.rstrip("/")

    step("a. first-run setup (AUTH-1)")
    navigate(f"{base}/setup")
    arrive("/setup", "01-setup.png")
    fill("code", args.setup_code)
    fill("username", args.username)
    fill("email", args.email)
    fill("password", args.password)
    submit("code")

    step("b. TOTP enrolment (AUTH-8)")
    arrive("/mfa/enrol", "02-mfa-enrol.png")
    secret = text("#totp-secret").strip()
    if not secret:
        raise TestFailure("#totp-secret is empty")
    fill("code", totp(secret, time.time()))
    submit("code")

    step("c. recovery codes, then console home")
    wait_for("#recovery-codes", lambda: find("#recovery-codes li"))
    check_page()
    screenshot("03-recovery-codes.png")
    codes = find_all("#recovery-codes li")
    if len(codes) != 10:
        raise TestFailure(f"expected 10 recovery codes, found {len(codes)}")
    click("#continue")
    wait_for("#signed-in-as", lambda: find("#signed-in-as"))
    check_page()
    screenshot("04-console-home.png")
    if args.username not in text("#signed-in-as"):
        raise TestFailure(f"#signed-in-as does not name {args.username!r}")

    step("d. sign out")
    click("#logout")
    arrive("/login", "05-signed-out.png")

    step("e. log in with password + TOTP (AUTH-8)")
    fill("username", args.username)
    fill("password", args.password)
    submit("username")
    arrive("/login/mfa", "06-login-mfa.png")
    # The enrolment consumed the current step; the hub accepts +-1 step.
    fill("code", totp(secret, time.time() + 30))
    submit("code")
    wait_for("#signed-in-as", lambda: find("#signed-in-as"))
    check_page()
    screenshot("07-signed-in-again.png")
    if args.username not in text("#signed-in-as"):
        raise TestFailure(f"#signed-in-as does not name {args.username!r}")

    step("f. device pages: fleet list and a device's SVG chart (WEB-2)")
    navigate(f"{base}/devices")
    arrive("/devices", "08a-devices.png")
    element("#claim-form")
    if args.device_id:
        element("#devices-table")
        navigate(f"{base}/devices/{args.device_id}")
        arrive(f"/devices/{args.device_id}", "08b-device.png")
        element("#device-facts")
        if not find("figure.chart svg"):
            raise TestFailure("the device page has no SVG telemetry chart")

    step("f2. vulnerability report form, status page and triage (VULN-1, VULN-3)")
    navigate(f"{base}/security")
    arrive("/security", "08c-security.png")
    element("#safe-harbour")
    element("#report-form")
    fill("title", "E2E: stored XSS in device name")
    fill("description", "<script>alert(1)</script> in a device name runs in the console.")
    fill("email", "researcher@example.net")
    submit("title")
    wait_for("#tracking-id", lambda: find("#tracking-id"))
    check_page()
    screenshot("08d-report-received.png")
    tracking = text("#tracking-id").strip()
    status_link = text("#status-link").strip()
    if not tracking.startswith("VR-") or "/security/status?token=" not in status_link:
        raise TestFailure(f"no tracking id or status link: {tracking!r} {status_link!r}")
    # The link is built from the hub's public_url; the test hub's differs from the
    # bound address, so open the same path and secret on the address under test.
    link = urllib.parse.urlsplit(status_link)
    navigate(f"{base}{link.path}?{link.query}")
    wait_for("#report-state", lambda: find("#report-state"))
    check_page()
    screenshot("08e-report-status.png")
    navigate(f"{base}/reports")
    arrive("/reports", "08f-reports.png")
    element("#reports-table")
    navigate(f"{base}/reports/{tracking}")
    arrive(f"/reports/{tracking}", "08g-report-triage.png")
    element("#report-facts")
    if "<script>" not in text("#description"):
        raise TestFailure("the report text is not shown as text")
    submit("state")  # the first allowed transition: acknowledged
    wait_for(
        "state acknowledged", lambda: find("#report-state") and text("#report-state") == "acknowledged"
    )
    check_page()
    screenshot("08h-report-acknowledged.png")

    step("f3. fixed report -> advisory -> public page (VULN-6)")
    for state in ("triaged", "fixed"):
        click(f'select[name="state"] option[value="{state}"]')
        submit("state")
        wait_for(f"state {state}", lambda: find("#report-state") and text("#report-state") == state)
    check_page()
    click("#draft-advisory a")
    wait_for("advisory form", lambda: find("#advisory-form"))
    check_page()
    fill("affected", "e2e-v1 1.0.0 2.0.0")
    fill("fixed_version", "2.0.0")
    fill("cvss_vector", "CVSS:3.1/AV:N/AC:L/PR:L/UI:R/S:C/C:L/I:L/A:N")
    fill("remediation", "Update to 2.0.0.")
    fill("details", "Device names were not escaped. **Fixed** in 2.0.0.")
    screenshot("08i-advisory-draft-form.png")
    submit("summary")
    wait_for("draft saved", lambda: find("#publish"))
    check_page()
    advisory = current_path().rsplit("/", 1)[-1]
    if not advisory.startswith("PAL-"):
        raise TestFailure(f"no advisory id in {current_path()!r}")
    click("#publish")
    wait_for("published", lambda: find("#notify"))
    check_page()
    screenshot("08j-advisory-published.png")
    navigate(f"{base}/advisories")
    arrive("/advisories", "08k-advisories.png")
    click(f'a[href="/advisories/{advisory}"]')
    wait_for("advisory page", lambda: find("#advisory-facts"))
    check_page()
    screenshot("08l-advisory.png")
    if "e2e-v1" not in text("#affected") or not find("#details strong"):
        raise TestFailure("the public advisory lacks its affected range or rendered details")
    navigate(f"{base}/reports/{tracking}")
    wait_for("state disclosed", lambda: find("#report-state") and text("#report-state") == "disclosed")

    step("g. /users needs a session (WEB-2)")
    navigate(f"{base}/users")
    arrive("/users", "08-users.png")
    element("#users-table")
    click("#logout")
    arrive("/login", "09-signed-out-again.png")
    navigate(f"{base}/users")
    wait_for("URL path /users", lambda: current_path() == "/users")
    check_page(expected_status=401)
    screenshot("10-users-refused.png")
    if find("#users-table"):
        raise TestFailure("unauthenticated /users showed #users-table")
    if "Sign-in required" not in text("#error"):
        raise TestFailure("unauthenticated /users did not say sign-in is required")
    if not find("a[href='/login']"):
        raise TestFailure("the refusal page has no link to sign in")


# --- chromedriver lifecycle ---------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_chromedriver(log_path: str) -> subprocess.Popen:
    global driver_url
    port = free_port()
    driver_url = f"http://127.0.0.1:{port}"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [CHROMEDRIVER, f"--port={port}"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # own process group: Chromium dies with it
        )

    def ready():
        if proc.poll() is not None:
            raise TestFailure(f"chromedriver exited with status {proc.returncode}")
        try:
            return http("GET", f"{driver_url}/status").get("value", {}).get("ready")
        except (OSError, WebDriverError):
            return False

    wait_for("chromedriver /status ready", ready, timeout=DRIVER_START_SECONDS)
    return proc


def stop_chromedriver(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
        except ProcessLookupError:
            pass


def new_session(profile_dir: str, spki_hash: str) -> None:
    global session_id
    capabilities = {
        "browserName": "chrome",
        "timeouts": {"pageLoad": int(WAIT_SECONDS * 1000), "script": 5000, "implicit": 0},
        "goog:chromeOptions": {
            "binary": CHROMIUM,
            "args": [
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-dev-shm-usage",
                f"--user-data-dir={profile_dir}",
                f"--ignore-certificate-errors-spki-list={spki_hash}",
            ],
        },
        "goog:loggingPrefs": {"browser": "ALL"},
    }
    reply = http("POST", f"{driver_url}/session", {"capabilities": {"alwaysMatch": capabilities}})
    session_id = reply["value"]["sessionId"]
    wd("POST", "/window/rect", {"width": 1280, "height": 1024})
    # Record CSP violations on every document before any page script runs.
    wd("POST", "/goog/cdp/execute", {"cmd": "Page.enable", "params": {}})
    wd(
        "POST",
        "/goog/cdp/execute",
        {"cmd": "Page.addScriptToEvaluateOnNewDocument", "params": {"source": CSP_RECORDER}},
    )


def report_failure(err: Exception) -> None:
    print(f"e2e console: FAILED at step '{current_step}': {err}", file=sys.stderr)
    if not session_id:
        return
    try:
        print(f"  current URL: {current_url()}", file=sys.stderr)
        print(f"  page title:  {wd('GET', '/title')!r}", file=sys.stderr)
        print(f"  screenshot:  {screenshot('99-failure.png')}", file=sys.stderr)
    except Exception as detail:  # the browser may be gone; report what we can
        print(f"  (could not inspect the browser: {detail})", file=sys.stderr)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="hub console, https://127.0.0.1:PORT")
    parser.add_argument("--spki-hash", required=True, help="base64 SHA-256 of the hub's SPKI")
    parser.add_argument("--setup-code", required=True)
    parser.add_argument("--username", required=True)
    parser.add_argument("--email", required=True)
    parser.add_argument("--password", required=True)
    parser.add_argument("--screenshot-dir", required=True)
    parser.add_argument(
        "--device-id", default="", help="an enrolled device with telemetry, for its page"
    )
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    global screenshot_dir, session_id
    args = parse_args(argv)
    screenshot_dir = os.path.abspath(args.screenshot_dir)
    os.makedirs(screenshot_dir, exist_ok=True)
    profile_dir = tempfile.mkdtemp(prefix="palisade-e2e-chromium-")
    driver = None
    ok = False
    try:
        driver = start_chromedriver(os.path.join(screenshot_dir, "chromedriver.log"))
        step("starting Chromium")
        new_session(profile_dir, args.spki_hash)
        run_flow(args)
        ok = True
    except Exception as err:  # any failure: report it, then clean up below
        report_failure(err)
    finally:
        if session_id:
            try:
                http("DELETE", f"{driver_url}/session/{session_id}")
            except (OSError, WebDriverError):
                pass
            session_id = ""
        if driver is not None:
            stop_chromedriver(driver)
        shutil.rmtree(profile_dir, ignore_errors=True)
    if ok:
        print("e2e console: setup -> MFA enrolment -> login passed")
        return 0
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
