#!/usr/bin/env bash
# Palisade: the single test command of the project.
#
#   ./scripts/test.sh           fmt check, clippy (-D warnings), full test suite
#   ./scripts/test.sh --quick   full test suite only (skips fmt and clippy)
#
# Works on a fresh Debian 12 machine (as root it installs missing system
# packages itself) and in CI (CI=true, no stdin). End-to-end tests that need
# Chromium, chromedriver or PostgreSQL fail instead of skipping, because
# PALISADE_E2E_REQUIRED=1 is exported below.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

quick=0
for arg in "$@"; do
    case "$arg" in
        --quick) quick=1 ;;
        -h | --help)
            echo "usage: ./scripts/test.sh [--quick]"
            echo "  --quick  skip cargo fmt and cargo clippy; run only cargo test"
            exit 0
            ;;
        *)
            echo "test.sh: unknown argument: $arg (usage: ./scripts/test.sh [--quick])" >&2
            exit 2
            ;;
    esac
done

section() {
    printf '\n==> %s\n' "$*"
}

# --- system packages ---------------------------------------------------------
section "Checking system packages"

# Debian package -> is it already there?
missing=()
if ! compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null; then
    missing+=(postgresql)
fi
[[ -x /usr/bin/chromium ]] || missing+=(chromium)
[[ -x /usr/bin/chromedriver ]] || missing+=(chromium-driver)
command -v mosquitto_pub >/dev/null 2>&1 || missing+=(mosquitto-clients)
# The broker lives in /usr/sbin, often not on a non-root PATH.
command -v mosquitto >/dev/null 2>&1 || [[ -x /usr/sbin/mosquitto ]] || missing+=(mosquitto)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
command -v python3 >/dev/null 2>&1 || missing+=(python3)
# `systemd-analyze security` rates the shipped service units (ACC-4).
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
# The signed security.txt test makes a key and verifies with real GnuPG (gpg, gpg-agent).
{ command -v gpg >/dev/null 2>&1 && command -v gpg-agent >/dev/null 2>&1; } || missing+=(gnupg)
# The TUF client tests build repositories with python-tuf in a virtual environment.
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || missing+=(python3-venv)

if ((${#missing[@]} > 0)); then
    install_cmd="apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ${missing[*]}"
    if [[ $(id -u) -ne 0 ]]; then
        {
            echo "test.sh: missing system packages: ${missing[*]}"
            echo "Install them as root, then re-run ./scripts/test.sh:"
            echo "    sudo sh -c '$install_cmd'"
        } >&2
        exit 1
    fi
    echo "Installing: ${missing[*]}"
    apt-get update </dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" </dev/null
else
    echo "All present (postgresql, chromium, chromium-driver, mosquitto, mosquitto-clients, openssl, python3, systemd-analyze, gnupg)."
fi

# PostgreSQL's server binaries are not on PATH on Debian; append the newest.
pg_bin=$(compgen -G '/usr/lib/postgresql/*/bin/initdb' | sort -V | tail -n 1 || true)
if [[ -n "$pg_bin" ]]; then
    export PATH="$PATH:${pg_bin%/initdb}"
else
    echo "test.sh: PostgreSQL server binaries (initdb) not found after install" >&2
    exit 1
fi

# --- Rust toolchain ----------------------------------------------------------
if ! command -v cargo >/dev/null 2>&1 && [[ -x "${CARGO_HOME:-$HOME/.cargo}/bin/cargo" ]]; then
    export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
fi
if ! command -v cargo >/dev/null 2>&1; then
    echo "test.sh: cargo not found. Install Rust (https://rustup.rs), then re-run ./scripts/test.sh" >&2
    exit 1
fi
if ((quick == 0)); then
    for component in rustfmt clippy; do
        sub=${component/rustfmt/fmt}
        if ! cargo "$sub" --version >/dev/null 2>&1; then
            if command -v rustup >/dev/null 2>&1; then
                section "Installing Rust component $component"
                rustup component add "$component" </dev/null
            else
                echo "test.sh: 'cargo $sub' is not available and rustup is not installed" >&2
                exit 1
            fi
        fi
    done
fi

# --- python-tuf (reference TUF implementation for the agent's TUF client tests) and
# jsonschema (validates our OSV and CycloneDX output against the published schemas) --
tuf_venv="${CARGO_TARGET_DIR:-target}/tuf-venv"
if ! "$tuf_venv/bin/python" -c 'import tuf, cryptography, jsonschema, sys; sys.exit(tuf.__version__ != "7.0.0")' >/dev/null 2>&1; then
    section "Installing python-tuf 7.0.0 and jsonschema into $tuf_venv"
    python3 -m venv "$tuf_venv"
    "$tuf_venv/bin/pip" install --quiet --disable-pip-version-check 'tuf==7.0.0' cryptography 'jsonschema==4.23.0' </dev/null
fi
PALISADE_TUF_PYTHON="$(cd "$tuf_venv" && pwd)/bin/python"
export PALISADE_TUF_PYTHON

export PALISADE_E2E_REQUIRED=1
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-auto}"

# --- checks ------------------------------------------------------------------
if ((quick == 0)); then
    section "cargo fmt --all -- --check"
    cargo fmt --all -- --check

    section "cargo clippy --workspace --all-targets --locked -- -D warnings"
    cargo clippy --workspace --all-targets --locked -- -D warnings
else
    section "--quick: skipping cargo fmt and cargo clippy"
fi

section "cargo test --workspace --locked --no-fail-fast (PALISADE_E2E_REQUIRED=1)"
# --no-fail-fast: one run reports every failing test binary, not just the first.
cargo test --workspace --locked --no-fail-fast

section "All checks passed"
