#!/usr/bin/env bash
# Installs what tests/python/test_browser.py needs: Debian's Chromium and the
# pinned npm packages of tests/browser (playwright-core, @stomp/stompjs, mqtt).
# Idempotent: apt is only touched when /usr/bin/chromium is missing, and
# `npm ci` only runs when node_modules does not match package-lock.json.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")"

if [[ ! -x /usr/bin/chromium ]]; then
    echo "installing chromium (Debian package)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends chromium fonts-dejavu-core
fi
/usr/bin/chromium --version

if ! command -v npm >/dev/null 2>&1; then
    echo "installing nodejs and npm (Debian packages)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends nodejs npm
fi
node --version

# npm ci writes node_modules/.package-lock.json; when it equals the committed
# lock file the install is current.
if [[ -f node_modules/.package-lock.json ]] \
    && node -e '
        const fs = require("fs");
        const a = JSON.parse(fs.readFileSync("package-lock.json")).packages || {};
        const b = JSON.parse(fs.readFileSync("node_modules/.package-lock.json")).packages || {};
        for (const [k, v] of Object.entries(a)) {
            if (k === "") continue;
            if (!b[k] || b[k].version !== v.version || !fs.existsSync(k)) process.exit(1);
        }
    '; then
    echo "node_modules up to date"
else
    npm ci --no-audit --no-fund --ignore-scripts
fi
